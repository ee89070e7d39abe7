-- Expected tasks (muapi reconciliation): tasks whose final result hookrelay
-- waits for, polled from the provider's result API when the callback is
-- late. `owner`/`lease_until` make one replica poll a task at a time.
CREATE TABLE {schema}.expected_tasks (
    route        TEXT NOT NULL,
    id           TEXT NOT NULL,
    endpoint     TEXT NOT NULL DEFAULT '',
    submitted_ms BIGINT NOT NULL,
    state        SMALLINT NOT NULL,   -- 0 waiting, 1 polling, 2 done, 3 expired
    settled_by   SMALLINT,            -- origin of the final result, when done
    status       TEXT,
    polls        INTEGER NOT NULL DEFAULT 0,
    next_poll_ms BIGINT NOT NULL,
    updated_ms   BIGINT NOT NULL,
    last_result  TEXT,
    owner        TEXT,
    lease_until  BIGINT,
    PRIMARY KEY (route, id)
);
CREATE INDEX expected_polls ON {schema}.expected_tasks (next_poll_ms) WHERE state IN (0, 1);
CREATE INDEX expected_time ON {schema}.expected_tasks (submitted_ms);
CREATE INDEX expected_closed ON {schema}.expected_tasks (updated_ms) WHERE state IN (2, 3);
