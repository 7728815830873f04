package store

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
)

// TraceID and SpanID are OpenTelemetry's identifiers.
type (
	TraceID [16]byte
	SpanID  [8]byte
)

// Kind is the span's kind, numbered as OTLP numbers it.
type Kind uint8

// The span kinds.
const (
	KindUnspecified Kind = iota
	KindInternal
	KindServer
	KindClient
	KindProducer
	KindConsumer
	// KindLog marks a log record kept with its trace, not a span: SpanID
	// is the span it was logged under (zero for none), StartUnixNano its
	// time, Name its body, StatusMessage its severity. Searches and the
	// RED figures leave log records out.
	KindLog Kind = 64
)

// Status is the span's status code, numbered as OTLP numbers it.
type Status uint8

// The status codes.
const (
	StatusUnset Status = iota
	StatusOK
	StatusError
)

// ValueType says which field of a Value holds it.
type ValueType uint8

// The attribute value types. Arrays and maps (rare in practice) are kept
// as their JSON text in Str with TypeJSON.
const (
	TypeString ValueType = iota
	TypeInt
	TypeFloat
	TypeBool
	TypeBytes
	TypeJSON
)

// Value is an attribute's value.
type Value struct {
	Type  ValueType
	Str   string // TypeString, TypeBytes (raw), TypeJSON
	Int   int64
	Float float64
	Bool  bool
}

// Attr is one attribute.
type Attr struct {
	Key   string
	Value Value
}

// Event is a timestamped note on a span (an exception, a log line).
type Event struct {
	TimeUnixNano uint64
	Name         string
	Attrs        []Attr
}

// Link points from a span to another, maybe in another trace (a message
// consumer's span to its producer's).
type Link struct {
	TraceID TraceID
	SpanID  SpanID
	Attrs   []Attr
}

// Span is one stored span.
type Span struct {
	TraceID       TraceID
	SpanID        SpanID
	ParentID      SpanID // zero for a root
	Service       string // the resource's service.name
	Name          string
	Kind          Kind
	StartUnixNano uint64
	DurationNano  uint64
	Status        Status
	StatusMessage string
	Attrs         []Attr
	Resource      []Attr // the resource's other attributes
	Events        []Event
	Links         []Link
}

// Errors of the span codec.
var (
	errShort = errors.New("trace/store: span record ends early")
	errLong  = errors.New("trace/store: span record has bytes after its end")
)

// maxCount bounds a decoded list's length before anything is allocated
// for it: a count can never exceed the bytes left.
func maxCount(n uint64, left int) error {
	if n > uint64(left) {
		return fmt.Errorf("trace/store: a list of %d in %d bytes", n, left)
	}
	return nil
}

// appendSpan encodes s onto b.
func appendSpan(b []byte, s *Span) []byte {
	b = append(b, s.TraceID[:]...)
	b = append(b, s.SpanID[:]...)
	b = append(b, s.ParentID[:]...)
	b = binary.AppendUvarint(b, s.StartUnixNano)
	b = binary.AppendUvarint(b, s.DurationNano)
	b = append(b, byte(s.Kind), byte(s.Status))
	b = appendString(b, s.Service)
	b = appendString(b, s.Name)
	b = appendString(b, s.StatusMessage)
	b = appendAttrs(b, s.Attrs)
	b = appendAttrs(b, s.Resource)
	b = binary.AppendUvarint(b, uint64(len(s.Events)))
	for _, e := range s.Events {
		b = binary.AppendUvarint(b, e.TimeUnixNano)
		b = appendString(b, e.Name)
		b = appendAttrs(b, e.Attrs)
	}
	b = binary.AppendUvarint(b, uint64(len(s.Links)))
	for _, l := range s.Links {
		b = append(b, l.TraceID[:]...)
		b = append(b, l.SpanID[:]...)
		b = appendAttrs(b, l.Attrs)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendAttrs(b []byte, as []Attr) []byte {
	b = binary.AppendUvarint(b, uint64(len(as)))
	for _, a := range as {
		b = appendString(b, a.Key)
		b = append(b, byte(a.Value.Type))
		switch a.Value.Type {
		case TypeInt:
			b = binary.AppendVarint(b, a.Value.Int)
		case TypeFloat:
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(a.Value.Float))
		case TypeBool:
			v := byte(0)
			if a.Value.Bool {
				v = 1
			}
			b = append(b, v)
		default:
			b = appendString(b, a.Value.Str)
		}
	}
	return b
}

// decoder reads a span record; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail(errShort)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte1() byte {
	v := d.bytes(1)
	if v == nil {
		return 0
	}
	return v[0]
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.fail(errShort)
	}
	return string(d.bytes(int(n)))
}

func (d *decoder) count() int {
	n := d.uvarint()
	if d.err == nil {
		if err := maxCount(n, len(d.b)); err != nil {
			d.fail(err)
			return 0
		}
	}
	return int(n)
}

func (d *decoder) attrs() []Attr {
	n := d.count()
	if n == 0 || d.err != nil {
		return nil
	}
	out := make([]Attr, 0, n)
	for range n {
		var a Attr
		a.Key = d.string()
		a.Value.Type = ValueType(d.byte1())
		switch a.Value.Type {
		case TypeInt:
			a.Value.Int = d.varint()
		case TypeFloat:
			if v := d.bytes(8); v != nil {
				a.Value.Float = math.Float64frombits(binary.LittleEndian.Uint64(v))
			}
		case TypeBool:
			a.Value.Bool = d.byte1() == 1
		case TypeString, TypeBytes, TypeJSON:
			a.Value.Str = d.string()
		default:
			d.fail(fmt.Errorf("trace/store: unknown attribute value type %d", a.Value.Type))
		}
		if d.err != nil {
			return nil
		}
		out = append(out, a)
	}
	return out
}

// head decodes the fixed fields and names, the part searches look at.
func (d *decoder) head(s *Span) {
	copy(s.TraceID[:], d.bytes(16))
	copy(s.SpanID[:], d.bytes(8))
	copy(s.ParentID[:], d.bytes(8))
	s.StartUnixNano = d.uvarint()
	s.DurationNano = d.uvarint()
	s.Kind = Kind(d.byte1())
	s.Status = Status(d.byte1())
	s.Service = d.string()
	s.Name = d.string()
	s.StatusMessage = d.string()
}

// decodeSpan decodes a whole record.
func decodeSpan(b []byte) (Span, error) {
	d := decoder{b: b}
	var s Span
	d.head(&s)
	s.Attrs = d.attrs()
	s.Resource = d.attrs()
	if n := d.count(); d.err == nil && n > 0 {
		s.Events = make([]Event, 0, n)
		for range n {
			var e Event
			e.TimeUnixNano = d.uvarint()
			e.Name = d.string()
			e.Attrs = d.attrs()
			if d.err != nil {
				break
			}
			s.Events = append(s.Events, e)
		}
	}
	if n := d.count(); d.err == nil && n > 0 {
		s.Links = make([]Link, 0, n)
		for range n {
			var l Link
			copy(l.TraceID[:], d.bytes(16))
			copy(l.SpanID[:], d.bytes(8))
			l.Attrs = d.attrs()
			if d.err != nil {
				break
			}
			s.Links = append(s.Links, l)
		}
	}
	if d.err == nil && len(d.b) > 0 {
		d.fail(errLong)
	}
	if d.err != nil {
		return Span{}, d.err
	}
	return s, nil
}

// ParseTraceID reads a trace ID written as 32 hex digits (as the API and
// the console show it).
func ParseTraceID(s string) (TraceID, bool) {
	var id TraceID
	if len(s) != 2*len(id) {
		return id, false
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, false
	}
	return id, true
}
