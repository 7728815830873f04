-- Global row locks of AT-mode branches: a row (table and primary key, as
-- the key) of a resource (a participant database) is held by at most one
-- global transaction, from its branch's registration until the
-- transaction is decided committed (its writes are final) or its rollback
-- has restored the row.
CREATE TABLE txn_locks (
  resource {{KEY}} NOT NULL,
  row_key {{KEY}} NOT NULL,
  xid {{KEY}} NOT NULL,
  branch INTEGER NOT NULL,
  PRIMARY KEY (resource, row_key)
);
CREATE INDEX txn_locks_xid ON txn_locks (xid);
