-- Persistent registry instances (ephemeral ones live in memory and gossip).
CREATE TABLE registry_instances (
  namespace {{KEY}} NOT NULL,
  grp {{KEY}} NOT NULL,
  service {{KEY}} NOT NULL,
  id {{KEY}} NOT NULL,
  body {{TEXT}} NOT NULL,
  version BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (namespace, grp, service, id)
);
