package resp

import (
	"math"
	"strconv"
)

// The append functions encode one reply element onto b. Where RESP2 and
// RESP3 differ, the function takes v3 (the connection said HELLO 3).

// AppendSimple appends a simple string (+OK).
func AppendSimple(b []byte, s string) []byte {
	b = append(b, '+')
	b = append(b, s...)
	return append(b, '\r', '\n')
}

// AppendError appends an error reply; msg starts with its code (ERR,
// WRONGTYPE, …). CR and LF in msg become spaces.
func AppendError(b []byte, msg string) []byte {
	b = append(b, '-')
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return append(b, '\r', '\n')
}

// AppendInt appends an integer reply.
func AppendInt(b []byte, n int64) []byte {
	b = append(b, ':')
	b = strconv.AppendInt(b, n, 10)
	return append(b, '\r', '\n')
}

// AppendBulk appends a bulk string.
func AppendBulk(b []byte, v []byte) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(v)), 10)
	b = append(b, '\r', '\n')
	b = append(b, v...)
	return append(b, '\r', '\n')
}

// AppendBulkString appends a bulk string.
func AppendBulkString(b []byte, v string) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(v)), 10)
	b = append(b, '\r', '\n')
	b = append(b, v...)
	return append(b, '\r', '\n')
}

// AppendNull appends the null reply: $-1 in RESP2, _ in RESP3.
func AppendNull(b []byte, v3 bool) []byte {
	if v3 {
		return append(b, '_', '\r', '\n')
	}
	return append(b, '$', '-', '1', '\r', '\n')
}

// AppendNullArray appends a null array: *-1 in RESP2, _ in RESP3.
func AppendNullArray(b []byte, v3 bool) []byte {
	if v3 {
		return append(b, '_', '\r', '\n')
	}
	return append(b, '*', '-', '1', '\r', '\n')
}

func appendHeader(b []byte, c byte, n int) []byte {
	b = append(b, c)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '\r', '\n')
}

// AppendArray appends an array header of n elements.
func AppendArray(b []byte, n int) []byte { return appendHeader(b, '*', n) }

// AppendMap appends a map header of n pairs: %n in RESP3, *2n in RESP2.
func AppendMap(b []byte, n int, v3 bool) []byte {
	if v3 {
		return appendHeader(b, '%', n)
	}
	return appendHeader(b, '*', 2*n)
}

// AppendSet appends a set header: ~n in RESP3, *n in RESP2.
func AppendSet(b []byte, n int, v3 bool) []byte {
	if v3 {
		return appendHeader(b, '~', n)
	}
	return appendHeader(b, '*', n)
}

// AppendPush appends a push header (pub/sub messages): >n in RESP3, *n in RESP2.
func AppendPush(b []byte, n int, v3 bool) []byte {
	if v3 {
		return appendHeader(b, '>', n)
	}
	return appendHeader(b, '*', n)
}

// AppendDouble appends a double: ,x in RESP3, a bulk string in RESP2, in
// Redis's formatting (%.17g, inf, -inf).
func AppendDouble(b []byte, f float64, v3 bool) []byte {
	var tmp [32]byte
	s := FormatFloat(tmp[:0], f)
	if v3 {
		b = append(b, ',')
		b = append(b, s...)
		return append(b, '\r', '\n')
	}
	return AppendBulk(b, s)
}

// AppendBool appends a boolean: #t/#f in RESP3, :1/:0 in RESP2.
func AppendBool(b []byte, t, v3 bool) []byte {
	if v3 {
		if t {
			return append(b, '#', 't', '\r', '\n')
		}
		return append(b, '#', 'f', '\r', '\n')
	}
	if t {
		return AppendInt(b, 1)
	}
	return AppendInt(b, 0)
}

// AppendVerbatim appends a verbatim string (=len\r\ntxt:…) in RESP3 and a
// bulk string in RESP2.
func AppendVerbatim(b []byte, s string, v3 bool) []byte {
	if !v3 {
		return AppendBulkString(b, s)
	}
	b = appendHeader(b, '=', len(s)+4)
	b = append(b, "txt:"...)
	b = append(b, s...)
	return append(b, '\r', '\n')
}

// FormatFloat formats f as Redis replies with scores and INCRBYFLOAT-style
// values: the shortest representation that reads back to the same value,
// "inf" and "-inf" for infinities.
func FormatFloat(b []byte, f float64) []byte {
	switch {
	case math.IsInf(f, 1):
		return append(b, "inf"...)
	case math.IsInf(f, -1):
		return append(b, "-inf"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

// AppendCommand encodes a command as a RESP array of bulk strings (the form
// the append-only file keeps).
func AppendCommand(b []byte, args ...[]byte) []byte {
	b = AppendArray(b, len(args))
	for _, a := range args {
		b = AppendBulk(b, a)
	}
	return b
}
