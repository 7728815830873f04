// Package layout holds no code, only the tests that keep the repository's
// shape true to docs/architecture.md:
//
//   - an SDK links no server: a tiny program per SDK (testdata/sdk/…) must
//     not depend on a database driver, internal/store or internal/auth, and
//     builds to under 10 MB;
//   - tests synchronise on events, not on time.Sleep (allow-listed sleeps
//     are the behaviour under test);
//   - `tangram version` starts in a few milliseconds (no costly package
//     initialisation).
package layout
