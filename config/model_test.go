package config

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tangram-dev/tangram/internal/api"
)

func TestRulesMatch(t *testing.T) {
	co := Coord{"dev", "demo", "default", "application"}
	r := Rules{IPs: []string{"10.0.0.1", "192.168.1.0/24", "fd00::/8"}, Labels: []string{"canary"}, Instances: []string{"pod-1"}}
	cases := []struct {
		p    Peer
		want bool
	}{
		{Peer{IP: "10.0.0.1"}, true},
		{Peer{IP: "10.0.0.2"}, false},
		{Peer{IP: "192.168.1.200"}, true},
		{Peer{IP: "fd00::1"}, true},
		{Peer{IP: "not-an-ip"}, false},
		{Peer{Labels: []string{"x", "canary"}}, true},
		{Peer{Labels: []string{"stable"}}, false},
		{Peer{Instance: "pod-1"}, true},
		{Peer{Instance: "pod-2"}, false},
		{Peer{}, false},
	}
	for _, tc := range cases {
		if got := r.Match(co, tc.p); got != tc.want {
			t.Errorf("%+v: %v want %v", tc.p, got, tc.want)
		}
	}
	// Percentages: stable, monotonic (raising the percentage keeps earlier picks).
	var at10, at50 int
	for i := 0; i < 2000; i++ {
		p := Peer{Instance: "i" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('0'+i%10)) + string(rune(i))}
		in10 := Rules{Percent: 10}.Match(co, p)
		in50 := Rules{Percent: 50}.Match(co, p)
		if in10 && !in50 {
			t.Fatal("10% pick not in 50%")
		}
		if in10 != (Rules{Percent: 10}).Match(co, p) {
			t.Fatal("unstable")
		}
		if in10 {
			at10++
		}
		if in50 {
			at50++
		}
	}
	if at10 < 100 || at10 > 320 || at50 < 800 || at50 > 1200 {
		t.Fatalf("percent spread off: 10%%→%d 50%%→%d of 2000", at10, at50)
	}
	for _, bad := range []Rules{{IPs: []string{"300.1.1.1"}}, {IPs: []string{"10.0.0.0/99"}}, {Percent: 101}, {Percent: -1}, {Labels: []string{""}}} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestDiffAndOverlay(t *testing.T) {
	a := Snapshot{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}, {Key: "s", Value: "x", Secret: true}}
	b := Snapshot{{Key: "a", Value: "1"}, {Key: "b", Value: "3"}, {Key: "c", Value: "4"}}
	d := Diff(a, b)
	want := []Change{{Key: "b", Op: "modified", Old: "2", New: "3"}, {Key: "c", Op: "added", New: "4"}, {Key: "s", Op: "deleted", Old: Masked, Secret: true}}
	if len(d) != len(want) {
		t.Fatalf("diff %+v", d)
	}
	for i := range d {
		if d[i] != want[i] {
			t.Fatalf("diff[%d] = %+v want %+v", i, d[i], want[i])
		}
	}
	var o Overlay
	o.Put(SnapItem{Key: "b", Value: "9"})
	o.Remove("a")
	o.Put(SnapItem{Key: "a", Value: "back"}) // set after delete wins
	o.Remove("c")
	o.Forget("c")
	got := o.Apply(a)
	if v, _ := got.Get("a"); v.Value != "back" {
		t.Fatalf("overlay a: %+v", got)
	}
	if v, _ := got.Get("b"); v.Value != "9" {
		t.Fatalf("overlay b: %+v", got)
	}
	if len(o.Delete) != 0 || len(got) != 3 {
		t.Fatalf("overlay %+v -> %+v", o, got)
	}
}

// FuzzDecodeRequests feeds arbitrary bodies to the decoder of the config
// API's request types: it must answer with a 4xx API error or a value,
// never panic.
func FuzzDecodeRequests(f *testing.F) {
	for _, s := range []string{`{"env":"dev","app":"a","namespaces":[{"ns":"application","id":-1}]}`, `{"set":[{"key":"a","value":"b"}],"version":3}`,
		`{"rules":{"ips":["10.0.0.1"],"percent":5}}`, `{`, `[]`, `{"version":"x"}`, `{"a":1} {}`, ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		targets := []any{&WatchRequest{}, &Edit{}, &GrayEdit{}, &PublishRequest{}, &NamespaceSpec{}, &RollbackRequest{}}
		for _, v := range targets {
			r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
			err := api.Decode(r, v)
			if err == nil {
				continue
			}
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Status < 400 || ae.Status >= 500 {
				t.Fatalf("decode error is not a 4xx API error: %v", err)
			}
		}
		// Whatever decodes must validate without panicking.
		var w WatchRequest
		if api.Decode(httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body)), &w) == nil {
			for _, n := range w.Namespaces {
				_ = (Coord{w.Env, w.App, w.Cluster, n.NS}).Validate()
			}
		}
		var g GrayEdit
		if api.Decode(httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body)), &g) == nil && g.Rules != nil {
			_ = g.Rules.Validate()
			_ = g.Rules.Match(Coord{}, Peer{IP: "10.0.0.1", Instance: "x"})
		}
	})
}

func TestDescribeReleaseKey(t *testing.T) {
	for key, want := range map[string]string{
		"4.0.0.0": "release #4", "4.7.0.0": "release #4 + gray #7", "4.0.2.0": "release #4 + public #2",
		"4.0.2.9": "release #4 + public #2 + public gray #9", "odd": "release odd",
	} {
		if got := DescribeReleaseKey(key); got != want {
			t.Errorf("%s: %q, want %q", key, got, want)
		}
	}
}
