package resp

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
)

func TestReadValue(t *testing.T) {
	in := "+OK\r\n-ERR bad\r\n:42\r\n$5\r\nhe\r\nl\r\n$-1\r\n_\r\n#t\r\n,1.5\r\n" +
		">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n" +
		"%1\r\n+k\r\n:1\r\n|1\r\n+meta\r\n+x\r\n:7\r\n>2\r\n$10\r\ninvalidate\r\n_\r\n"
	r := NewReader(strings.NewReader(in), 16)
	want := []string{"+OK", "-ERR bad", ":42", "$he\r\nl", "$null", "_null", "#1", ",1.5", ">[invalidate [a b]]", "%[k 1]", ":7", ">[invalidate null]"}
	for i, w := range want {
		v, err := r.ReadValue()
		if err != nil {
			t.Fatalf("value %d: %v", i, err)
		}
		if got := show(v); got != w {
			t.Fatalf("value %d: %q, want %q", i, got, w)
		}
	}
}

func show(v Value) string {
	switch {
	case v.Type == '>' || v.Type == '*' || v.Type == '%':
		parts := []string{}
		for _, e := range v.Elems {
			parts = append(parts, show(e)[1:]) // without the type byte
		}
		return string(v.Type) + "[" + strings.Join(parts, " ") + "]"
	case v.Null:
		return string(v.Type) + "null"
	case v.Type == ':' || v.Type == '#':
		return string(v.Type) + strconv.FormatInt(v.Int, 10)
	default:
		return string(v.Type) + string(v.Str)
	}
}

// Limits hold for replies: a huge declared bulk or aggregate is refused
// before anything is allocated for it, and nesting is bounded.
func TestReadValueLimits(t *testing.T) {
	for _, in := range []string{
		"$999999999999\r\n",
		"*99999999999\r\n",
		strings.Repeat("*1\r\n", 40) + ":1\r\n",
		"?\r\n",
		":x\r\n",
		"#maybe\r\n",
	} {
		r := NewReader(strings.NewReader(in), 64)
		if _, err := r.ReadValue(); err == nil || !IsProtocol(err) {
			t.Fatalf("%q: %v, want a protocol error", in, err)
		}
	}
}

func FuzzReadValue(f *testing.F) {
	f.Add([]byte(">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nkey\r\n"))
	f.Add([]byte("%1\r\n+a\r\n*2\r\n:1\r\n_\r\n"))
	f.Add([]byte("|1\r\n+a\r\n+b\r\n$3\r\nabc\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b), 64)
		r.Limits = Limits{MaxBulk: 1 << 16, MaxArgs: 1 << 10, MaxRequest: 1 << 20}
		for range 8 {
			if _, err := r.ReadValue(); err != nil {
				return
			}
		}
	})
}
