-- Foundation: users, roles, tokens, sessions, audit, leader leases.
-- Tokens in braces are replaced per dialect: {{ID}} an auto-increment primary
-- key, {{TEXT}} a long text column, {{KEY}} an indexable string.
CREATE TABLE users (
  id {{ID}},
  name {{KEY}} NOT NULL,
  password_hash {{TEXT}} NOT NULL,
  created_at BIGINT NOT NULL,
  disabled INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX users_name ON users (name);

CREATE TABLE role_bindings (
  id {{ID}},
  user_id BIGINT NOT NULL,
  role {{KEY}} NOT NULL,
  env {{KEY}} NOT NULL,
  app {{KEY}} NOT NULL,
  ns {{KEY}} NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX role_bindings_scope ON role_bindings (user_id, role, env, app, ns);

CREATE TABLE api_tokens (
  id {{ID}},
  user_id BIGINT NOT NULL,
  name {{KEY}} NOT NULL,
  hash {{KEY}} NOT NULL,
  env {{KEY}} NOT NULL,
  created_at BIGINT NOT NULL,
  last_used_at BIGINT NOT NULL DEFAULT 0,
  revoked INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX api_tokens_hash ON api_tokens (hash);

CREATE TABLE sessions (
  id {{ID}},
  hash {{KEY}} NOT NULL,
  user_id BIGINT NOT NULL,
  csrf {{KEY}} NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX sessions_hash ON sessions (hash);

CREATE TABLE audit_log (
  id {{ID}},
  at BIGINT NOT NULL,
  actor {{KEY}} NOT NULL,
  action {{KEY}} NOT NULL,
  resource {{TEXT}} NOT NULL,
  before_value {{TEXT}} NOT NULL,
  after_value {{TEXT}} NOT NULL,
  remote {{KEY}} NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE leases (
  name {{KEY}} NOT NULL PRIMARY KEY,
  holder {{KEY}} NOT NULL,
  term BIGINT NOT NULL,
  expires_at BIGINT NOT NULL
);
