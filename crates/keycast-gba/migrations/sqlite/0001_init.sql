-- keycast-gba BSF store, SQLite. K, OPc and Ks are stored only AES-key-wrapped (RFC 3394) under
-- keys derived from the service's storage key; keycast_meta holds the storage-key check value.
CREATE TABLE keycast_meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) STRICT;

-- HSS role: one row per subscriber.
CREATE TABLE subscribers (
    impi        TEXT PRIMARY KEY NOT NULL,
    imsi        TEXT NOT NULL,
    wrapped_k   BLOB NOT NULL CHECK (length(wrapped_k) = 24),
    wrapped_opc BLOB NOT NULL CHECK (length(wrapped_opc) = 24),
    sqn         INTEGER NOT NULL CHECK (sqn >= 0),
    amf         BLOB NOT NULL CHECK (length(amf) = 2),
    gba_type    TEXT NOT NULL CHECK (gba_type IN ('gba-u', 'gba-me'))
) STRICT;

-- Bootstrapping sessions: at most one per IMPI (a later run replaces it).
CREATE TABLE sessions (
    btid            TEXT PRIMARY KEY NOT NULL,
    impi            TEXT NOT NULL UNIQUE,
    wrapped_ks      BLOB NOT NULL CHECK (length(wrapped_ks) = 40),
    rand            BLOB NOT NULL CHECK (length(rand) = 16),
    gba_type        TEXT NOT NULL CHECK (gba_type IN ('gba-u', 'gba-me')),
    bootstrapped_at INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- Ub challenges sent and not yet answered, keyed by the nonce's tag (single use).
CREATE TABLE pending (
    nonce_key  BLOB PRIMARY KEY NOT NULL CHECK (length(nonce_key) = 16),
    impi       TEXT NOT NULL,
    rand       BLOB NOT NULL CHECK (length(rand) = 16),
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX pending_expires_at ON pending (expires_at);
