-- The live core's app store (seed 001's buckets `metrics` and `alerts`): one row per record.
-- `seq` orders records by insertion (assigned by the hub); `version` is the record's
-- `_version` for optimistic concurrency; `created_at` (hub clock, Unix ms) drives retention.

CREATE TABLE app_records (
    bucket     TEXT NOT NULL,
    id         TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    data       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (bucket, id)
);
CREATE INDEX app_records_seq ON app_records(bucket, seq);
CREATE INDEX app_records_created ON app_records(created_at);
