-- Token buckets for rate limits (pairing polls and guesses, sign-in attempts) kept in the
-- database, so every hub sharing it applies one limit per client.
CREATE TABLE rate_buckets (
    key    TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    at     INTEGER NOT NULL
) WITHOUT ROWID;
