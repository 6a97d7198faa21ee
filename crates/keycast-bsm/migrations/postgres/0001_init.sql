-- keycast-bsm store, PostgreSQL. SEK/PEKs are stored only AES-key-wrapped (RFC 3394) under keys
-- derived from the service's storage key; keycast_meta holds the storage-key check value.
CREATE TABLE keycast_meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value BYTEA NOT NULL
);

CREATE TABLE services (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    key_domain BYTEA NOT NULL CHECK (octet_length(key_domain) = 3),
    key_group  BIGINT NOT NULL CHECK (key_group BETWEEN 1 AND 65535),
    streaming  BIGINT NOT NULL CHECK (streaming IN (0, 1))
);

CREATE TABLE programs (
    id           TEXT PRIMARY KEY NOT NULL,
    service      TEXT NOT NULL REFERENCES services (id),
    key_group    BIGINT NOT NULL CHECK (key_group BETWEEN 1 AND 65535),
    window_from  BIGINT NOT NULL,
    window_until BIGINT NOT NULL CHECK (window_until > window_from)
);

CREATE TABLE purchase_items (
    global_id TEXT PRIMARY KEY NOT NULL,
    name      TEXT NOT NULL
);

CREATE TABLE purchase_item_services (
    item     TEXT NOT NULL REFERENCES purchase_items (global_id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    service  TEXT NOT NULL REFERENCES services (id),
    PRIMARY KEY (item, position)
);

-- kind: subscription | ppv | ppt | tokens; program for ppv, tokens for tokens.
CREATE TABLE purchase_data (
    id       TEXT PRIMARY KEY NOT NULL,
    item     TEXT NOT NULL REFERENCES purchase_items (global_id),
    amount   TEXT NOT NULL,
    currency TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('subscription', 'ppv', 'ppt', 'tokens')),
    program  TEXT REFERENCES programs (id),
    tokens   BIGINT CHECK (tokens >= 0),
    period   BIGINT NOT NULL CHECK (period >= 0)
);

-- SEK/PEK history: every key ever made, one window after the other per group.
CREATE TABLE keys (
    key_group    BIGINT NOT NULL CHECK (key_group BETWEEN 1 AND 65535),
    key_number   BIGINT NOT NULL CHECK (key_number BETWEEN 1 AND 65535),
    window_from  BIGINT NOT NULL,
    window_until BIGINT NOT NULL CHECK (window_until > window_from),
    key_domain   BYTEA NOT NULL CHECK (octet_length(key_domain) = 3),
    wrapped_key  BYTEA NOT NULL CHECK (octet_length(wrapped_key) = 24),
    rand         BYTEA NOT NULL CHECK (octet_length(rand) = 16),
    csb_id       BIGINT NOT NULL CHECK (csb_id BETWEEN 0 AND 4294967295),
    revoked_at   BIGINT,
    PRIMARY KEY (key_group, window_from)
);
CREATE INDEX keys_by_number ON keys (key_group, key_number);

CREATE TABLE terminals (
    impi             TEXT PRIMARY KEY NOT NULL,
    btid             TEXT,
    last_seen        BIGINT NOT NULL,
    reg_address      TEXT,
    reg_interface    TEXT CHECK (reg_interface IN ('mbms', 'oma-bcast')),
    reg_at           BIGINT,
    CHECK ((reg_address IS NULL) = (reg_interface IS NULL) AND (reg_address IS NULL) = (reg_at IS NULL))
);

CREATE TABLE purchases (
    terminal      TEXT NOT NULL REFERENCES terminals (impi) ON DELETE CASCADE,
    item          TEXT NOT NULL REFERENCES purchase_items (global_id),
    purchase_data TEXT NOT NULL REFERENCES purchase_data (id),
    kind          TEXT NOT NULL CHECK (kind IN ('subscription', 'ppv', 'ppt', 'tokens')),
    program       TEXT REFERENCES programs (id),
    tokens        BIGINT CHECK (tokens >= 0),
    window_from   BIGINT NOT NULL,
    window_until  BIGINT NOT NULL CHECK (window_until > window_from),
    PRIMARY KEY (terminal, item)
);

-- LTKM TS per terminal and SMK (named by its B-TID): the last timestamp reserved.
CREATE TABLE ltkm_counters (
    terminal TEXT PRIMARY KEY NOT NULL REFERENCES terminals (impi) ON DELETE CASCADE,
    smk      TEXT NOT NULL,
    ts       BIGINT NOT NULL CHECK (ts BETWEEN 0 AND 4294967295)
);
