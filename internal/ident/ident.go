// Package ident checks the names Tangram's components accept (apps,
// environments, jobs, users, keys): ASCII letters and digits plus a few
// punctuation bytes, within a length. It replaces regular expressions such
// as `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`, whose counted repetitions cost
// milliseconds to compile at every program start.
package ident

func alnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// Chars reports whether s has between min and max bytes, each an ASCII
// letter, a digit or one of the bytes of extra.
func Chars(s string, min, max int, extra string) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !alnum(c) && !in(c, extra) {
			return false
		}
	}
	return true
}

// Name reports whether s is 1 to max bytes that start with an ASCII letter
// or digit and go on with letters, digits or bytes of extra.
func Name(s string, max int, extra string) bool {
	return len(s) > 0 && alnum(s[0]) && Chars(s, 1, max, extra)
}

func in(c byte, set string) bool {
	for i := 0; i < len(set); i++ {
		if set[i] == c {
			return true
		}
	}
	return false
}
