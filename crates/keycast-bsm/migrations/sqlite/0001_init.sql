-- keycast-bsm store, SQLite. SEK/PEKs are stored only AES-key-wrapped (RFC 3394) under keys
-- derived from the service's storage key; keycast_meta holds the storage-key check value.
CREATE TABLE keycast_meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) STRICT;

CREATE TABLE services (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    key_domain BLOB NOT NULL CHECK (length(key_domain) = 3),
    key_group  INTEGER NOT NULL CHECK (key_group BETWEEN 1 AND 65535),
    streaming  INTEGER NOT NULL CHECK (streaming IN (0, 1))
) STRICT;

CREATE TABLE programs (
    id           TEXT PRIMARY KEY NOT NULL,
    service      TEXT NOT NULL REFERENCES services (id),
    key_group    INTEGER NOT NULL CHECK (key_group BETWEEN 1 AND 65535),
    window_from  INTEGER NOT NULL,
    window_until INTEGER NOT NULL CHECK (window_until > window_from)
) STRICT;

CREATE TABLE purchase_items (
    global_id TEXT PRIMARY KEY NOT NULL,
    name      TEXT NOT NULL
) STRICT;

CREATE TABLE purchase_item_services (
    item     TEXT NOT NULL REFERENCES purchase_items (global_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    service  TEXT NOT NULL REFERENCES services (id),
    PRIMARY KEY (item, position)
) STRICT;

-- kind: subscription | ppv | ppt | tokens; program for ppv, tokens for tokens.
CREATE TABLE purchase_data (
    id       TEXT PRIMARY KEY NOT NULL,
    item     TEXT NOT NULL REFERENCES purchase_items (global_id),
    amount   TEXT NOT NULL,
    currency TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('subscription', 'ppv', 'ppt', 'tokens')),
    program  TEXT REFERENCES programs (id),
    tokens   INTEGER CHECK (tokens >= 0),
    period   INTEGER NOT NULL CHECK (period >= 0)
) STRICT;

-- SEK/PEK history: every key ever made, one window after the other per group.
CREATE TABLE keys (
    key_group    INTEGER NOT NULL CHECK (key_group BETWEEN 1 AND 65535),
    key_number   INTEGER NOT NULL CHECK (key_number BETWEEN 1 AND 65535),
    window_from  INTEGER NOT NULL,
    window_until INTEGER NOT NULL CHECK (window_until > window_from),
    key_domain   BLOB NOT NULL CHECK (length(key_domain) = 3),
    wrapped_key  BLOB NOT NULL CHECK (length(wrapped_key) = 24),
    rand         BLOB NOT NULL CHECK (length(rand) = 16),
    csb_id       INTEGER NOT NULL CHECK (csb_id BETWEEN 0 AND 4294967295),
    revoked_at   INTEGER,
    PRIMARY KEY (key_group, window_from)
) STRICT;
CREATE INDEX keys_by_number ON keys (key_group, key_number);

CREATE TABLE terminals (
    impi             TEXT PRIMARY KEY NOT NULL,
    btid             TEXT,
    last_seen        INTEGER NOT NULL,
    reg_address      TEXT,
    reg_interface    TEXT CHECK (reg_interface IN ('mbms', 'oma-bcast')),
    reg_at           INTEGER,
    -- The BCAST_Client_ID of its last Registration that carried one (seed 6.9.2), 1..256 octets.
    bcast_client_id  BLOB CHECK (length(bcast_client_id) BETWEEN 1 AND 256),
    CHECK ((reg_address IS NULL) = (reg_interface IS NULL) AND (reg_address IS NULL) = (reg_at IS NULL))
) STRICT;

CREATE TABLE purchases (
    terminal      TEXT NOT NULL REFERENCES terminals (impi) ON DELETE CASCADE,
    item          TEXT NOT NULL REFERENCES purchase_items (global_id),
    purchase_data TEXT NOT NULL REFERENCES purchase_data (id),
    kind          TEXT NOT NULL CHECK (kind IN ('subscription', 'ppv', 'ppt', 'tokens')),
    program       TEXT REFERENCES programs (id),
    tokens        INTEGER CHECK (tokens >= 0),
    window_from   INTEGER NOT NULL,
    window_until  INTEGER NOT NULL CHECK (window_until > window_from),
    PRIMARY KEY (terminal, item)
) STRICT;

-- LTKM TS per terminal and SMK (named by its B-TID): the last timestamp reserved.
CREATE TABLE ltkm_counters (
    terminal TEXT PRIMARY KEY NOT NULL REFERENCES terminals (impi) ON DELETE CASCADE,
    smk      TEXT NOT NULL,
    ts       INTEGER NOT NULL CHECK (ts BETWEEN 0 AND 4294967295)
) STRICT;

-- LTKM deliveries (issue 5): one row per (terminal, Key Domain ID, SEK/PEK ID, version), holding
-- what delivery::DeliveryRow holds. Times (state_at, due, claim_until, sent at) are microseconds
-- since the Unix epoch, like delivery::Time. The terminal is named by IMPI without a foreign key:
-- a rollover enqueues rows in bulk, and the terminal row is needed (and checked) only when an LTKM
-- is sent, through ltkm_counters.
--   kind: deliver | update (both with a window) | invalidate (none);
--   window_form: ts (TS low/high, 32 bits) | tek (SEQl/SEQu, 16 bits);
--   state: pending | sent | pull-solicited | acknowledged | failed; attempt = pushes so far;
--   state_at = when the state was entered (NULL for pending); fail_reason for failed only;
--   due = when a worker acts next, NULL exactly when the state is final;
--   claimed_by/claim_until: the lease of the worker handling the row (both NULL when free).
--   ext/srtp: how the LTKM is shaped beyond its kind (store::LtkmForm), so that a worker builds, and
--   verification intake rebuilds, the same bytes: ext = the OMA BCAST LTKM extension as carried
--   (subtype 1 and body, profile P-4), NULL for none; srtp = SRTP-ID map entry and SP payload
--   (store/sql/deliveries.rs has the layout), NULL for a download key.
CREATE TABLE deliveries (
    id             INTEGER PRIMARY KEY NOT NULL,
    terminal       TEXT NOT NULL,
    key_domain     BLOB NOT NULL CHECK (length(key_domain) = 3),
    key_group      INTEGER NOT NULL CHECK (key_group BETWEEN 0 AND 65535),
    key_number     INTEGER NOT NULL CHECK (key_number BETWEEN 0 AND 65535),
    version        INTEGER NOT NULL CHECK (version BETWEEN 0 AND 4294967295),
    kind           TEXT NOT NULL CHECK (kind IN ('deliver', 'update', 'invalidate')),
    window_form    TEXT CHECK (window_form IN ('ts', 'tek')),
    window_low     INTEGER CHECK (window_low BETWEEN 0 AND 4294967295),
    window_high    INTEGER CHECK (window_high BETWEEN 0 AND 4294967295),
    push_ip        TEXT NOT NULL,
    push_interface TEXT NOT NULL CHECK (push_interface IN ('mbms', 'oma-bcast')),
    state          TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'pull-solicited', 'acknowledged', 'failed')),
    attempt        INTEGER NOT NULL CHECK (attempt BETWEEN 0 AND 4294967295),
    state_at       INTEGER,
    fail_reason    TEXT CHECK (fail_reason IN ('no-ack', 'abandoned', 'stopped', 'superseded')),
    due            INTEGER,
    claimed_by     TEXT,
    claim_until    INTEGER,
    ext            BLOB,
    srtp           BLOB,
    CHECK ((kind = 'invalidate') = (window_form IS NULL)),
    CHECK ((window_form IS NULL) = (window_low IS NULL) AND (window_form IS NULL) = (window_high IS NULL)),
    CHECK ((state IN ('acknowledged', 'failed')) = (due IS NULL)),
    CHECK ((state = 'failed') = (fail_reason IS NOT NULL)),
    CHECK ((claimed_by IS NULL) = (claim_until IS NULL)),
    UNIQUE (terminal, key_domain, key_group, key_number, version)
) STRICT;
-- The claim query walks due rows in due order; final rows (due NULL) are not indexed.
CREATE INDEX deliveries_due ON deliveries (due) WHERE due IS NOT NULL;

-- The LTKMs sent for a delivery (delivery::SentLtkm), oldest first; (btid, ts) names one LTKM
-- (what a verification message answers), so it is unique.
CREATE TABLE delivery_sends (
    delivery     INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL CHECK (attempt BETWEEN 1 AND 4294967295),
    btid         TEXT NOT NULL,
    ts           INTEGER NOT NULL CHECK (ts BETWEEN 0 AND 4294967295),
    sent_at      INTEGER NOT NULL,
    acknowledged INTEGER NOT NULL CHECK (acknowledged IN (0, 1)),
    PRIMARY KEY (delivery, attempt),
    UNIQUE (btid, ts)
) STRICT;
