-- Failover: a lease row records the stable node of its holder, so that a
-- restarted process of the same node (a new incarnation, a new holder)
-- takes its leases over at once instead of waiting out the TTL.
ALTER TABLE leases ADD COLUMN node {{KEY}} NOT NULL DEFAULT '';
-- A job run stands for this many scheduled fires: more than one when the
-- misfire policy collapsed fires missed beyond the threshold into it, or
-- recorded them as skipped.
ALTER TABLE job_runs ADD COLUMN covers INTEGER NOT NULL DEFAULT 1;
