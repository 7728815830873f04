// Package lock is Tangram's distributed lock SDK: one Locker interface
// over two backends, each acquisition carrying a fencing token.
//
// A lock held across processes can always be lost while its holder still
// believes it holds it — a pause (GC, SIGSTOP, a slow disk) longer than
// the lease, a network partition — so every acquisition returns a
// fencing token: a number that grows with every acquisition of that lock
// name. A resource the lock protects records the highest token it has
// seen and refuses writes carrying a smaller one (Fenced, Guard), so a
// holder that woke up after losing the lock cannot overwrite the work of
// the one that took it over.
//
// Backends:
//
//   - lock/redislock: on Tangram's kv, Redis or Redis Cluster — SET-NX
//     style acquisition with a compare-and-delete release, a watchdog that
//     renews the lease while the lock is held, reentrancy per owner,
//     fair (FIFO) and read-write variants, wake-up by pub/sub, and Redlock
//     across independent nodes.
//   - Client (this package): the server backend in tangram server, with
//     ZooKeeper's semantics — a session kept alive over RPC, ephemeral
//     sequential nodes, each waiter watching only its predecessor; the
//     node's sequence number is the fencing token.
//
// Docs: docs/lock.md.
package lock
