-- Pending Ub challenges are keyed by their RAND (unique, 128 random bits) instead of the nonce's
-- tag, so that one statement can advance SQN and record the challenge before the nonce exists.
-- Challenges pending at the upgrade are dropped: their answers get a fresh challenge.
DROP TABLE pending;
CREATE TABLE pending (
    rand       BYTEA PRIMARY KEY CHECK (octet_length(rand) = 16),
    impi       TEXT NOT NULL,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX pending_expires_at ON pending (expires_at);
