-- Job scheduler: jobs (the Job as JSON plus the columns the trigger loop
-- selects on), runs (one row per fire, attempt and shard; the unique index
-- is the last guard against a double fire), run logs in chunks, executors.
CREATE TABLE job_jobs (
  id {{ID}},
  name {{KEY}} NOT NULL,
  app {{KEY}} NOT NULL,
  body {{TEXT}} NOT NULL,
  enabled INTEGER NOT NULL,
  part INTEGER NOT NULL,
  next_fire_at BIGINT NOT NULL,
  version BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX job_jobs_name ON job_jobs (name);
CREATE INDEX job_jobs_due ON job_jobs (part, next_fire_at);

CREATE TABLE job_runs (
  id {{ID}},
  job_id BIGINT NOT NULL,
  part INTEGER NOT NULL,
  fire_at BIGINT NOT NULL,
  attempt INTEGER NOT NULL,
  shard_index INTEGER NOT NULL,
  shard_total INTEGER NOT NULL,
  cause {{KEY}} NOT NULL,
  params {{TEXT}} NOT NULL,
  status {{KEY}} NOT NULL,
  due_at BIGINT NOT NULL,
  executor {{KEY}} NOT NULL,
  term BIGINT NOT NULL,
  error {{TEXT}} NOT NULL,
  created_at BIGINT NOT NULL,
  started_at BIGINT NOT NULL,
  finished_at BIGINT NOT NULL,
  output {{TEXT}} NOT NULL,
  flow_id BIGINT NOT NULL,
  node {{KEY}} NOT NULL
);
CREATE UNIQUE INDEX job_runs_fire ON job_runs (job_id, fire_at, attempt, shard_index, flow_id, node, cause);
CREATE INDEX job_runs_flow ON job_runs (flow_id);
CREATE INDEX job_runs_status ON job_runs (part, status, due_at);
CREATE INDEX job_runs_job ON job_runs (job_id, id);

CREATE TABLE job_logs (
  run_id BIGINT NOT NULL,
  seq INTEGER NOT NULL,
  body {{TEXT}} NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (run_id, seq)
);

CREATE TABLE job_executors (
  app {{KEY}} NOT NULL,
  addr {{KEY}} NOT NULL,
  sign_key {{KEY}} NOT NULL,
  capacity INTEGER NOT NULL,
  running INTEGER NOT NULL,
  handlers {{TEXT}} NOT NULL,
  last_beat BIGINT NOT NULL,
  PRIMARY KEY (app, addr)
);

-- Glue sources: every saved version is kept (history, diff, rollback).
CREATE TABLE job_glue (
  job_id BIGINT NOT NULL,
  version INTEGER NOT NULL,
  source {{TEXT}} NOT NULL,
  note {{TEXT}} NOT NULL,
  author {{KEY}} NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (job_id, version)
);

-- DAG workflow runs: one per fire of a flow job; its node runs are job_runs
-- rows with flow_id set.
CREATE TABLE job_flows (
  id {{ID}},
  job_id BIGINT NOT NULL,
  fire_at BIGINT NOT NULL,
  status {{KEY}} NOT NULL,
  created_at BIGINT NOT NULL,
  finished_at BIGINT NOT NULL
);
CREATE INDEX job_flows_job ON job_flows (job_id, id);
