-- hookrelay schema, version 1. `{schema}` is replaced by the configured
-- schema (a plain identifier, validated), so every table is qualified.

-- One row per accepted event. The row outlives the event's details: once
-- its deliveries ended and `store.retention` passed, the body, headers and
-- deliveries go (`pruned`), and the row stays as the idempotency key until
-- `idempotency.ttl`.
CREATE TABLE {schema}.events (
    id           BYTEA PRIMARY KEY,         -- the 128-bit event id
    seq          BIGSERIAL NOT NULL,        -- receipt order: listing cursor
    route        TEXT NOT NULL,
    received_ms  BIGINT NOT NULL,
    source_id    TEXT,                      -- the sender's own id (muapi task id)
    status       TEXT,
    origin       SMALLINT NOT NULL,         -- 0 callback, 1 reconciled
    headers      JSONB NOT NULL DEFAULT '[]',
    body         BYTEA,                     -- NULL once pruned
    body_len     INTEGER NOT NULL,
    open_count   INTEGER NOT NULL,          -- deliveries pending or dead
    done_ms      BIGINT,                    -- when open_count reached 0
    pruned       BOOLEAN NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX events_seq ON {schema}.events (seq);
CREATE INDEX events_route_seq ON {schema}.events (route, seq);
CREATE INDEX events_source ON {schema}.events (source_id) WHERE source_id IS NOT NULL;
CREATE INDEX events_done ON {schema}.events (done_ms) WHERE open_count = 0 AND NOT pruned;
CREATE INDEX events_expiry ON {schema}.events (received_ms) WHERE pruned;

-- One row per (event, subscriber). `owner` and `lease_until` (database
-- clock, unix ms) say which replica holds the delivery: a claim is valid
-- until its lease ends, and renewed while the replica lives.
CREATE TABLE {schema}.deliveries (
    event_id          BYTEA NOT NULL REFERENCES {schema}.events (id) ON DELETE CASCADE,
    subscriber        TEXT NOT NULL,
    route             TEXT NOT NULL,
    state             SMALLINT NOT NULL,    -- 0 pending, 1 delivered, 2 dead, 3 deleted
    attempts          INTEGER NOT NULL DEFAULT 0,
    due_ms            BIGINT NOT NULL,
    schedule_start_ms BIGINT NOT NULL,
    updated_ms        BIGINT NOT NULL,
    dead_reason       TEXT,
    history           JSONB NOT NULL DEFAULT '[]',
    owner             TEXT,
    lease_until       BIGINT,
    PRIMARY KEY (event_id, subscriber)
);
CREATE INDEX deliveries_due ON {schema}.deliveries (route, subscriber, due_ms) WHERE state = 0;
CREATE INDEX deliveries_dead ON {schema}.deliveries (route, subscriber, updated_ms) WHERE state = 2;
CREATE INDEX deliveries_dead_age ON {schema}.deliveries (updated_ms) WHERE state = 2;
CREATE INDEX deliveries_owner ON {schema}.deliveries (owner) WHERE owner IS NOT NULL;
