package registry

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Instances and snapshots cross the network (RPC, watch streams, gossip)
// in a compact binary form wrapped as one msgpack bin value: field names
// are not repeated per instance, and decoding needs no reflection — a
// watch answer decodes about ten times faster than as a msgpack map, which
// matters when a thousand watchers receive it at once. HTTP uses JSON.
//
// instance: version byte (1), flags byte (healthy 1, enabled 2, ephemeral 4),
// then uvarint-length strings namespace, group, service, id, host, zone,
// cluster, owner; uvarints port, weight; varints version, registered_at;
// uvarint metadata count and key/value strings.
// snapshot: version byte (1), flags (full 1, emptied 2), key strings,
// varint revision, node string, uvarint instance count and instances,
// uvarint event count and (varint revision, type byte 0 put / 1 delete,
// instance) each. Every length is checked against the bytes left.

const wireVersion = 1

var errWire = errors.New("registry: malformed instance encoding")

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func (in *Instance) appendWire(b []byte) []byte {
	var flags byte
	if in.Healthy {
		flags |= 1
	}
	if in.Enabled {
		flags |= 2
	}
	if in.Ephemeral {
		flags |= 4
	}
	b = append(b, wireVersion, flags)
	for _, s := range [...]string{in.Namespace, in.Group, in.Service, in.ID, in.Host, in.Zone, in.Cluster, in.Owner} {
		b = appendStr(b, s)
	}
	b = binary.AppendUvarint(b, uint64(in.Port))
	b = binary.AppendUvarint(b, uint64(in.Weight))
	b = binary.AppendVarint(b, in.Version)
	b = binary.AppendVarint(b, in.RegisteredAt)
	b = binary.AppendUvarint(b, uint64(len(in.Metadata)))
	for k, v := range in.Metadata {
		b = appendStr(b, k)
		b = appendStr(b, v)
	}
	return b
}

type wireReader struct {
	b   []byte
	err error
}

func (r *wireReader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errWire
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *wireReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errWire
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errWire
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) str() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.err = errWire
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// count reads a element count, refusing more than the bytes left could hold.
func (r *wireReader) count(minSize int) int {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)/minSize) {
		r.err = fmt.Errorf("%w: %d elements declared with %d bytes left", errWire, n, len(r.b))
	}
	return int(n)
}

func (r *wireReader) instance(in *Instance) {
	if v := r.byte(); r.err == nil && v != wireVersion {
		r.err = fmt.Errorf("%w: version %d", errWire, v)
	}
	flags := r.byte()
	in.Healthy, in.Enabled, in.Ephemeral = flags&1 != 0, flags&2 != 0, flags&4 != 0
	for _, p := range [...]*string{&in.Namespace, &in.Group, &in.Service, &in.ID, &in.Host, &in.Zone, &in.Cluster, &in.Owner} {
		*p = r.str()
	}
	port, weight := r.uvarint(), r.uvarint()
	if port > 65535 || weight > MaxWeight {
		r.err = fmt.Errorf("%w: port %d or weight %d out of range", errWire, port, weight)
	}
	in.Port, in.Weight = uint16(port), uint16(weight)
	in.Version, in.RegisteredAt = r.varint(), r.varint()
	if n := r.count(2); n > 0 && r.err == nil {
		if n > MaxMetadataKeys {
			r.err = fmt.Errorf("%w: %d metadata keys", errWire, n)
			return
		}
		in.Metadata = make(map[string]string, n)
		for range n {
			k := r.str()
			in.Metadata[k] = r.str()
		}
	}
}

// msgpack bin wrapping

func wrapBin(payload []byte) ([]byte, error) {
	var enc []byte
	switch n := len(payload); {
	case n < 1<<8:
		enc = append(make([]byte, 0, n+2), 0xc4, byte(n))
	case n < 1<<16:
		enc = append(make([]byte, 0, n+3), 0xc5, byte(n>>8), byte(n))
	default:
		enc = binary.BigEndian.AppendUint32(append(make([]byte, 0, n+5), 0xc6), uint32(n))
	}
	return append(enc, payload...), nil
}

func unwrapBin(b []byte) ([]byte, error) {
	var p []byte
	if err := msgpack.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%w: %v", errWire, err)
	}
	return p, nil
}

// MarshalMsgpack encodes the instance in the compact form.
func (in *Instance) MarshalMsgpack() ([]byte, error) {
	return wrapBin(in.appendWire(make([]byte, 0, 128)))
}

// UnmarshalMsgpack decodes the compact form.
func (in *Instance) UnmarshalMsgpack(b []byte) error {
	p, err := unwrapBin(b)
	if err != nil {
		return err
	}
	r := wireReader{b: p}
	*in = Instance{}
	r.instance(in)
	return r.err
}

func (s *Snapshot) appendWire(b []byte) []byte {
	var flags byte
	if s.Full {
		flags |= 1
	}
	if s.Emptied {
		flags |= 2
	}
	b = append(b, wireVersion, flags)
	b = appendStr(appendStr(appendStr(b, s.Key.Namespace), s.Key.Group), s.Key.Service)
	b = binary.AppendVarint(b, s.Revision)
	b = appendStr(b, s.Node)
	b = binary.AppendUvarint(b, uint64(len(s.Instances)))
	for _, in := range s.Instances {
		b = in.appendWire(b)
	}
	b = binary.AppendUvarint(b, uint64(len(s.Events)))
	for _, ev := range s.Events {
		b = binary.AppendVarint(b, ev.Revision)
		t := byte(0)
		if ev.Type == EventDelete {
			t = 1
		}
		b = ev.Instance.appendWire(append(b, t))
	}
	return b
}

func (s *Snapshot) marshal() ([]byte, error) { return wrapBin(s.appendWire(make([]byte, 0, 256))) }

// ShareEncoding makes s keep its encoding once made, for a value that many
// watch streams send: it is encoded once, however many send it. s must not
// change after it is first encoded.
func (s *Snapshot) ShareEncoding() { s.enc = &encoding{} }

// MarshalMsgpack encodes the snapshot once however many watch streams send
// it (the encoding is cached when the registry shares the value).
func (s *Snapshot) MarshalMsgpack() ([]byte, error) {
	if s.enc == nil {
		return s.marshal()
	}
	s.enc.once.Do(func() { s.enc.b, s.enc.err = s.marshal() })
	return s.enc.b, s.enc.err
}

// UnmarshalMsgpack decodes what MarshalMsgpack wrote.
func (s *Snapshot) UnmarshalMsgpack(b []byte) error {
	p, err := unwrapBin(b)
	if err != nil {
		return err
	}
	r := wireReader{b: p}
	*s = Snapshot{}
	if v := r.byte(); r.err == nil && v != wireVersion {
		return fmt.Errorf("%w: snapshot version %d", errWire, v)
	}
	flags := r.byte()
	s.Full, s.Emptied = flags&1 != 0, flags&2 != 0
	s.Key.Namespace, s.Key.Group, s.Key.Service = r.str(), r.str(), r.str()
	s.Revision = r.varint()
	s.Node = r.str()
	if n := r.count(15); r.err == nil { // an instance takes at least 15 bytes
		s.Instances = make([]*Instance, 0, n)
		for range n {
			in := new(Instance)
			r.instance(in)
			s.Instances = append(s.Instances, in)
		}
	}
	if n := r.count(17); r.err == nil && n > 0 {
		s.Events = make([]Event, 0, n)
		for range n {
			ev := Event{Revision: r.varint(), Type: EventPut, Instance: new(Instance)}
			if r.byte() == 1 {
				ev.Type = EventDelete
			}
			r.instance(ev.Instance)
			s.Events = append(s.Events, ev)
		}
	}
	return r.err
}
