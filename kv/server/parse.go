package server

import (
	"math"
	"strconv"
	"strings"
)

// parseInt parses a 64-bit integer as Redis's string2ll does: an optional
// minus, digits, no plus sign, no blanks, no leading zeros.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	if len(b) == 1 && b[0] == '0' {
		return 0, true
	}
	s := b
	neg := false
	if s[0] == '-' {
		neg = true
		s = s[1:]
		if len(s) == 0 {
			return 0, false
		}
	}
	if s[0] < '1' || s[0] > '9' {
		return 0, false
	}
	var v uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		if v > (math.MaxUint64-9)/10 {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	if neg {
		if v > 1<<63 {
			return 0, false
		}
		return -int64(v), true
	}
	if v > math.MaxInt64 {
		return 0, false
	}
	return int64(v), true
}

// parseFloat parses a float as Redis's strtold-based parser does: no
// blanks, "inf"/"+inf"/"-inf" allowed, NaN refused.
func parseFloat(b []byte) (float64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	if b[0] == ' ' || b[len(b)-1] == ' ' {
		return 0, false
	}
	s := strings.ToLower(string(b))
	switch s {
	case "inf", "+inf", "infinity", "+infinity":
		return math.Inf(1), true
	case "-inf", "-infinity":
		return math.Inf(-1), true
	}
	if strings.ContainsAny(s, "_") || strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "-0x") || strings.HasPrefix(s, "+0x") {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil { // syntax, or out of range (strtold's ERANGE)
		return 0, false
	}
	if math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

func eqFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// intArg parses args[i] as an integer, replying with Redis's error when it
// is not one.
func (x *ctx) intArg(b []byte) (int64, bool) {
	v, ok := parseInt(b)
	if !ok {
		x.err(errNotInt)
	}
	return v, ok
}

func (x *ctx) floatArg(b []byte) (float64, bool) {
	v, ok := parseFloat(b)
	if !ok {
		x.err(errNotFloat)
	}
	return v, ok
}
