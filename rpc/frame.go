package rpc

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Frame types. docs/rpc.md describes each byte of the framing.
const (
	FrameRequest      uint8 = 1  // a unary call expecting a response
	FrameResponse     uint8 = 2  // the answer to a request, with a status
	FrameOneway       uint8 = 3  // a call with no response
	FrameStreamOpen   uint8 = 4  // opens a stream (method, metadata, deadline)
	FrameStreamData   uint8 = 5  // one message on a stream, either direction
	FrameStreamClose  uint8 = 6  // client: half-close; server: end with a status
	FrameWindowUpdate uint8 = 7  // grants the peer more bytes on a stream
	FrameCancel       uint8 = 8  // client abandons a request or stream
	FramePing         uint8 = 9  // heartbeat; answered by a pong with the same body
	FramePong         uint8 = 10 // heartbeat answer
	FrameGoAway       uint8 = 11 // the sender accepts no new calls on this connection
	frameTypeMax            = FrameGoAway
)

// Frame flags.
const (
	// FlagCompressed marks a gzip-compressed body.
	FlagCompressed uint8 = 1 << 0
	// FlagRefused marks a response to a call the server never started
	// (draining, overloaded before dispatch): retrying it cannot run it twice.
	FlagRefused uint8 = 1 << 1
)

const (
	magic0      = 'T'
	magic1      = 'G'
	version     = 1
	headerLen   = 24
	maxMetaKeys = 256
	// DefaultMaxFrameSize bounds one frame's header section plus body.
	DefaultMaxFrameSize = 16 << 20
	// maxHeaderSection is the room senders leave for the header section
	// when they check a body against the frame limit.
	maxHeaderSection = 64 << 10
	// maxInflate bounds a decompressed response body on the client.
	maxInflate = 64 << 20
)

// Frame is one decoded protocol frame.
type Frame struct {
	Type    uint8
	Flags   uint8
	Codec   uint8
	Status  Code
	ID      uint64
	Service string
	Method  string
	Timeout time.Duration // relative deadline of a request; 0 means none
	Message string        // status message of a response or stream close
	Meta    Metadata
	Body    []byte
}

// ErrFrameTooLarge is wrapped by decode errors for frames above the limit.
var ErrFrameTooLarge = errors.New("rpc: frame too large")

// appendFrame encodes f onto dst.
func appendFrame(dst []byte, f *Frame) []byte {
	start := len(dst)
	dst = append(dst, magic0, magic1, version, f.Type, f.Flags, f.Codec,
		byte(f.Status>>8), byte(f.Status))
	dst = binary.BigEndian.AppendUint64(dst, f.ID)
	dst = append(dst, 0, 0, 0, 0) // header-section length, patched below
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(f.Body)))
	if f.Service != "" || f.Method != "" || f.Timeout > 0 || f.Message != "" || len(f.Meta) > 0 {
		hs := len(dst)
		dst = appendString(dst, f.Service)
		dst = appendString(dst, f.Method)
		var us uint64
		if f.Timeout > 0 {
			us = uint64((f.Timeout + time.Microsecond - 1) / time.Microsecond)
		}
		dst = binary.AppendUvarint(dst, us)
		dst = appendString(dst, f.Message)
		dst = binary.AppendUvarint(dst, uint64(len(f.Meta)))
		for k, v := range f.Meta {
			dst = appendString(dst, k)
			dst = appendString(dst, v)
		}
		binary.BigEndian.PutUint32(dst[start+16:], uint32(len(dst)-hs))
	}
	return append(dst, f.Body...)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// frameReader decodes frames from a buffered stream. It is used by one
// goroutine: the connection's reader.
type frameReader struct {
	r       *bufio.Reader
	max     int
	scratch []byte
	intern  map[string]string // service and method names seen on this connection
}

func newFrameReader(r io.Reader, max int) *frameReader {
	if max <= 0 {
		max = DefaultMaxFrameSize
	}
	return &frameReader{r: bufio.NewReaderSize(r, 64<<10), max: max, intern: map[string]string{}}
}

// read decodes the next frame into f. Its Body is freshly allocated and
// owned by the caller. Limits are checked before anything is allocated.
func (fr *frameReader) read(f *Frame) error {
	hdr, err := fr.r.Peek(headerLen)
	if err != nil {
		if err == io.EOF && len(hdr) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if hdr[0] != magic0 || hdr[1] != magic1 {
		return fmt.Errorf("rpc: bad magic %#x %#x: not a Tangram RPC peer", hdr[0], hdr[1])
	}
	if hdr[2] != version {
		return fmt.Errorf("rpc: unsupported protocol version %d (want %d)", hdr[2], version)
	}
	if hdr[3] == 0 || hdr[3] > frameTypeMax {
		return fmt.Errorf("rpc: unknown frame type %d", hdr[3])
	}
	hl := binary.BigEndian.Uint32(hdr[16:])
	bl := binary.BigEndian.Uint32(hdr[20:])
	if uint64(hl)+uint64(bl) > uint64(fr.max) {
		return fmt.Errorf("%w: %d header + %d body bytes > limit %d", ErrFrameTooLarge, hl, bl, fr.max)
	}
	*f = Frame{
		Type: hdr[3], Flags: hdr[4], Codec: hdr[5],
		Status: Code(binary.BigEndian.Uint16(hdr[6:])),
		ID:     binary.BigEndian.Uint64(hdr[8:]),
	}
	if _, err := fr.r.Discard(headerLen); err != nil {
		return err
	}
	if hl > 0 {
		if cap(fr.scratch) < int(hl) {
			fr.scratch = make([]byte, hl)
		}
		hs := fr.scratch[:hl]
		if _, err := io.ReadFull(fr.r, hs); err != nil {
			return unexpected(err)
		}
		if err := fr.parseHeaders(f, hs); err != nil {
			return err
		}
	}
	if bl > 0 {
		f.Body = make([]byte, bl)
		if _, err := io.ReadFull(fr.r, f.Body); err != nil {
			return unexpected(err)
		}
	}
	return nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (fr *frameReader) parseHeaders(f *Frame, b []byte) error {
	p := headerParser{b: b}
	svc := p.bytes("service")
	m := p.bytes("method")
	us := p.uvarint("timeout")
	msg := p.bytes("message")
	n := p.uvarint("metadata count")
	if p.err == nil && n > maxMetaKeys {
		return fmt.Errorf("rpc: %d metadata pairs > limit %d", n, maxMetaKeys)
	}
	if n > 0 && p.err == nil {
		f.Meta = make(Metadata, n)
		for i := uint64(0); i < n && p.err == nil; i++ {
			k := p.bytes("metadata key")
			v := p.bytes("metadata value")
			f.Meta[string(k)] = string(v)
		}
	}
	if p.err != nil {
		return p.err
	}
	if len(p.b) != 0 {
		return fmt.Errorf("rpc: %d stray bytes after the header section", len(p.b))
	}
	if us > uint64(24*time.Hour/time.Microsecond)*365 {
		return fmt.Errorf("rpc: timeout of %d µs out of range", us)
	}
	f.Timeout = time.Duration(us) * time.Microsecond
	f.Service = fr.internString(svc)
	f.Method = fr.internString(m)
	if len(msg) > 0 {
		f.Message = string(msg)
	}
	return nil
}

// internString returns b as a string, reusing the allocation of names seen
// before on this connection (service and method names repeat on every call).
func (fr *frameReader) internString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := fr.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(fr.intern) < 4096 {
		fr.intern[s] = s
	}
	return s
}

type headerParser struct {
	b   []byte
	err error
}

func (p *headerParser) uvarint(what string) uint64 {
	if p.err != nil {
		return 0
	}
	v, n := binary.Uvarint(p.b)
	if n <= 0 {
		p.err = fmt.Errorf("rpc: bad %s varint in header section", what)
		return 0
	}
	p.b = p.b[n:]
	return v
}

func (p *headerParser) bytes(what string) []byte {
	n := p.uvarint(what + " length")
	if p.err != nil {
		return nil
	}
	if n > uint64(len(p.b)) {
		p.err = fmt.Errorf("rpc: %s length %d overruns the header section", what, n)
		return nil
	}
	s := p.b[:n]
	p.b = p.b[n:]
	return s
}
