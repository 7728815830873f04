package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// The MySQL client/server protocol: packets of up to 16 MiB - 1 bytes,
// each with a 3-byte length and a sequence number that restarts at 0
// with every command; a longer payload is split, and a full-size packet
// always has a successor (possibly empty).
const maxChunk = 1<<24 - 1

// errPacketTooLarge is a client packet beyond the proxy's limit.
var errPacketTooLarge = errors.New("proxy: packet larger than the proxy accepts (max_allowed_packet)")

// packetConn reads and writes one connection's packets.
type packetConn struct {
	nc  net.Conn
	r   *bufio.Reader
	w   *bufio.Writer
	seq uint8
	max int    // the largest payload a client may send
	in  []byte // the last packet read (reused: copy what outlives it)
	out []byte // the packet being built (reused)
}

func newPacketConn(nc net.Conn, max int) *packetConn {
	return &packetConn{nc: nc, r: bufio.NewReaderSize(nc, 16<<10), w: bufio.NewWriterSize(nc, 16<<10), max: max}
}

// read reads one payload (joining split packets). The slice is valid
// until the next read.
func (p *packetConn) read() ([]byte, error) {
	p.in = p.in[:0]
	for {
		var h [4]byte
		if _, err := io.ReadFull(p.r, h[:]); err != nil {
			return nil, err
		}
		n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
		if h[3] != p.seq {
			return nil, fmt.Errorf("proxy: packet out of order: sequence %d, want %d", h[3], p.seq)
		}
		p.seq++
		if len(p.in)+n > p.max {
			return nil, errPacketTooLarge
		}
		start := len(p.in)
		p.in = append(p.in, make([]byte, n)...)
		if _, err := io.ReadFull(p.r, p.in[start:]); err != nil {
			return nil, err
		}
		if n < maxChunk {
			return p.in, nil
		}
	}
}

// begin starts a packet: four bytes kept for the header, then the
// payload appended by the caller.
func (p *packetConn) begin() []byte { return append(p.out[:0], 0, 0, 0, 0) }

// send writes a packet begun with begin (split when it must be) into the
// write buffer; flush sends what is buffered.
func (p *packetConn) send(b []byte) error {
	p.out = b[:0]
	payload := b[4:]
	for {
		n := min(len(payload), maxChunk)
		h := [4]byte{byte(n), byte(n >> 8), byte(n >> 16), p.seq}
		p.seq++
		if _, err := p.w.Write(h[:]); err != nil {
			return err
		}
		if _, err := p.w.Write(payload[:n]); err != nil {
			return err
		}
		payload = payload[n:]
		if n < maxChunk {
			return nil
		}
	}
}

func (p *packetConn) flush() error { return p.w.Flush() }

// Appending protocol values.

func appendU16(b []byte, v uint16) []byte { return binary.LittleEndian.AppendUint16(b, v) }
func appendU32(b []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(b, v) }
func appendU64(b []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(b, v) }

// appendLenInt appends a length-encoded integer.
func appendLenInt(b []byte, v uint64) []byte {
	switch {
	case v < 251:
		return append(b, byte(v))
	case v < 1<<16:
		return appendU16(append(b, 0xfc), uint16(v))
	case v < 1<<24:
		return append(b, 0xfd, byte(v), byte(v>>8), byte(v>>16))
	default:
		return appendU64(append(b, 0xfe), v)
	}
}

// appendLenStr appends a length-encoded string.
func appendLenStr[S string | []byte](b []byte, s S) []byte {
	return append(appendLenInt(b, uint64(len(s))), s...)
}

// appendNulStr appends a NUL-terminated string.
func appendNulStr(b []byte, s string) []byte { return append(append(b, s...), 0) }

// reader decodes a payload; the first problem sticks (every later read
// returns zero values) and names what was being read.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("proxy: malformed packet: %s cut short", what)
	}
	r.b = nil
}

func (r *reader) bytes(n int, what string) []byte {
	if n < 0 || len(r.b) < n {
		r.fail(what)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8(what string) uint8 {
	b := r.bytes(1, what)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) u16(what string) uint16 {
	b := r.bytes(2, what)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}

func (r *reader) u32(what string) uint32 {
	b := r.bytes(4, what)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

func (r *reader) u64(what string) uint64 {
	b := r.bytes(8, what)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

// lenInt reads a length-encoded integer.
func (r *reader) lenInt(what string) uint64 {
	switch c := r.u8(what); {
	case c < 0xfb:
		return uint64(c)
	case c == 0xfc:
		return uint64(r.u16(what))
	case c == 0xfd:
		b := r.bytes(3, what)
		if b == nil {
			return 0
		}
		return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16
	case c == 0xfe:
		return r.u64(what)
	default:
		if r.err == nil {
			r.err = fmt.Errorf("proxy: malformed packet: %s: 0x%x is not a length", what, c)
		}
		r.b = nil
		return 0
	}
}

// lenStr reads a length-encoded string.
func (r *reader) lenStr(what string) []byte {
	n := r.lenInt(what)
	if n > uint64(len(r.b)) {
		r.fail(what)
		return nil
	}
	return r.bytes(int(n), what)
}

// nulStr reads a NUL-terminated string (or the rest, when the NUL is
// missing and tolerant is set: some clients end the last field without
// one).
func (r *reader) nulStr(what string, tolerant bool) []byte {
	for i, c := range r.b {
		if c == 0 {
			v := r.b[:i:i]
			r.b = r.b[i+1:]
			return v
		}
	}
	if tolerant {
		v := r.b
		r.b = nil
		return v
	}
	r.fail(what)
	return nil
}
