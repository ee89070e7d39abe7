-- hookrelay schema, version 5: whether an event is still open (a delivery
-- pending or dead) and since when it is done are read from its deliveries
-- instead of being counted in its row. An attempt result then writes only
-- its delivery: the event row (a few hundred bytes with its body, five
-- indexes) is no longer rewritten, and two writers recording deliveries of
-- one event no longer wait on its row lock.
--
-- `events.open_count` and `events.done_ms` are still filled when an event
-- is stored, but no longer kept up to date, so that replicas of the
-- previous version, during a rolling deploy, read counts that are never
-- too low (they prune later, never early). The pruner of this version
-- walks events not yet pruned in receipt order through this index.
DROP INDEX IF EXISTS {schema}.events_done;
CREATE INDEX events_live ON {schema}.events (received_ms) WHERE NOT pruned;
