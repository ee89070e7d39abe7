-- hookrelay schema, version 4: unclaimed pending deliveries have an index
-- of their own, so claiming due work reads only rows nobody holds, however
-- many this and other live replicas hold (the backlog of a slow
-- subscriber). A dead replica's claims are given back (owner set to NULL)
-- before anyone claims them.
CREATE INDEX deliveries_free ON {schema}.deliveries (route, subscriber, due_ms)
    WHERE state = 0 AND owner IS NULL;
