package resp

import (
	"strconv"
)

// Value is one reply as a client reads it (RESP2 and RESP3): Type is the
// type byte ('+', '-', ':', '$', '*', '%', '~', '>', '_', ',', '#', '(',
// '='); Str holds simple, error, bulk, verbatim, double and big-number
// text; Int an integer or boolean (1/0); Elems an aggregate's elements
// (a map's keys and values alternate); Null a null of any kind.
type Value struct {
	Type  byte
	Str   []byte
	Int   int64
	Elems []Value
	Null  bool
}

// maxDepth bounds nested aggregates.
const maxDepth = 16

// ReadValue reads the next reply, its bulk strings copied (they stay
// valid). Attributes ('|') are read and dropped. Sizes are bounded by the
// Reader's Limits: MaxBulk per string, MaxArgs elements per aggregate,
// MaxRequest bytes in all.
func (r *Reader) ReadValue() (Value, error) {
	budget := r.limit(r.MaxRequest, DefaultMaxRequest)
	return r.value(0, &budget)
}

func (r *Reader) value(depth int, budget *int) (Value, error) {
	if depth > maxDepth {
		return Value{}, protoErr("replies nested deeper than %d", maxDepth)
	}
	t, err := r.br.ReadByte()
	if err != nil {
		return Value{}, err
	}
	ln, err := r.line(r.limit(r.MaxInline, DefaultMaxInline), "reply line")
	if err != nil {
		return Value{}, noEOF(err)
	}
	v := Value{Type: t}
	switch t {
	case '+', '-', ',', '(':
		v.Str = append([]byte(nil), ln...)
		*budget -= len(ln)
	case ':':
		if v.Int, err = strconv.ParseInt(string(ln), 10, 64); err != nil {
			return Value{}, protoErr("invalid integer %q", ln)
		}
	case '#':
		switch string(ln) {
		case "t":
			v.Int = 1
		case "f":
		default:
			return Value{}, protoErr("invalid boolean %q", ln)
		}
	case '_':
		v.Null = true
	case '$', '=', '!':
		n, err := strconv.ParseInt(string(ln), 10, 64)
		if err != nil || n < -1 || n > int64(r.limit(r.MaxBulk, DefaultMaxBulk)) {
			return Value{}, protoErr("invalid bulk length %q", ln)
		}
		if n == -1 {
			v.Null = true
			break
		}
		if *budget -= int(n); *budget < 0 {
			return Value{}, protoErr("reply bigger than the limit")
		}
		r.arena = r.arena[:0]
		if err := r.readBulk(int(n)); err != nil {
			return Value{}, noEOF(err)
		}
		v.Str = append([]byte(nil), r.arena...)
	case '*', '%', '~', '>', '|':
		n, err := strconv.ParseInt(string(ln), 10, 64)
		if err != nil || n < -1 || n > int64(r.limit(r.MaxArgs, DefaultMaxArgs)) {
			return Value{}, protoErr("invalid aggregate length %q", ln)
		}
		if n == -1 {
			v.Null = true
			break
		}
		if t == '%' || t == '|' {
			n *= 2
		}
		if *budget -= int(n) * 16; *budget < 0 { // each element costs at least its header
			return Value{}, protoErr("reply bigger than the limit")
		}
		elems := make([]Value, 0, min(n, 1024))
		for range n {
			e, err := r.value(depth+1, budget)
			if err != nil {
				return Value{}, noEOF(err)
			}
			elems = append(elems, e)
		}
		if t == '|' { // an attribute: its value follows
			return r.value(depth, budget)
		}
		v.Elems = elems
	default:
		return Value{}, protoErr("unknown reply type '%s'", printable(t))
	}
	return v, nil
}
