package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/internal/faults"
	"github.com/tangram-dev/tangram/internal/port"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/server/servertest"
)

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tangram")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/tangram-dev/tangram/cmd/tangram")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func startProcess(t *testing.T, bin, addr, data string, extra ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"server", "--http", addr, "--rpc", "127.0.0.1:0", "--broker", "off", "--kv", "off", "--otlp-http", "off", "--otlp-grpc", "off", "--data", data, "--log-level", "warn"}, extra...)...)
	cmd.Env = append(os.Environ(), "TANGRAM_BOOTSTRAP_TOKEN="+servertest.AdminToken, "TANGRAM_SECRET_KEY="+strings.Repeat("ab", 32))
	// The server's log goes to a file that is shown when the test fails.
	logf, err := os.CreateTemp(t.TempDir(), "server-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 8<<10 {
				b = b[len(b)-8<<10:]
			}
			t.Logf("server %s (--http %s) log:\n%s", data, addr, b)
		}
	})
	c := apiclient.New("http://"+addr, "")
	if !wait.Until(5*time.Second, func() bool { return c.Do(context.Background(), "GET", "/readyz", nil, nil) == nil }) {
		cmd.Process.Kill()
		t.Fatal("server did not become ready in 5s")
	}
	return cmd
}

// watchers reads how many config watches the server at addr holds, from
// its metrics (which need no token).
func watchers(addr string) int {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "tangram_config_watchers "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return -1
}

type acked struct {
	id    int64
	value string
}

// TestKill9DuringPublishes kills the server (SIGKILL) while publishes are in
// flight, restarts it on the same data directory, and checks that every
// acknowledged release is there, whole, and that the namespace points at a
// complete release.
func TestKill9DuringPublishes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	t.Run("sqlite", func(t *testing.T) { kill9(t, bin, nil) })
	// On PostgreSQL the killed server's open transactions are aborted by the
	// database when its connections drop.
	t.Run("postgres", func(t *testing.T) { kill9(t, bin, []string{"--store", storetest.DSN(t, store.Postgres)}) })
	t.Run("mysql", func(t *testing.T) { kill9(t, bin, []string{"--store", storetest.DSN(t, store.MySQL)}) })
}

func kill9(t *testing.T, bin string, extra []string) {
	data := t.TempDir()
	addr := port.Free(t)
	proc := startProcess(t, bin, addr, data, extra...)
	c := apiclient.New("http://"+addr, servertest.AdminToken)
	ctx := context.Background()
	if err := c.Do(ctx, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil); err != nil {
		t.Fatal(err)
	}
	const ns = "/api/v1/config/envs/dev/apps/demo/clusters/default/namespaces/application"
	var (
		mu   sync.Mutex
		acks []acked
	)
	rounds := faults.Rounds(1, 5)
	for round := range rounds {
		if round > 0 {
			proc = startProcess(t, bin, addr, data, extra...)
		}
		var wg sync.WaitGroup
		before := len(acks)
		deadline := time.Now().Add(800 * time.Millisecond)
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; time.Now().Before(deadline) || i < 3; i++ {
					v := fmt.Sprintf("r%d-w%d-%d", round, w, i)
					// A batch edit of several keys: a partial release would show mixed values.
					set := []config.Item{{Key: "a", Value: v}, {Key: "b", Value: v}, {Key: "c", Value: v}}
					if err := c.Do(ctx, "POST", ns+"/draft", config.Edit{Set: set}, nil); err != nil {
						return
					}
					var rel config.Release
					if err := c.Do(ctx, "POST", ns+"/publish", config.PublishRequest{Comment: v}, &rel); err != nil {
						continue // 409 on a concurrent publish, or the server is gone
					}
					mu.Lock()
					acks = append(acks, acked{id: rel.ID, value: v})
					mu.Unlock()
				}
			}()
		}
		// Kill it in the middle of the writes, once some are acknowledged.
		wait.For(t, 10*time.Second, fmt.Sprintf("round %d: 20 acknowledged releases", round), func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(acks) >= before+20
		})
		if err := proc.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = proc.Wait()
		wg.Wait()
	}
	proc = startProcess(t, bin, addr, data, extra...)
	defer func() { proc.Process.Signal(syscall.SIGTERM); proc.Wait() }()
	lost, torn := 0, 0
	for _, a := range acks {
		var rel config.Release
		if err := c.Do(ctx, "GET", fmt.Sprintf("%s/releases/%d", ns, a.id), nil, &rel); err != nil {
			lost++
			t.Errorf("acknowledged release %d lost: %v", a.id, err)
			continue
		}
		vals := map[string]string{}
		for _, it := range rel.Items {
			vals[it.Key] = it.Value
		}
		// The release holds one writer's complete draft (all three keys equal).
		if vals["a"] == "" || vals["a"] != vals["b"] || vals["b"] != vals["c"] {
			torn++
			t.Errorf("release %d is torn: %v", a.id, vals)
		}
	}
	faults.Report(t, "config publish kill -9 on "+filepath.Base(t.Name()), "kills", rounds, "acknowledged", len(acks), "lost", lost, "torn", torn)
	if t.Failed() {
		t.FailNow()
	}
	var out struct {
		Namespace config.Namespace `json:"namespace"`
	}
	if err := c.Do(ctx, "GET", ns, nil, &out); err != nil {
		t.Fatal(err)
	}
	var cur config.Release
	if err := c.Do(ctx, "GET", fmt.Sprintf("%s/releases/%d", ns, out.Namespace.ReleaseID), nil, &cur); err != nil {
		t.Fatalf("namespace points at release %d: %v", out.Namespace.ReleaseID, err)
	}
	maxAck := int64(0)
	for _, a := range acks {
		maxAck = max(maxAck, a.id)
	}
	if cur.ID < maxAck {
		t.Fatalf("current release %d is older than acknowledged release %d", cur.ID, maxAck)
	}
	var cfg config.Payload
	if err := c.Do(ctx, "GET", "/api/v1/config/configs/dev/demo/default/application", nil, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Items["a"] == "" || cfg.Items["a"] != cfg.Items["c"] {
		t.Fatalf("client sees a torn configuration: %v", cfg.Items)
	}
}

// TestGracefulShutdown sends SIGTERM to a server holding a watch: the
// watch is answered at once (503, so the client reconnects elsewhere) and
// the process exits 0 promptly.
func TestGracefulShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	addr := port.Free(t)
	proc := startProcess(t, bin, addr, t.TempDir())
	c := apiclient.New("http://"+addr, servertest.AdminToken)
	ctx := context.Background()
	if err := c.Do(ctx, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil); err != nil {
		t.Fatal(err)
	}
	var first struct{ Changes []config.Notification }
	req := config.WatchRequest{Env: "dev", App: "demo", Namespaces: []config.Notification{{NS: "application", ID: -1}}}
	if err := c.Do(ctx, "POST", "/api/v1/config/watch", req, &first); err != nil {
		t.Fatal(err)
	}
	req.Namespaces[0].ID = first.Changes[0].ID
	answered := make(chan error, 1)
	go func() { answered <- c.Do(ctx, "POST", "/api/v1/config/watch?timeout=60s", req, nil) }()
	wait.For(t, 5*time.Second, "the watch to be held", func() bool { return watchers(addr) == 1 })
	start := time.Now()
	if err := proc.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-answered:
		if !apiclient.IsStatus(err, 503) {
			t.Fatalf("held watch answered %v, want 503", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held watch not answered within 5s of SIGTERM")
	}
	done := make(chan error, 1)
	go func() { done <- proc.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		proc.Process.Kill()
		t.Fatal("server did not exit within 10s of SIGTERM")
	}
	t.Logf("shut down in %v", time.Since(start).Round(time.Millisecond))
}

// TestClusterOfProcesses runs two tangram server processes on one
// PostgreSQL store: a secret published through one is read, in plaintext,
// by a client of the other, which is notified of the release.
func TestClusterOfProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	dsn := storetest.DSN(t, store.Postgres)
	addrA, addrB := port.Free(t), port.Free(t)
	a := startProcess(t, bin, addrA, t.TempDir(), "--store", dsn)
	defer func() { a.Process.Signal(syscall.SIGTERM); a.Wait() }()
	b := startProcess(t, bin, addrB, t.TempDir(), "--store", dsn)
	defer func() { b.Process.Signal(syscall.SIGTERM); b.Wait() }()
	ca := apiclient.New("http://"+addrA, servertest.AdminToken)
	ctx := context.Background()
	const ns = "/api/v1/config/envs/dev/apps/demo/clusters/default/namespaces/application"
	if err := ca.Do(ctx, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil); err != nil {
		t.Fatal(err)
	}
	set := func(v string) {
		if err := ca.Do(ctx, "PUT", ns+"/items/db.password", map[string]any{"value": v, "secret": true}, nil); err != nil {
			t.Fatal(err)
		}
		if err := ca.Do(ctx, "POST", ns+"/publish", config.PublishRequest{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	set("first-secret")
	cl, err := config.NewClient(ctx, config.ClientConfig{Servers: []string{"http://" + addrB}, Token: servertest.AdminToken, Env: "dev", App: "demo",
		CacheDir: t.TempDir(), WatchTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if got := cl.String("db.password", ""); got != "first-secret" {
		t.Fatalf("server b serves %q", got)
	}
	wait.For(t, 5*time.Second, "the client's watch to be held on b", func() bool { return watchers(addrB) == 1 })
	start := time.Now()
	set("second-secret")
	wait.For(t, 5*time.Second, "the client of b to see the release made on a", func() bool { return cl.String("db.password", "") == "second-secret" })
	t.Logf("release on process a reached the client of process b in %v", time.Since(start).Round(time.Millisecond))
}
