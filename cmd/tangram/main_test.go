package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/server/servertest"
	"go.uber.org/goleak"
)

// TestMain checks that every goroutine the servers and clients started has
// stopped once the tests are done.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The first errors a newcomer meets say what to do: an unknown subcommand
// fails (with a suggestion), --help never shows the token, host:port is a
// server, a server that is not running and a missing token are named.
func TestNewcomerErrors(t *testing.T) {
	t.Setenv("TANGRAM_TOKEN", "tgm_secretsecretsecret")
	root := newRoot()
	var buf bytes.Buffer
	root.SetOut(&buf)
	root.SetErr(&buf)
	root.SetArgs([]string{"config", "gett"})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), `unknown command "gett" for "tangram config"`) || !strings.Contains(err.Error(), "get") {
		t.Fatalf("config gett: %v", err)
	}
	for _, args := range [][]string{{"--help"}, {"config", "--help"}, {"mq", "send", "--help"}} {
		root, buf = newRoot(), bytes.Buffer{}
		root.SetOut(&buf)
		root.SetErr(&buf)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(buf.String(), "tgm_secret") {
			t.Fatalf("%v prints the token:\n%s", args, buf.String())
		}
	}
	h := servertest.Start(t)
	root, g := newRootWith()
	root.SetOut(&buf)
	root.SetArgs([]string{"--server", strings.TrimPrefix(h.URL, "http://"), "--token", h.Token, "config", "apps"})
	if err := root.Execute(); err != nil || g.server != h.URL {
		t.Fatalf("--server host:port: %v (server %q)", err, g.server)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	root, g = newRootWith()
	root.SetOut(&buf)
	root.SetArgs([]string{"--server", dead, "config", "apps"})
	if err := root.Execute(); err == nil || !strings.Contains(explain(err, g), "no Tangram server at "+dead) {
		t.Fatalf("no server: %v", err)
	}
	t.Setenv("TANGRAM_TOKEN", "")
	root, g = newRootWith()
	root.SetOut(&buf)
	root.SetArgs([]string{"--server", h.URL, "config", "apps"})
	if err := root.Execute(); err == nil || !strings.Contains(explain(err, g), "set TANGRAM_TOKEN") {
		t.Fatalf("no token: %v", err)
	}
}

// runInBackground runs the command line args (a long-running command: a
// broker, a collector) until the test ends, then cancels it and waits for
// it to return, failing the test on an error.
func runInBackground(t *testing.T, what string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		done <- root.ExecuteContext(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		if err := wait.Receive(t, 20*time.Second, what+" to stop", done); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	})
}
