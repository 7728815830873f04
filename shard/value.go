package shard

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Kind is what a Value holds.
type Kind uint8

// The kinds of values a sharding column may hold.
const (
	KindNull Kind = iota
	KindInt
	KindText
	KindTime
)

// Value is a sharding column's value as the router sees it: an integer,
// text or a time. Values from SQL literals and arguments are converted by
// ValueOf.
type Value struct {
	kind Kind
	i    int64
	s    string
	t    time.Time
}

// Int, Text and Time make values.
func Int(i int64) Value      { return Value{kind: KindInt, i: i} }
func Text(s string) Value    { return Value{kind: KindText, s: s} }
func Time(t time.Time) Value { return Value{kind: KindTime, t: t} }

// ValueOf converts what database/sql and the SQL parser give (integers of
// any size, strings, byte slices, times) into a Value.
func ValueOf(v any) (Value, error) {
	switch x := v.(type) {
	case nil:
		return Value{}, nil
	case Value:
		return x, nil
	case int:
		return Int(int64(x)), nil
	case int8:
		return Int(int64(x)), nil
	case int16:
		return Int(int64(x)), nil
	case int32:
		return Int(int64(x)), nil
	case int64:
		return Int(x), nil
	case uint:
		return uintValue(uint64(x))
	case uint8:
		return Int(int64(x)), nil
	case uint16:
		return Int(int64(x)), nil
	case uint32:
		return Int(int64(x)), nil
	case uint64:
		return uintValue(x)
	case string:
		return Text(x), nil
	case []byte:
		return Text(string(x)), nil
	case time.Time:
		return Time(x), nil
	}
	return Value{}, fmt.Errorf("shard: a sharding value of type %T (want an integer, text or a time)", v)
}

func uintValue(u uint64) (Value, error) {
	if u > 1<<63-1 {
		return Value{}, fmt.Errorf("shard: sharding value %d is beyond a signed 64-bit integer", u)
	}
	return Int(int64(u)), nil
}

// Kind reports what v holds.
func (v Value) Kind() Kind { return v.kind }

// Int64 is v as an integer: an integer, or text of decimal digits (a key
// quoted in SQL is still the same key).
func (v Value) Int64() (int64, error) {
	switch v.kind {
	case KindInt:
		return v.i, nil
	case KindText:
		i, err := strconv.ParseInt(strings.TrimSpace(v.s), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("sharding value %q is not an integer", v.s)
		}
		return i, nil
	case KindTime:
		return 0, fmt.Errorf("sharding value %s is a time, not an integer", v.t.Format(time.RFC3339))
	}
	return 0, fmt.Errorf("sharding value is NULL, not an integer")
}

// AsTime is v as a time: a time, or text in one of the layouts
// "2006-01-02 15:04:05", "2006-01-02T15:04:05Z07:00" (RFC 3339) or
// "2006-01-02" (read in UTC).
func (v Value) AsTime() (time.Time, error) {
	switch v.kind {
	case KindTime:
		return v.t, nil
	case KindText:
		for _, l := range []string{"2006-01-02 15:04:05", time.RFC3339Nano, "2006-01-02 15:04:05.999999", "2006-01-02"} {
			if t, err := time.ParseInLocation(l, strings.TrimSpace(v.s), time.UTC); err == nil {
				return t, nil
			}
		}
		return time.Time{}, fmt.Errorf("sharding value %q is not a time (want 2006-01-02 15:04:05, RFC 3339 or 2006-01-02)", v.s)
	}
	return time.Time{}, fmt.Errorf("sharding value %s is not a time", v)
}

// String is v in text (how a hash and a template see it).
func (v Value) String() string {
	switch v.kind {
	case KindInt:
		return strconv.FormatInt(v.i, 10)
	case KindText:
		return v.s
	case KindTime:
		return v.t.Format("2006-01-02 15:04:05")
	}
	return "NULL"
}

// compare orders two values of one column: integers numerically (text of
// digits too), times by instant, other text byte-wise.
func compare(a, b Value) (int, error) {
	if a.kind == KindTime || b.kind == KindTime {
		ta, err := a.AsTime()
		if err != nil {
			return 0, err
		}
		tb, err := b.AsTime()
		if err != nil {
			return 0, err
		}
		return ta.Compare(tb), nil
	}
	ia, errA := a.Int64()
	ib, errB := b.Int64()
	if errA == nil && errB == nil {
		switch {
		case ia < ib:
			return -1, nil
		case ia > ib:
			return 1, nil
		}
		return 0, nil
	}
	return strings.Compare(a.String(), b.String()), nil
}
