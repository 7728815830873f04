// Package config is Tangram's configuration center: the server side (the
// model of environments, apps, clusters and namespaces; drafts and
// immutable releases; diff and rollback; gray releases; approvals; secrets;
// import and export; the watch hub that pushes releases to clients) and
// the client SDK that services import.
//
// Server: New(Config) then Start; Register mounts the HTTP API under
// /api/v1/config. All state is in the SQL store (internal/store); a release
// is one transaction that also writes a release message, which every
// server sharing the store turns into push notifications (at once on
// PostgreSQL through LISTEN/NOTIFY, else by a scan each second).
//
// Client: NewClient loads namespaces, keeps them current by long polling
// with notification ids, fails over between servers, and keeps a disk copy
// for starts without a server. Bind decodes a namespace into a struct and
// keeps it current.
//
// Lock order: Server.ownMu and hub.mu are never held together; the hub
// takes no other lock while holding hub.mu.
package config
