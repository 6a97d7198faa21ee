-- keycast-gba BSF store, PostgreSQL. K, OPc and Ks are stored only AES-key-wrapped (RFC 3394)
-- under keys derived from the service's storage key; keycast_meta holds the storage-key check value.
CREATE TABLE keycast_meta (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

-- HSS role: one row per subscriber.
CREATE TABLE subscribers (
    impi        TEXT PRIMARY KEY,
    imsi        TEXT NOT NULL,
    wrapped_k   BYTEA NOT NULL CHECK (octet_length(wrapped_k) = 24),
    wrapped_opc BYTEA NOT NULL CHECK (octet_length(wrapped_opc) = 24),
    sqn         BIGINT NOT NULL CHECK (sqn >= 0),
    amf         BYTEA NOT NULL CHECK (octet_length(amf) = 2),
    gba_type    TEXT NOT NULL CHECK (gba_type IN ('gba-u', 'gba-me'))
);

-- Bootstrapping sessions: at most one per IMPI (a later run replaces it).
CREATE TABLE sessions (
    btid            TEXT PRIMARY KEY,
    impi            TEXT NOT NULL UNIQUE,
    wrapped_ks      BYTEA NOT NULL CHECK (octet_length(wrapped_ks) = 40),
    rand            BYTEA NOT NULL CHECK (octet_length(rand) = 16),
    gba_type        TEXT NOT NULL CHECK (gba_type IN ('gba-u', 'gba-me')),
    bootstrapped_at BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- Ub challenges sent and not yet answered, keyed by the nonce's tag (single use).
CREATE TABLE pending (
    nonce_key  BYTEA PRIMARY KEY CHECK (octet_length(nonce_key) = 16),
    impi       TEXT NOT NULL,
    rand       BYTEA NOT NULL CHECK (octet_length(rand) = 16),
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX pending_expires_at ON pending (expires_at);
