package txn_test

import (
	"strings"
	"testing"

	"github.com/tangram-dev/tangram/txn"
)

func TestParseTarget(t *testing.T) {
	for in, want := range map[string]txn.Target{
		"http://bank:8080/debit":                        {URL: "http://bank:8080/debit"},
		"rpc://bank-a/bank.Accounts/Debit":              {Host: "bank-a", Method: "bank.Accounts/Debit"},
		"rpc://127.0.0.1:7070/bank/x":                   {Host: "127.0.0.1:7070", Method: "bank/x"},
		"rpc://bank-a/b/m?namespace=prod&group=payment": {Host: "bank-a", Namespace: "prod", Group: "payment", Method: "b/m"},
	} {
		got, err := txn.ParseTarget(in)
		if err != nil || got != want {
			t.Errorf("%s: %+v %v, want %+v", in, got, err, want)
		}
	}
	if tg, _ := txn.ParseTarget("rpc://127.0.0.1:7070/b/m"); !tg.Direct() {
		t.Error("host:port is not direct")
	}
	if tg, _ := txn.ParseTarget("rpc://bank-a/b/m"); tg.Direct() {
		t.Error("a service name is direct")
	}
	for _, bad := range []string{"", "ftp://x/y", "rpc://bank-a", "rpc://bank-a/b", "rpc:///b/m", "rpc://a/b/c/d", "http://", "bank/x"} {
		if _, err := txn.ParseTarget(bad); err == nil || !strings.Contains(err.Error(), "want an http") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// FuzzParseTarget: any string gets a target or a clear error, never a
// panic, and an accepted RPC target has a service/method pair.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"rpc://bank-a/b/m?group=g", "https://x/y", "rpc://[::1]:80/a/b", "rpc://%zz/a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := txn.ParseTarget(s)
		if err != nil {
			return
		}
		if tg.RPC() {
			svc, m, ok := strings.Cut(tg.Method, "/")
			if !ok || svc == "" || m == "" || tg.Host == "" {
				t.Fatalf("%q accepted as %+v", s, tg)
			}
			_ = tg.Direct()
		} else if tg.URL != s {
			t.Fatalf("%q accepted as %+v", s, tg)
		}
	})
}
