-- Pending Ub challenges are keyed by their RAND (unique, 128 random bits) instead of the nonce's
-- tag, so that one statement can advance SQN and record the challenge before the nonce exists.
-- Challenges pending at the upgrade are dropped: their answers get a fresh challenge.
DROP TABLE pending;
CREATE TABLE pending (
    rand       BLOB PRIMARY KEY NOT NULL CHECK (length(rand) = 16),
    impi       TEXT NOT NULL,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX pending_expires_at ON pending (expires_at);
