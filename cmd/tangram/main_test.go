package main

import (
	"bytes"
	"net"
	"strings"
	"testing"

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
