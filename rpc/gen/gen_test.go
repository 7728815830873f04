package gen

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden file")

func TestGolden(t *testing.T) {
	res, err := Generate(Options{Dir: "testdata/greet"})
	if err != nil {
		t.Fatal(err)
	}
	if res.File != "greeter_rpc.go" || len(res.Types) != 1 {
		t.Fatalf("%s %v", res.File, res.Types)
	}
	const golden = "testdata/greet.golden"
	if *update {
		os.WriteFile(golden, res.Source, 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != string(res.Source) {
		t.Fatalf("output differs from %s (go test ./rpc/gen -update to accept):\n%s", golden, res.Source)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		opts Options
		want string
	}{
		{Options{Dir: "testdata/greet", Types: []string{"NotRPC"}}, "NotRPC.String: want func(ctx context.Context"},
		{Options{Dir: "testdata/greet", Types: []string{"Missing"}}, "no interface Missing"},
		{Options{Dir: "testdata/nope"}, "no such file"},
		{Options{Dir: "testdata/greet", Service: "x"}, "--service needs exactly one --type"},
	}
	for _, c := range cases {
		_, err := Generate(c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.opts, err, c.want)
		}
	}
}
