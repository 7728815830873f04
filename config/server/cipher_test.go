package server

import (
	"bytes"
	"strings"
	"testing"
)

func TestCipher(t *testing.T) {
	c, err := NewCipher(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	const plain = "correct-horse-battery-staple"
	s1, s2 := c.Seal(plain), c.Seal(plain)
	if s1 == s2 || strings.Contains(s1, plain) || strings.Contains(s1, "horse") {
		t.Fatalf("seal not randomized or leaks: %s %s", s1, s2)
	}
	if p, err := c.Open(s1); err != nil || p != plain {
		t.Fatalf("open: %q %v", p, err)
	}
	other, _ := NewCipher(bytes.Repeat([]byte{2}, 32))
	if _, err := other.Open(s1); err == nil || !strings.Contains(err.Error(), "key") {
		t.Fatalf("wrong key: %v", err)
	}
	for _, bad := range []string{"plain", encPrefix + "!!", encPrefix + "AAAA"} {
		if _, err := c.Open(bad); err == nil {
			t.Errorf("opened %q", bad)
		}
	}
	if _, err := NewCipher([]byte("short")); err == nil {
		t.Fatal("short key accepted")
	}
	if _, err := ParseKey(strings.Repeat("ab", 32)); err != nil {
		t.Fatal(err)
	}
}
