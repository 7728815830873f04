// Package example tests the RPC example end to end with real processes: two
// servers, one client, one server killed with SIGKILL mid-traffic.
package example

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func build(t *testing.T, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// startServer runs a server on a free port and returns it with its address.
func startServer(t *testing.T, bin, name string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-name", name)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() {
		t.Fatalf("server %s printed nothing", name)
	}
	// "serving Greeter on 127.0.0.1:port as "name""
	f := strings.Fields(sc.Text())
	if len(f) < 4 {
		t.Fatalf("unexpected first line %q", sc.Text())
	}
	go func() {
		for sc.Scan() {
		}
	}()
	return cmd, f[3]
}

func TestKillOneServerMidTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	dir := t.TempDir()
	srvBin := build(t, dir, "github.com/tangram-dev/tangram/examples/rpc/server")
	cliBin := build(t, dir, "github.com/tangram-dev/tangram/examples/rpc/client")
	one, addr1 := startServer(t, srvBin, "one")
	_, addr2 := startServer(t, srvBin, "two")

	cli := exec.Command(cliBin, "-servers", addr1+","+addr2, "-n", "60", "-every", "20ms")
	stdout, err := cli.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var lines []string
	killedAt := -1
	for sc.Scan() {
		line := sc.Text()
		lines = append(lines, line)
		if killedAt < 0 && len(lines) == 15 {
			if err := one.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killedAt = len(lines)
		}
	}
	err = cli.Wait()
	out := strings.Join(lines, "\n")
	if err != nil {
		t.Fatalf("client failed: %v\n%s", err, out)
	}
	if !strings.Contains(out, "done: 61 calls, 0 failed") {
		t.Fatalf("unexpected summary:\n%s", out)
	}
	before := strings.Join(lines[:killedAt], "\n")
	if !strings.Contains(before, "(from one)") || !strings.Contains(before, "(from two)") {
		t.Fatalf("calls were not balanced over both servers before the kill:\n%s", before)
	}
	// A line or two may still have been answered by "one" before the
	// process died; after that, every answer comes from "two".
	for _, l := range lines[killedAt+2:] {
		if strings.Contains(l, "(from one)") {
			t.Fatalf("a killed server answered: %q\n%s", l, out)
		}
	}
}
