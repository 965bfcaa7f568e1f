-- `last_seen` moves out of `devices` into a narrow table of its own. Every group commit of
-- agent samples updates it for each device in the commit: in `devices`, whose rows carry
-- names, ids and token hashes, that dirtied most of the table's pages at every commit; here a
-- thousand devices' rows fit in four pages.
CREATE TABLE device_seen (
    device_seq INTEGER PRIMARY KEY,
    last_seen  INTEGER NOT NULL
);
INSERT INTO device_seen (device_seq, last_seen)
    SELECT seq, last_seen FROM devices WHERE last_seen IS NOT NULL;
ALTER TABLE devices DROP COLUMN last_seen;
