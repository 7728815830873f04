-- Locks and sequential nodes (the lock component): client sessions kept
-- alive over RPC, a tree of nodes (ephemeral ones die with their
-- session), and one counter per parent path that only grows: a
-- sequential node's suffix and a lock's fencing token.
CREATE TABLE lock_sessions (
  id {{KEY}} PRIMARY KEY,
  owner {{KEY}} NOT NULL,
  principal {{KEY}} NOT NULL,
  ttl_ms BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX lock_sessions_expiry ON lock_sessions (expires_at);
CREATE TABLE lock_nodes (
  path {{LONGKEY}} PRIMARY KEY,
  parent {{LONGKEY}} NOT NULL,
  seq BIGINT NOT NULL,
  session_id {{KEY}} NOT NULL,
  data {{TEXT}} NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX lock_nodes_parent ON lock_nodes (parent, seq);
CREATE INDEX lock_nodes_session ON lock_nodes (session_id);
CREATE TABLE lock_seqs (
  parent {{LONGKEY}} PRIMARY KEY,
  next BIGINT NOT NULL
);
