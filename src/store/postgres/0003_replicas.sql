-- Replicas' heartbeats: a replica's claims (deliveries' and expected tasks'
-- `owner`) stay valid while its heartbeat is fresh, so renewing them costs
-- one row per replica, not one per claimed delivery. A claim is taken over
-- only once both its own `lease_until` and its owner's heartbeat passed.
CREATE TABLE {schema}.replicas (
    owner       TEXT PRIMARY KEY,
    alive_until BIGINT NOT NULL,   -- database clock, unix ms
    started_ms  BIGINT NOT NULL
);
