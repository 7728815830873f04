package txn_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/txn"
)

func mustTarget(t *testing.T, s string) txn.Target {
	t.Helper()
	tg, err := txn.ParseTarget(s)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// Branch targets outside the coordinator's list are refused when
// registered, naming the host; names match exactly or by suffix, IP
// literals by network; a host name no name matches is left to the dial
// check when there are networks to check it against.
func TestAllowChecksTargets(t *testing.T) {
	for _, bad := range []string{"http://x", "a/b", "*.", "bank:80"} {
		if _, err := txn.ParseAllow([]string{bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("entry %q: %v (want an error naming it)", bad, err)
		}
	}
	if a, err := txn.ParseAllow([]string{" ", ""}); a != nil || err != nil {
		t.Fatalf("no entries: %v %v (want no list)", a, err)
	}
	names, err := txn.ParseAllow([]string{"bank.internal", "*.svc.local", "ledger"})
	if err != nil {
		t.Fatal(err)
	}
	nets, err := txn.ParseAllow([]string{"127.0.0.0/8", "::1", "bank.internal"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		a      *txn.Allow
		target string
		ok     bool
	}{
		{names, "http://bank.internal:8080/debit", true},
		{names, "https://BANK.internal/debit", true},
		{names, "http://a.svc.local/x", true},
		{names, "http://svc.local/x", false}, // the suffix needs a label before it
		{names, "http://evil.bank.internal.attacker.example/x", false},
		{names, "http://127.0.0.1:8080/x", false},
		{names, "http://169.254.169.254/latest/meta-data", false},
		{names, "rpc://ledger/bank.Ledger/Post", true},
		{names, "rpc://other/bank.Ledger/Post", false},
		{names, "rpc://10.0.0.1:7070/bank.Ledger/Post", false},
		{nets, "http://127.0.0.1:8080/x", true},
		{nets, "http://[::1]:8080/x", true},
		{nets, "http://169.254.169.254/latest/meta-data", false},
		{nets, "rpc://127.0.0.1:7070/bank.Ledger/Post", true},
		{nets, "http://localhost:8080/x", true}, // a name: its addresses are checked as it is dialled
		{nil, "http://169.254.169.254/x", true},
	} {
		err := c.a.Check(mustTarget(t, c.target))
		switch {
		case c.ok && err != nil:
			t.Errorf("%s: %v (want allowed)", c.target, err)
		case !c.ok && (err == nil || !errors.Is(err, txn.ErrBadRequest) || !strings.Contains(err.Error(), "allowed branch targets")):
			t.Errorf("%s: %v (want refused, naming the list)", c.target, err)
		}
	}
}

// A host name resolved at connection time must connect inside a listed
// network: localhost is refused by a list of 10.0.0.0/8 (the DNS-rebinding
// case), connected by one of loopback networks or by its name.
func TestAllowChecksAddressesAsItDials(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	addr := net.JoinHostPort("localhost", port)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := &net.Dialer{Timeout: 2 * time.Second}
	for _, c := range []struct {
		entries []string
		ok      bool
	}{
		{[]string{"10.0.0.0/8"}, false},
		{[]string{"127.0.0.0/8", "::1"}, true},
		{[]string{"localhost"}, true},
	} {
		a, err := txn.ParseAllow(c.entries)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := a.DialContext(d)(ctx, "tcp", addr)
		if conn != nil {
			conn.Close()
		}
		switch {
		case c.ok && err != nil:
			t.Errorf("%v: %v (want connected)", c.entries, err)
		case !c.ok && (err == nil || !strings.Contains(err.Error(), "outside the coordinator's allowed branch targets")):
			t.Errorf("%v: %v (want refused at the socket)", c.entries, err)
		}
	}
}
