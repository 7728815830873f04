package server_test

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/internal/port"
	"github.com/tangram-dev/tangram/registry"
	"github.com/tangram-dev/tangram/server/servertest"
)

func buildPkg(t *testing.T, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// TestThreeServerCluster is issue 6's "done when": three tangram server
// processes form a registry cluster; an example service registers on the
// first, a client finds it through the second, a proxy on the third routes
// to it; the first server is then cut off (SIGSTOP: no FIN, no RST — as a
// partition looks) and healed (SIGCONT), and nothing is lost.
func TestThreeServerCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	bin := buildBinary(t)
	exSrv := buildPkg(t, "github.com/tangram-dev/tangram/examples/rpc/server")
	exCli := buildPkg(t, "github.com/tangram-dev/tangram/examples/rpc/client")
	type srv struct {
		cmd               *exec.Cmd
		http, rpc, gossip string
	}
	var srvs []srv
	for i := range 3 {
		s := srv{http: port.Free(t), rpc: port.Free(t), gossip: port.Free(t)}
		extra := []string{"--rpc", s.rpc, "--broker", "off", "--gossip", s.gossip, "--node-name", "s" + string(rune('1'+i))}
		if i > 0 {
			extra = append(extra, "--join", srvs[0].gossip)
		}
		s.cmd = startProcess(t, bin, s.http, t.TempDir(), extra...)
		t.Cleanup(func() { s.cmd.Process.Signal(syscall.SIGCONT); s.cmd.Process.Kill(); s.cmd.Wait() })
		srvs = append(srvs, s)
	}
	api := func(i int) *apiclient.Client { return apiclient.New("http://"+srvs[i].http, servertest.AdminToken) }
	members := func(i int) int {
		var st registry.Status
		if err := api(i).Do(context.Background(), "GET", "/api/v1/registry/status", nil, &st); err != nil {
			return 0
		}
		return len(st.Members)
	}
	wait.For(t, 20*time.Second, "three members everywhere", func() bool { return members(0) == 3 && members(1) == 3 && members(2) == 3 })

	// The example service registers on server 1.
	svc := exec.Command(exSrv, "-addr", "127.0.0.1:0", "-name", "one", "-registry", srvs[0].rpc, "-heartbeat", "300ms")
	svc.Env = append(svc.Environ(), "TANGRAM_TOKEN="+servertest.AdminToken)
	out, _ := svc.StdoutPipe()
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Process.Kill(); svc.Wait() })
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
		}
	}()
	listed := func(i int) []*registry.Instance {
		var snap registry.Snapshot
		if err := api(i).Do(context.Background(), "GET", "/api/v1/registry/services/public/default/greeter", nil, &snap); err != nil {
			return nil
		}
		return snap.Instances
	}
	wait.For(t, 20*time.Second, "the instance on every server", func() bool {
		return len(listed(0)) == 1 && len(listed(1)) == 1 && len(listed(2)) == 1
	})

	// A client discovers it through server 2.
	runClient := func(args ...string) string {
		t.Helper()
		c := exec.Command(exCli, append([]string{"-n", "10", "-every", "10ms"}, args...)...)
		c.Env = append(c.Environ(), "TANGRAM_TOKEN="+servertest.AdminToken)
		b, err := c.CombinedOutput()
		if err != nil || !strings.Contains(string(b), "done: 11 calls, 0 failed") {
			t.Fatalf("client %v: %v\n%s", args, err, b)
		}
		return string(b)
	}
	runClient("-registry", srvs[1].rpc)

	// A proxy on server 3 routes to it.
	proxyAddr := port.Free(t)
	px := exec.Command(bin, "proxy", "--registry", srvs[2].rpc, "--token", servertest.AdminToken, "--route", proxyAddr+"=rpc:greeter")
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Process.Signal(syscall.SIGTERM); px.Wait() })
	wait.For(t, 10*time.Second, "the proxy listening", func() bool {
		c, err := exec.Command(exCli, "-servers", proxyAddr, "-n", "1", "-every", "1ms").CombinedOutput()
		return err == nil && strings.Contains(string(c), "0 failed")
	})
	runClient("-servers", proxyAddr)

	// Cut server 1 off, with the instance's owner on it.
	if err := srvs[0].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "servers 2 and 3 see two members", func() bool { return members(1) == 2 && members(2) == 2 })
	// The service moved to another server; it never left the others' lists.
	for range 20 {
		if len(listed(1)) != 1 || len(listed(2)) != 1 {
			t.Fatalf("instance lost during the cut: %v / %v", listed(1), listed(2))
		}
		time.Sleep(100 * time.Millisecond) // sleep-ok: the lists are sampled through 2 s of the cut
	}
	runClient("-registry", srvs[2].rpc)

	if err := srvs[0].cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "three members again", func() bool { return members(0) == 3 && members(1) == 3 && members(2) == 3 })
	wait.For(t, 30*time.Second, "one instance everywhere after the heal", func() bool {
		return len(listed(0)) == 1 && len(listed(1)) == 1 && len(listed(2)) == 1
	})
	runClient("-registry", srvs[0].rpc)
}
