package ident

import (
	"regexp"
	"strings"
	"testing"
)

// TestMatchesTheExpressions checks each check against the regular
// expression it replaces, on edge cases and every byte.
func TestMatchesTheExpressions(t *testing.T) {
	cases := []struct {
		re    string
		check func(string) bool
	}{
		{`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`, func(s string) bool { return Name(s, 64, "._-") }},
		{`^[A-Za-z0-9._\-/\[\]@$]{1,191}$`, func(s string) bool { return Chars(s, 1, 191, "._-/[]@$") }},
		{`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`, func(s string) bool { return Name(s, 128, "._:-") }},
		{`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`, func(s string) bool { return Name(s, 64, "._@-") }},
	}
	inputs := []string{"", "a", "A9", "-a", ".a", "a-b.c_d", "a:b", "a@b", "a/b", "[x]", "$", "é", "a b", "a\n",
		strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 65), strings.Repeat("b", 127),
		strings.Repeat("b", 128), strings.Repeat("b", 129), strings.Repeat("c", 191), strings.Repeat("c", 192)}
	for c := 0; c < 256; c++ {
		inputs = append(inputs, string([]byte{byte(c)}), "a"+string([]byte{byte(c)}))
	}
	for _, tc := range cases {
		re := regexp.MustCompile(tc.re)
		for _, in := range inputs {
			if want, got := re.MatchString(in), tc.check(in); want != got {
				t.Errorf("%s on %q: regexp %v, check %v", tc.re, in, want, got)
			}
		}
	}
}
