-- Key campaigns (issue 5): the pushes of a new SEK/PEK, or of a key's changed window, to every
-- registered terminal entitled to it. A campaign is made in the transaction that makes the key
-- (or changes its window), and walks the terminals in IMPI order; `resume_after` is the last IMPI whose
-- deliveries are stored, advanced in the transaction that stores them, so a campaign cut by a
-- crash resumes after it and never queues a terminal twice.
--   kind: deliver (a new key) | update (the key's end moved from old_until to the key's current end);
--   spread_secs: the window the deliveries' due times are spread over, from created_at;
--   terminals: terminals looked at so far; queued: deliveries stored so far;
--   finished_at: NULL while the campaign runs.
CREATE TABLE campaigns (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_group   BIGINT NOT NULL,
    key_from    BIGINT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('deliver', 'update')),
    old_until   BIGINT,
    created_at  BIGINT NOT NULL,
    spread_secs BIGINT NOT NULL CHECK (spread_secs >= 0),
    resume_after TEXT,
    terminals   BIGINT NOT NULL DEFAULT 0,
    queued      BIGINT NOT NULL DEFAULT 0,
    finished_at BIGINT,
    CHECK ((kind = 'update') = (old_until IS NOT NULL)),
    FOREIGN KEY (key_group, key_from) REFERENCES keys (key_group, window_from)
);
CREATE INDEX campaigns_open ON campaigns (id) WHERE finished_at IS NULL;
