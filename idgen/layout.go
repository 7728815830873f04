// Package idgen makes unique 64-bit IDs: snowflake generators over a
// configurable bit layout (Twitter's, Sonyflake's, and the "seed" variant
// that carries the order type, machine and the database and table a row
// lives in, so the sharding layer can route by ID alone), and Decode to
// read an ID's fields back. Docs: docs/idgen.md.
package idgen

import (
	"fmt"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/errcode"
)

// Errors.
var (
	// ErrLayout: a layout that is not valid.
	ErrLayout = errcode.New(errcode.BadRequest, "idgen: bad layout")
	// ErrClockBackwards: the clock went back further than the generator
	// may bridge; no ID is issued until it has caught up.
	ErrClockBackwards = errcode.New(errcode.Unavailable, "idgen: clock moved backwards")
	// ErrExhausted: the time field has no room left after the epoch.
	ErrExhausted = errcode.New(errcode.Unavailable, "idgen: time field exhausted")
	// ErrField: a field value outside its bits, or an unknown field.
	ErrField = errcode.New(errcode.BadRequest, "idgen: bad field value")
)

// Names of the two fields every layout has.
const (
	FieldTime = "time"
	FieldSeq  = "seq"
)

// Field is one part of an ID.
type Field struct {
	Name string `json:"name" yaml:"name"`
	Bits int    `json:"bits" yaml:"bits"`
}

// Layout is how an ID's 63 bits (the sign bit stays 0) are split, most
// significant field first. It must have a "time" field (Unit ticks since
// Epoch) and a "seq" field; the others are the generator's constants
// (a worker or machine ID) or values given per ID (an order type, a
// database suffix).
type Layout struct {
	Name   string        `json:"name" yaml:"name"`
	Epoch  time.Time     `json:"epoch" yaml:"epoch"`
	Unit   time.Duration `json:"unit" yaml:"unit"`
	Fields []Field       `json:"fields" yaml:"fields"`
}

// DefaultEpoch is the layouts' epoch: 2024-01-01 UTC.
var DefaultEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Twitter is Twitter's snowflake: 41 bits of milliseconds (69 years), 5
// bits of datacenter, 5 of worker, 12 of sequence (4,096 IDs per ms).
func Twitter() Layout {
	return Layout{Name: "twitter", Epoch: DefaultEpoch, Unit: time.Millisecond,
		Fields: []Field{{FieldTime, 41}, {"datacenter", 5}, {"worker", 5}, {FieldSeq, 12}}}
}

// Sonyflake is Sonyflake's: 39 bits of 10 ms (174 years), 8 of sequence,
// 16 of machine.
func Sonyflake() Layout {
	return Layout{Name: "sonyflake", Epoch: DefaultEpoch, Unit: 10 * time.Millisecond,
		Fields: []Field{{FieldTime, 39}, {FieldSeq, 8}, {"machine", 16}}}
}

// Seed is the snowflake variant that says where its row lives, in 63
// bits: time (40 bits of ms, 34 years), sequence (8: 256 per ms), order
// type (3), machine (6), and the database (2) and table (4) suffixes of
// the row — 4 databases × 16 tables, read back by the sharding layer from
// the ID. (Its usual decimal form, 15 + 4 + 2 + 7 + 2 + 2 digits, does not
// fit 64 bits; these are its fields in binary.)
func Seed() Layout {
	return Layout{Name: "seed", Epoch: DefaultEpoch, Unit: time.Millisecond,
		Fields: []Field{{FieldTime, 40}, {FieldSeq, 8}, {"type", 3}, {"machine", 6}, {"db", 2}, {"table", 4}}}
}

// Layouts are the named layouts.
func Layouts() []Layout { return []Layout{Twitter(), Sonyflake(), Seed()} }

// LayoutByName returns a named layout.
func LayoutByName(name string) (Layout, error) {
	var names []string
	for _, l := range Layouts() {
		if l.Name == name {
			return l, nil
		}
		names = append(names, l.Name)
	}
	return Layout{}, fmt.Errorf("%w: no layout %q (want %s)", ErrLayout, name, strings.Join(names, ", "))
}

// Validate checks the layout: bits summing to 63, each field 1..62 bits
// with a unique name, a time and a seq field, a positive unit.
func (l Layout) Validate() error {
	if l.Unit <= 0 {
		return fmt.Errorf("%w %q: unit must be positive", ErrLayout, l.Name)
	}
	sum := 0
	seen := map[string]bool{}
	for _, f := range l.Fields {
		if f.Name == "" || seen[f.Name] {
			return fmt.Errorf("%w %q: field names must be set and unique (%q)", ErrLayout, l.Name, f.Name)
		}
		if f.Bits < 1 || f.Bits > 62 {
			return fmt.Errorf("%w %q: field %s has %d bits (want 1..62)", ErrLayout, l.Name, f.Name, f.Bits)
		}
		seen[f.Name] = true
		sum += f.Bits
	}
	if !seen[FieldTime] || !seen[FieldSeq] {
		return fmt.Errorf("%w %q: a layout needs a %q and a %q field", ErrLayout, l.Name, FieldTime, FieldSeq)
	}
	if sum != 63 {
		return fmt.Errorf("%w %q: fields sum to %d bits, want 63", ErrLayout, l.Name, sum)
	}
	return nil
}

// shift is where field i's lowest bit sits.
func (l Layout) shift(i int) int {
	s := 0
	for _, f := range l.Fields[i+1:] {
		s += f.Bits
	}
	return s
}

func (l Layout) index(name string) int {
	for i, f := range l.Fields {
		if f.Name == name {
			return i
		}
	}
	return -1
}

// Max is the largest value field name can hold (-1 if no such field).
func (l Layout) Max(name string) int64 {
	if i := l.index(name); i >= 0 {
		return 1<<l.Fields[i].Bits - 1
	}
	return -1
}

// Field reads one field of id (ErrField for an unknown name).
func (l Layout) Field(id int64, name string) (int64, error) {
	i := l.index(name)
	if i < 0 {
		return 0, fmt.Errorf("%w: layout %q has no field %q", ErrField, l.Name, name)
	}
	return id >> l.shift(i) & (1<<l.Fields[i].Bits - 1), nil
}

// Decoded is an ID read back into its fields.
type Decoded struct {
	ID     int64        `json:"id"`
	Layout string       `json:"layout"`
	Time   time.Time    `json:"time"`
	Fields []FieldValue `json:"fields"`
}

// FieldValue is one field's value.
type FieldValue struct {
	Name  string `json:"name"`
	Value int64  `json:"value"`
}

// Get returns the value of field name, and whether the ID has it.
func (d Decoded) Get(name string) (int64, bool) {
	for _, f := range d.Fields {
		if f.Name == name {
			return f.Value, true
		}
	}
	return 0, false
}

// Decode reads id back into its fields; its time is Epoch + time × Unit.
func (l Layout) Decode(id int64) (Decoded, error) {
	if err := l.Validate(); err != nil {
		return Decoded{}, err
	}
	if id < 0 {
		return Decoded{}, fmt.Errorf("%w: %d is negative: not an ID of a 63-bit layout", ErrField, id)
	}
	d := Decoded{ID: id, Layout: l.Name}
	for i, f := range l.Fields {
		v := id >> l.shift(i) & (1<<f.Bits - 1)
		d.Fields = append(d.Fields, FieldValue{f.Name, v})
		if f.Name == FieldTime {
			d.Time = l.Epoch.Add(time.Duration(v) * l.Unit)
		}
	}
	return d, nil
}

// Compose builds an ID from field values (missing fields are 0); every
// value must fit its bits.
func (l Layout) Compose(vals map[string]int64) (int64, error) {
	if err := l.Validate(); err != nil {
		return 0, err
	}
	var id int64
	for name := range vals {
		if l.index(name) < 0 {
			return 0, fmt.Errorf("%w: layout %q has no field %q", ErrField, l.Name, name)
		}
	}
	for i, f := range l.Fields {
		v := vals[f.Name]
		if v < 0 || v > 1<<f.Bits-1 {
			return 0, fmt.Errorf("%w: %s = %d does not fit %d bits", ErrField, f.Name, v, f.Bits)
		}
		id |= v << l.shift(i)
	}
	return id, nil
}
