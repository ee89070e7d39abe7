-- hookrelay schema, version 5: an attempt result no longer rewrites its
-- event's row. Whether an event is still open (a delivery pending or dead)
-- is read from its deliveries; when a delivery ends (delivered, or a dead
-- letter deleted), a small row here says so, and the pruner reads these in
-- time order: each is looked at once, so a long backlog of open events is
-- never walked again and again. Before, every result updated
-- `events.open_count`/`done_ms` (a row carrying the body, five indexes),
-- and two writers recording deliveries of one event waited on its lock.
--
-- `open_count` and `done_ms` are still filled when an event is stored, and
-- `events_done` stays: events with no deliveries, and events that replicas
-- of the previous version closed during a rolling deploy, are pruned
-- through it as before.
CREATE TABLE {schema}.closings (
    event_id  BYTEA NOT NULL,
    closed_ms BIGINT NOT NULL   -- when a delivery ended; 0: prune at once
);
CREATE INDEX closings_time ON {schema}.closings (closed_ms);
