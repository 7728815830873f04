-- Distributed transactions (the txn component): one row per global
-- transaction, one per branch, and one per call of a branch operation (the
-- timeline). A server drives a transaction's phase two only while it holds
-- the row's claim: owner and claim_until, with term growing at every claim,
-- so a paused former driver's writes (fenced on term) are refused.
-- next_at is when phase two is next due (0: nothing to do); timeout_at is
-- when a prepared transaction not yet submitted is aborted; phase is the
-- decision (commit or abort) a failed (parked) transaction resumes.
CREATE TABLE txn_globals (
  xid {{KEY}} PRIMARY KEY,
  mode {{KEY}} NOT NULL,
  app {{KEY}} NOT NULL,
  status {{KEY}} NOT NULL,
  phase {{KEY}} NOT NULL,
  options {{TEXT}} NOT NULL,
  reason {{TEXT}} NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  next_at BIGINT NOT NULL,
  timeout_at BIGINT NOT NULL,
  owner {{KEY}} NOT NULL,
  claim_until BIGINT NOT NULL,
  term BIGINT NOT NULL,
  branches INTEGER NOT NULL
);
CREATE INDEX txn_globals_due ON txn_globals (next_at);
CREATE INDEX txn_globals_timeout ON txn_globals (timeout_at);
CREATE INDEX txn_globals_created ON txn_globals (created_at);
CREATE TABLE txn_branches (
  xid {{KEY}} NOT NULL,
  branch INTEGER NOT NULL,
  step {{TEXT}} NOT NULL,
  done {{TEXT}} NOT NULL,
  attempts INTEGER NOT NULL,
  PRIMARY KEY (xid, branch)
);
CREATE TABLE txn_events (
  id {{ID}},
  xid {{KEY}} NOT NULL,
  branch INTEGER NOT NULL,
  op {{KEY}} NOT NULL,
  at BIGINT NOT NULL,
  ms BIGINT NOT NULL,
  result {{KEY}} NOT NULL,
  error {{TEXT}} NOT NULL
);
CREATE INDEX txn_events_xid ON txn_events (xid, id);
