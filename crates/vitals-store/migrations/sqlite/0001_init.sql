-- Vitals SQLite schema, version 1. All times are Unix milliseconds.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE sessions (
    token_hash BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    token_hash   BLOB NOT NULL UNIQUE,
    created_by   TEXT,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);

-- `seq` is the compact internal key used by sample tables; `id` is the public UUID.
CREATE TABLE devices (
    seq           INTEGER PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    host_id       TEXT NOT NULL,
    token_hash    BLOB UNIQUE,
    simulated     INTEGER NOT NULL DEFAULT 0,
    agent_version TEXT,
    created_at    INTEGER NOT NULL,
    last_seen     INTEGER
);

CREATE TABLE device_codes (
    code          TEXT PRIMARY KEY,
    host_id       TEXT NOT NULL,
    hostname      TEXT,
    agent_version TEXT,
    source_ip     TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    device_id     TEXT,
    approved_at   INTEGER
);

-- Raw samples: one row per (device, ts); replays are absorbed by the primary key.
CREATE TABLE samples (
    device_seq INTEGER NOT NULL,
    ts         INTEGER NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (device_seq, ts)
) WITHOUT ROWID;
CREATE INDEX samples_ts ON samples(ts);

CREATE TABLE device_state (
    device_seq INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (device_seq, kind)
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
