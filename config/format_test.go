package config

import (
	"errors"
	"strings"
	"testing"
)

func TestParseProperties(t *testing.T) {
	cases := []struct {
		name, in string
		want     []KV
		errLine  int
	}{
		{"basic", "a=1\nb = 2\nc:3\nd 4\n", []KV{{"a", "1"}, {"b", "2"}, {"c", "3"}, {"d", "4"}}, 0},
		{"comments and blanks", "# c\n! c\n\n  a=1\n", []KV{{"a", "1"}}, 0},
		{"continuation", "a=one \\\n    two\nb=x\n", []KV{{"a", "one two"}, {"b", "x"}}, 0},
		{"escaped backslash is not continuation", "a=c:\\\\\nb=1\n", []KV{{"a", `c:\`}, {"b", "1"}}, 0},
		{"escapes", `a=tab\there\nnl\u0041`, []KV{{"a", "tab\there\nnlA"}}, 0},
		{"escaped separator in key", `a\=b=c`, nil, 1},
		{"empty value", "a=\n", []KV{{"a", ""}}, 0},
		{"last wins", "a=1\na=2\n", []KV{{"a", "2"}}, 0},
		{"bad unicode escape", "a=1\nb=\\uZZZZ\n", nil, 2},
		{"bad key", "a=1\n\nb*c=2\n", nil, 3},
		{"empty key", "=x\n", nil, 1},
		{"invalid utf8", "a=1\nb=\xff\n", nil, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseProperties(tc.in)
			if tc.errLine > 0 {
				var se *SyntaxError
				if !errors.As(err, &se) || se.Line != tc.errLine || !errors.Is(err, ErrInvalid) {
					t.Fatalf("want error at line %d, got %v", tc.errLine, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %+v want %+v", got, tc.want)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		f       Format
		in      string
		errLine int
	}{
		{YAML, "a: 1\nb:\n  - x\n", 0},
		{YAML, "", 0},
		{YAML, "a: 1\n---\nb: 2\n", 0},
		{YAML, "x: 1\ny: 2\nz: [\n", 3},
		{YAML, "a: 1\nb: \"unterminated\nc: 2\n", 2},
		{YAML, "a: 1\n  b: 2\n", 2},
		{YAML, "a: 1\na: 2\n", 2},
		{JSON, `{"a": 1}`, 0},
		{JSON, "{\n\"a\": 1,\n}", 3},
		{JSON, "{\"a\": 1}\n{\"b\": 2}", 2},
		{JSON, "   ", 1},
		{JSON, "{\n\"a\": [1,", 2},
		{Text, "anything: [ at all", 0},
		{Text, "bad \xff utf8", 1},
	}
	for _, tc := range cases {
		err := Validate(tc.f, tc.in)
		if tc.errLine == 0 {
			if err != nil {
				t.Errorf("%s %q: unexpected %v", tc.f, tc.in, err)
			}
			continue
		}
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%s %q: want syntax error, got %v", tc.f, tc.in, err)
			continue
		}
		if se.Line != tc.errLine {
			t.Errorf("%s %q: error at line %d (%v), want %d", tc.f, tc.in, se.Line, err, tc.errLine)
		}
		if !strings.Contains(err.Error(), "line") {
			t.Errorf("%s: message does not name the line: %v", tc.f, err)
		}
	}
}

func TestPropertiesRoundTrip(t *testing.T) {
	kvs := []KV{{"a", "plain"}, {"b.c", " leading space"}, {"d", "multi\nline\ttab"}, {"e", `back\slash`}, {"f", "#not comment"}, {"g", "x=y:z"}, {"h", "日本語"}}
	doc := FormatProperties(kvs)
	got, err := ParseProperties(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(kvs) {
		t.Fatalf("got %+v", got)
	}
	for i := range kvs {
		if got[i] != kvs[i] {
			t.Errorf("round trip %d: got %+v want %+v\n%s", i, got[i], kvs[i], doc)
		}
	}
}

func TestFlattenDocument(t *testing.T) {
	kvs, err := FlattenDocument(YAML, "a:\n  b: 1\n  c: [x, {d: true}]\ne: null\n")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a.b": "1", "a.c[0]": "x", "a.c[1].d": "true", "e": ""}
	if len(kvs) != len(want) {
		t.Fatalf("got %+v", kvs)
	}
	for _, kv := range kvs {
		if want[kv.Key] != kv.Value {
			t.Errorf("%s = %q want %q", kv.Key, kv.Value, want[kv.Key])
		}
	}
	if _, err := FlattenDocument(JSON, "[1,2]"); err == nil {
		t.Fatal("top-level array accepted")
	}
	if _, err := FlattenDocument(JSON, `{"a": 1.5e3}`); err != nil {
		t.Fatal(err)
	}
}

func TestFormatFromName(t *testing.T) {
	for name, want := range map[string]Format{"application": Properties, "db.yaml": YAML, "x.yml": YAML, "svc.json": JSON, "readme.txt": Text, "a.b.c": Properties} {
		if got := FormatFromName(name); got != want {
			t.Errorf("%s: %s want %s", name, got, want)
		}
	}
}

// FuzzParseProperties: any input either parses into valid keys that
// survive a format/parse round trip, or fails with a line-numbered error.
func FuzzParseProperties(f *testing.F) {
	for _, s := range []string{"a=1\n", "a=one \\\n two", `a\=b=c`, "# c\n!c\n", "a=\\u0041", "=x", "a:b c", "\xff", "a=\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		kvs, err := ParseProperties(doc)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Line < 1 {
				t.Fatalf("error without a line: %v", err)
			}
			return
		}
		for _, kv := range kvs {
			if ValidKey(kv.Key) != nil {
				t.Fatalf("invalid key accepted: %q", kv.Key)
			}
		}
		again, err := ParseProperties(FormatProperties(kvs))
		if err != nil {
			t.Fatalf("re-parse of formatted output failed: %v", err)
		}
		if len(again) != len(kvs) {
			t.Fatalf("round trip changed count %d -> %d", len(kvs), len(again))
		}
		for i := range kvs {
			if kvs[i] != again[i] {
				t.Fatalf("round trip changed %+v -> %+v", kvs[i], again[i])
			}
		}
	})
}

// FuzzValidate: yaml/json validation never panics and errors carry a line.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"a: 1", "{\"a\":1}", "a: [1", "{", "- x\n- y", "\t", "a: &x 1\nb: *x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		for _, fm := range []Format{YAML, JSON} {
			err := Validate(fm, doc)
			var se *SyntaxError
			if err != nil && !errors.As(err, &se) {
				t.Fatalf("%s: error is not a SyntaxError: %v", fm, err)
			}
		}
	})
}
