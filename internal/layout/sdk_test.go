package layout

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// forbidden are packages an SDK must never link: they are the server's.
var forbidden = []string{
	"github.com/jackc/pgx",
	"github.com/go-sql-driver/mysql",
	"modernc.org/sqlite",
	"github.com/tangram-dev/tangram/internal/store",
	"github.com/tangram-dev/tangram/internal/auth",
	"github.com/tangram-dev/tangram/server",
	"github.com/tangram-dev/tangram/console",
}

// maxSDKBinary is the size an SDK program must stay under.
const maxSDKBinary = 10 << 20

// The SQL parser weighs about 19 MB: only the packages that read their
// users' SQL (txn/at, shard) may link it, and their programs have a budget
// of their own (docs/decisions/0004-sql-parser.md).
const (
	sqlParser       = "github.com/pingcap/tidb/pkg/parser"
	maxSQLSDKBinary = 32 << 20
)

// sqlPrograms are the SDK programs that parse SQL.
var sqlPrograms = map[string]bool{"atclient": true, "shardclient": true}

// The OpenTelemetry SDK (its span processor, resource detection and
// semantic-convention tables) weighs about 4 MB; a service that records
// spans itself carries it and gets a budget of its own. The trace
// package's exporter is written with protowire so that the SDK is all it
// adds: OTel's own OTLP exporter brings gRPC (a 20 MB hello-world).
var tracedPrograms = map[string]bool{"tracing": true}

const maxTracedSDKBinary = 14 << 20

func sdkPrograms(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob("testdata/sdk/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no SDK programs under testdata/sdk: %v", err)
	}
	return dirs
}

func goTool(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// TestSDKsLinkNoServer: a service importing an SDK (config client,
// discovery, RPC, job executor, mq producer and consumer) links none of
// the server's packages or database drivers.
func TestSDKsLinkNoServer(t *testing.T) {
	for _, dir := range sdkPrograms(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			deps := goTool(t, "list", "-deps", "./"+dir)
			banned := forbidden
			if !sqlPrograms[filepath.Base(dir)] {
				banned = append(slices.Clone(forbidden), sqlParser)
			}
			for _, dep := range strings.Fields(deps) {
				for _, f := range banned {
					if dep == f || strings.HasPrefix(dep, f+"/") {
						t.Errorf("%s links %s: an SDK must not carry the server (see docs/architecture.md)", dir, dep)
					}
				}
			}
		})
	}
}

// TestSDKBinarySize: each SDK program builds to under 10 MB.
func TestSDKBinarySize(t *testing.T) {
	if testing.Short() {
		t.Skip("builds five programs")
	}
	out := t.TempDir()
	for _, dir := range sdkPrograms(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			bin := filepath.Join(out, filepath.Base(dir))
			goTool(t, "build", "-o", bin, "./"+dir)
			fi, err := os.Stat(bin)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %.1f MB", filepath.Base(dir), float64(fi.Size())/(1<<20))
			limit := int64(maxSDKBinary)
			if sqlPrograms[filepath.Base(dir)] {
				limit = maxSQLSDKBinary
			}
			if tracedPrograms[filepath.Base(dir)] {
				limit = maxTracedSDKBinary
			}
			if fi.Size() >= limit {
				t.Errorf("%s builds to %.1f MB, over the %d MB an SDK may weigh", dir, float64(fi.Size())/(1<<20), limit>>20)
			}
		})
	}
}
