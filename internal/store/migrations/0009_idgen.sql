-- Unique IDs (the id component): Leaf's segment table — one row per
-- tag, max_id the end of the last range handed out — and leased worker
-- numbers for snowflake generators, recycled after expiry. not_before is
-- the earliest time the next holder of a number may put in an ID (the
-- holder's clock at its last renewal + TTL, or just past its last ID when
-- it released the number); term grows with every new holder.
CREATE TABLE id_segments (
  tag {{KEY}} PRIMARY KEY,
  max_id BIGINT NOT NULL,
  step BIGINT NOT NULL,
  description {{TEXT}} NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE TABLE id_workers (
  pool {{KEY}} NOT NULL,
  worker BIGINT NOT NULL,
  holder {{KEY}} NOT NULL,
  term BIGINT NOT NULL,
  ttl_ms BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  not_before BIGINT NOT NULL,
  last_ms BIGINT NOT NULL,
  PRIMARY KEY (pool, worker)
);
