-- Config center: environments, apps, clusters, namespaces, draft items,
-- immutable releases, gray branches, approvals, release messages, clients.
CREATE TABLE config_envs (
  name {{KEY}} NOT NULL PRIMARY KEY,
  description {{TEXT}} NOT NULL,
  emergency_publish INTEGER NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL
);

CREATE TABLE config_apps (
  name {{KEY}} NOT NULL PRIMARY KEY,
  owner {{KEY}} NOT NULL,
  description {{TEXT}} NOT NULL,
  created_at BIGINT NOT NULL
);

CREATE TABLE config_clusters (
  id {{ID}},
  env {{KEY}} NOT NULL,
  app {{KEY}} NOT NULL,
  name {{KEY}} NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX config_clusters_key ON config_clusters (env, app, name);

CREATE TABLE config_namespaces (
  id {{ID}},
  env {{KEY}} NOT NULL,
  app {{KEY}} NOT NULL,
  cluster {{KEY}} NOT NULL,
  name {{KEY}} NOT NULL,
  format {{KEY}} NOT NULL,
  is_public INTEGER NOT NULL DEFAULT 0,
  link_app {{KEY}} NOT NULL,
  require_approval INTEGER NOT NULL DEFAULT 0,
  separate_publisher INTEGER NOT NULL DEFAULT 0,
  draft_version BIGINT NOT NULL DEFAULT 0,
  last_editor {{KEY}} NOT NULL,
  release_id BIGINT NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX config_namespaces_key ON config_namespaces (env, app, cluster, name);

CREATE TABLE config_items (
  id {{ID}},
  ns_id BIGINT NOT NULL,
  item_key {{KEY}} NOT NULL,
  value {{TEXT}} NOT NULL,
  secret INTEGER NOT NULL DEFAULT 0,
  comment {{TEXT}} NOT NULL,
  position BIGINT NOT NULL DEFAULT 0,
  updated_by {{KEY}} NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX config_items_key ON config_items (ns_id, item_key);

CREATE TABLE config_releases (
  id {{ID}},
  ns_id BIGINT NOT NULL,
  version BIGINT NOT NULL,
  kind {{KEY}} NOT NULL,
  comment {{TEXT}} NOT NULL,
  author {{KEY}} NOT NULL,
  snapshot {{TEXT}} NOT NULL,
  base_release_id BIGINT NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX config_releases_version ON config_releases (ns_id, version);

CREATE TABLE config_grays (
  ns_id BIGINT NOT NULL PRIMARY KEY,
  overlay {{TEXT}} NOT NULL,
  rules {{TEXT}} NOT NULL,
  published_overlay {{TEXT}} NOT NULL,
  published_rules {{TEXT}} NOT NULL,
  release_id BIGINT NOT NULL DEFAULT 0,
  updated_by {{KEY}} NOT NULL,
  updated_at BIGINT NOT NULL
);

CREATE TABLE config_release_requests (
  id {{ID}},
  ns_id BIGINT NOT NULL,
  requested_by {{KEY}} NOT NULL,
  comment {{TEXT}} NOT NULL,
  snapshot {{TEXT}} NOT NULL,
  base_release_id BIGINT NOT NULL DEFAULT 0,
  status {{KEY}} NOT NULL,
  reviewer {{KEY}} NOT NULL,
  review_comment {{TEXT}} NOT NULL,
  release_id BIGINT NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL,
  decided_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX config_release_requests_ns ON config_release_requests (ns_id, status);

CREATE TABLE config_release_messages (
  id {{ID}},
  message {{LONGKEY}} NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX config_release_messages_message ON config_release_messages (message);

CREATE TABLE config_instances (
  id {{ID}},
  ns_id BIGINT NOT NULL,
  instance {{KEY}} NOT NULL,
  ip {{KEY}} NOT NULL,
  labels {{TEXT}} NOT NULL,
  release_id BIGINT NOT NULL,
  gray INTEGER NOT NULL DEFAULT 0,
  last_seen BIGINT NOT NULL
);
CREATE UNIQUE INDEX config_instances_key ON config_instances (ns_id, instance);
