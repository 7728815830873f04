package shard

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/route.golden from the router's answers")

// describe prints a merge plan: how the units' rows combine.
func (m *mergePlan) describe(rd *Routed) string {
	if m == nil {
		return "merge: none (one node)"
	}
	ref := func(r ref) string {
		switch {
		case r.hidden > 0:
			return "hidden " + m.hidden[r.hidden-1].AsName.O
		case r.pos >= 0:
			return "#" + strconv.Itoa(r.pos+1)
		}
		return r.name
	}
	var parts []string
	var aggs []string
	for i, f := range m.fields {
		if f.agg != "" {
			aggs = append(aggs, fmt.Sprintf("#%d %s", i+1, f.agg))
		}
	}
	if len(aggs) > 0 {
		parts = append(parts, "aggregates "+strings.Join(aggs, ", "))
	}
	if len(m.group) > 0 {
		var g []string
		for _, r := range m.group {
			g = append(g, ref(r))
		}
		parts = append(parts, "group by "+strings.Join(g, ", "))
	}
	if m.distinct {
		parts = append(parts, "distinct")
	}
	if len(m.order) > 0 {
		var o []string
		for _, it := range m.order {
			s := ref(it.ref)
			if it.desc {
				s += " desc"
			}
			o = append(o, s)
		}
		parts = append(parts, "order by "+strings.Join(o, ", "))
	}
	if rd.count >= 0 {
		parts = append(parts, fmt.Sprintf("window %d+%d", rd.offset, rd.count))
	}
	if len(parts) == 0 {
		return "merge: concatenate"
	}
	return "merge: " + strings.Join(parts, "; ")
}

// The router's plans for the statements in testdata/route.golden (over
// examples/shard/sharding.yaml): each case is "> SQL" with its arguments
// after " -- ", then every unit and the merge plan. go test ./shard -run
// TestGolden -update rewrites the file after a deliberate change.
func TestGolden(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "examples", "shard", "sharding.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRules(b)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "route.golden")
	golden, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var cases, bad int
	var want strings.Builder
	var q string
	flush := func() {
		if q == "" {
			return
		}
		cases++
		got := plan(r, q)
		out.WriteString("> " + q + "\n" + got + "\n")
		if strings.TrimSpace(got) != strings.TrimSpace(want.String()) {
			bad++
			if !*update {
				t.Errorf("> %s\n got:\n%s\nwant:\n%s", q, got, want.String())
			}
		}
		want.Reset()
	}
	for _, line := range strings.Split(string(golden), "\n") {
		switch {
		case strings.HasPrefix(line, "#") || (line == "" && q == ""):
			flush()
			q = ""
			out.WriteString(line + "\n")
		case strings.HasPrefix(line, "> "):
			flush()
			q = strings.TrimPrefix(line, "> ")
		case line == "":
		default:
			want.WriteString(line + "\n")
		}
	}
	flush()
	if cases < 20 {
		t.Fatalf("%d cases in %s; the file or its reader is broken", cases, path)
	}
	if *update && bad > 0 {
		if err := os.WriteFile(path, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %d of %d cases in %s", bad, cases, path)
	}
}

// plan routes "SQL -- arg arg" and prints its units and merge plan, or
// its error.
func plan(r *Rules, line string) string {
	q, argText, _ := strings.Cut(line, " -- ")
	var args []any
	for _, a := range strings.Fields(argText) {
		if n, err := strconv.ParseInt(a, 10, 64); err == nil {
			args = append(args, n)
		} else {
			args = append(args, a)
		}
	}
	rd, err := NewRouter(r).Route(q, args)
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for _, u := range rd.Units {
		fmt.Fprintf(&b, "%s: %s %v\n", u.DataSource, u.SQL, u.Args)
	}
	if rd.Query {
		b.WriteString(rd.merge.describe(rd) + "\n")
	}
	return b.String()
}
