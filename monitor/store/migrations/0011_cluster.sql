-- Cluster mode: who may commit for each partition of the device stream. A process holds
-- a partition by a session advisory lock (released by PostgreSQL when its connection
-- ends, SIGKILL included) and, once it holds it, bumps the partition's epoch here. Every
-- ingest transaction checks, under FOR SHARE, that the epochs it was given are still
-- the current ones: a process that lost its claim while paused commits nothing, and a
-- new owner's bump waits for an old owner's transaction that is still running.
CREATE TABLE partition_owners (
    partition  integer PRIMARY KEY CHECK (partition >= 0),
    epoch      bigint NOT NULL DEFAULT 0,
    instance   text,
    since      timestamptz
);
