-- Server-wide settings shared by every server on the store (e.g. the
-- fingerprint of the secret key, so a server started with another key is
-- refused instead of failing to decrypt later).
CREATE TABLE server_settings (
  name {{KEY}} NOT NULL PRIMARY KEY,
  value {{TEXT}} NOT NULL,
  updated_at BIGINT NOT NULL
);
