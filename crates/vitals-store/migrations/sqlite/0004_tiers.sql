-- Storage engine (issue 3): samples stored as series instead of JSON, column blocks for
-- older raw samples, and 1-minute and 1-hour rollups beside them.
--
-- `shapes`: the series names a sample carries, newline-separated, stored once (a device's
--   samples share one shape almost always).
-- `samples` (hot rows): one per (device, ts), its shape and its values as little-endian f64s
--   in the shape's order. Version 1's JSON rows move to `samples_v1`, which the store converts
--   into hot rows when it opens the database, in chunks, then drops.
CREATE TABLE shapes (
    id    INTEGER PRIMARY KEY,
    names TEXT NOT NULL UNIQUE
);

DROP INDEX samples_ts;
ALTER TABLE samples RENAME TO samples_v1;
CREATE TABLE samples (
    device_seq INTEGER NOT NULL,
    ts         INTEGER NOT NULL,
    shape      INTEGER NOT NULL,
    vals       BLOB NOT NULL,
    PRIMARY KEY (device_seq, ts)
) WITHOUT ROWID;

-- `rollups`: the hour tier, one row per (tier, device, bucket); `tier` is the bucket width in
--   ms (3600000); `data` is every series' rollup, encoded by `vitals_store::rollup::encode`.
-- `rollup_marks`: per device, everything before `minute_mark` is in the minute tier and
--   everything before `hour_mark` in the hour tier (both bucket-aligned).
-- `rollup_late`: raw samples that arrived after their minute was rolled up (an agent's spool
--   replayed after an outage, an import); the rollup job merges them into both tiers and
--   deletes the row in one transaction, so each is counted exactly once.

CREATE TABLE rollups (
    tier       INTEGER NOT NULL,
    device_seq INTEGER NOT NULL,
    bucket     INTEGER NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (tier, device_seq, bucket)
) WITHOUT ROWID;

CREATE TABLE rollup_marks (
    device_seq  INTEGER PRIMARY KEY,
    minute_mark INTEGER,
    hour_mark   INTEGER,
    -- Raw samples below this may be in `sample_blocks` (inserts check them for replays).
    block_mark  INTEGER,
    -- Raw samples below this may have been dropped by retention (NULL: none ever were).
    raw_floor   INTEGER
);

CREATE TABLE rollup_late (
    device_seq INTEGER NOT NULL,
    ts         INTEGER NOT NULL,
    PRIMARY KEY (device_seq, ts)
) WITHOUT ROWID;

-- Compact raw storage: older raw samples of one device and one 10-minute window, as one
-- column block per series (`vitals_store::block`). Hot rows in `samples` and blocks never hold the
-- same (device, ts); reads merge both.
CREATE TABLE sample_blocks (
    device_seq INTEGER NOT NULL,
    start_ts   INTEGER NOT NULL,
    first_ts   INTEGER NOT NULL,
    last_ts    INTEGER NOT NULL,
    count      INTEGER NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (device_seq, start_ts)
) WITHOUT ROWID;

-- The minute tier: minute rollups as compressed blocks (`vitals_store::rollup::encode_block`)
-- of one device and hour. Each pass of the rollup job appends a segment with the minutes it
-- rolled up; when the hour tier rolls the hour up, its segments become one block. `minutes`
-- counts the minute buckets a block holds.
CREATE TABLE rollup_blocks (
    device_seq   INTEGER NOT NULL,
    hour         INTEGER NOT NULL,
    first_bucket INTEGER NOT NULL,
    minutes      INTEGER NOT NULL,
    data         BLOB NOT NULL,
    PRIMARY KEY (device_seq, hour, first_bucket)
) WITHOUT ROWID;
