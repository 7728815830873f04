// Package resp reads and writes RESP, the Redis serialization protocol
// (RESP2 and RESP3): the request side a server decodes — multibulk
// commands and inline commands typed by hand — and the reply types it
// encodes. It never allocates what a peer only declares: a bulk string's
// memory grows as its bytes arrive, and every length is checked against a
// limit first.
package resp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Default limits (Redis: proto-max-bulk-len 512 MB, 1M-element multibulk;
// here lower, so that one connection cannot hold a gigabyte).
const (
	DefaultMaxBulk   = 64 << 20
	DefaultMaxArgs   = 512 << 10
	DefaultMaxInline = 64 << 10
	// DefaultMaxRequest bounds the bytes of one command, all its arguments
	// together (Redis: client-query-buffer-limit 1 GB).
	DefaultMaxRequest = 256 << 20
)

// ProtocolError is a malformed request: the server replies with it and
// closes the connection, as Redis does.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "Protocol error: " + e.Msg }

// IsProtocol reports whether err is a *ProtocolError.
func IsProtocol(err error) bool {
	var pe *ProtocolError
	return errors.As(err, &pe)
}

func protoErr(format string, a ...any) error { return &ProtocolError{Msg: fmt.Sprintf(format, a...)} }

// Reader decodes commands from a connection. The slices it returns point
// into its own buffer and stay valid until the next ReadCommand: a caller
// copies what it keeps.
type Reader struct {
	br *bufio.Reader
	// Limits; zero means the Default values. Set them before the first read
	// (or between commands: a server tightens them until AUTH).
	Limits

	args  [][]byte
	arena []byte
}

// NewReader returns a Reader over rd with a read buffer of size bytes.
func NewReader(rd io.Reader, size int) *Reader {
	return &Reader{br: bufio.NewReaderSize(rd, size)}
}

// Buffered returns how many bytes have been read from the connection and
// not yet decoded: a server flushes its replies when this is zero, so a
// pipeline's replies leave in one write.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// Limits bound one request; a zero field means its Default value.
type Limits struct {
	MaxBulk, MaxArgs, MaxInline, MaxRequest int
}

func (r *Reader) limit(v, d int) int { return limit(v, d) }

func limit(v, d int) int {
	if v <= 0 {
		return d
	}
	return v
}

// line reads one CRLF-terminated line (without the CRLF). Lines longer than
// max are a protocol error.
func (r *Reader) line(max int, what string) ([]byte, error) {
	b, err := r.br.ReadSlice('\n')
	if err == nil {
		if len(b) > max+2 {
			return nil, protoErr("too big %s", what)
		}
		n := len(b) - 1
		if n > 0 && b[n-1] == '\r' {
			n--
		}
		return b[:n], nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		return nil, err
	}
	// A line longer than the read buffer: collect it, up to max.
	long := append([]byte(nil), b...)
	for {
		if len(long) > max+2 {
			return nil, protoErr("too big %s", what)
		}
		b, err = r.br.ReadSlice('\n')
		long = append(long, b...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
	if len(long) > max+2 {
		return nil, protoErr("too big %s", what)
	}
	n := len(long) - 1
	if n > 0 && long[n-1] == '\r' {
		n--
	}
	return long[:n], nil
}

// ReadCommand reads the next command: a RESP array of bulk strings, or an
// inline command (a line of space-separated words, quotes allowed). An
// empty inline line yields a command of no arguments, which a server skips.
// io.EOF means the peer closed between commands.
func (r *Reader) ReadCommand() ([][]byte, error) {
	r.args = r.args[:0]
	r.arena = r.arena[:0]
	c, err := r.br.ReadByte()
	if err != nil {
		return nil, err
	}
	if c != '*' {
		if err := r.br.UnreadByte(); err != nil {
			return nil, err
		}
		return r.inline()
	}
	hdr, err := r.line(64, "multibulk header")
	if err != nil {
		return nil, noEOF(err)
	}
	n, err := strconv.ParseInt(string(hdr), 10, 64)
	if err != nil || n > int64(r.limit(r.MaxArgs, DefaultMaxArgs)) {
		return nil, protoErr("invalid multibulk length")
	}
	if n <= 0 {
		return r.args, nil
	}
	maxBulk := r.limit(r.MaxBulk, DefaultMaxBulk)
	maxReq := r.limit(r.MaxRequest, DefaultMaxRequest)
	offs := make([]int, 0, 8) // arena offsets; slices are cut once the arena stops moving
	if cap(r.args) < int(n) && n <= 1024 {
		r.args = make([][]byte, 0, n)
	}
	for i := int64(0); i < n; i++ {
		c, err := r.br.ReadByte()
		if err != nil {
			return nil, noEOF(err)
		}
		if c != '$' {
			return nil, protoErr("expected '$', got '%s'", printable(c))
		}
		hdr, err := r.line(64, "bulk header")
		if err != nil {
			return nil, noEOF(err)
		}
		m, err := strconv.ParseInt(string(hdr), 10, 64)
		if err != nil || m < 0 || m > int64(maxBulk) {
			return nil, protoErr("invalid bulk length")
		}
		if len(r.arena)+int(m) > maxReq {
			return nil, protoErr("request bigger than %d bytes", maxReq)
		}
		start := len(r.arena)
		if err := r.readBulk(int(m)); err != nil {
			return nil, noEOF(err)
		}
		offs = append(offs, start, len(r.arena))
	}
	for i := 0; i < len(offs); i += 2 {
		r.args = append(r.args, r.arena[offs[i]:offs[i+1]:offs[i+1]])
	}
	return r.args, nil
}

// readBulk appends m bytes and the CRLF after them to the arena (without
// the CRLF). Memory grows with what arrives, never with what is declared.
func (r *Reader) readBulk(m int) error {
	const chunk = 64 << 10
	for m > 0 {
		k := min(m, chunk)
		if cap(r.arena)-len(r.arena) < k {
			grow := max(k, cap(r.arena))
			if m <= chunk {
				grow = k
			}
			na := make([]byte, len(r.arena), len(r.arena)+grow)
			copy(na, r.arena)
			r.arena = na
		}
		start := len(r.arena)
		r.arena = r.arena[:start+k]
		if _, err := io.ReadFull(r.br, r.arena[start:]); err != nil {
			return err
		}
		m -= k
	}
	var crlf [2]byte
	if _, err := io.ReadFull(r.br, crlf[:]); err != nil {
		return err
	}
	if crlf != [2]byte{'\r', '\n'} {
		return protoErr("bulk string not followed by CRLF")
	}
	return nil
}

func (r *Reader) inline() ([][]byte, error) {
	ln, err := r.line(r.limit(r.MaxInline, DefaultMaxInline), "inline request")
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, err
		}
		return nil, err
	}
	r.arena = append(r.arena[:0], ln...)
	words, err := SplitArgs(r.arena)
	if err != nil {
		return nil, err
	}
	if len(words) > r.limit(r.MaxArgs, DefaultMaxArgs) {
		return nil, protoErr("invalid multibulk length")
	}
	r.args = append(r.args[:0], words...)
	return r.args, nil
}

// SplitArgs splits an inline command line as Redis does (sdssplitargs):
// words separated by blanks, "double quotes" with \n \r \t \b \a \\ \" and
// \xHH escapes, 'single quotes' with \' only. A closing quote must be
// followed by a blank or the end.
func SplitArgs(line []byte) ([][]byte, error) {
	var out [][]byte
	i := 0
	for {
		for i < len(line) && isBlank(line[i]) {
			i++
		}
		if i >= len(line) {
			return out, nil
		}
		var cur []byte
		inq, insq := false, false
		for i < len(line) {
			c := line[i]
			switch {
			case inq:
				if c == '\\' && i+3 < len(line) && line[i+1] == 'x' && isHex(line[i+2]) && isHex(line[i+3]) {
					v, _ := strconv.ParseUint(string(line[i+2:i+4]), 16, 8)
					cur = append(cur, byte(v))
					i += 4
					continue
				}
				if c == '\\' && i+1 < len(line) {
					i++
					switch line[i] {
					case 'n':
						cur = append(cur, '\n')
					case 'r':
						cur = append(cur, '\r')
					case 't':
						cur = append(cur, '\t')
					case 'b':
						cur = append(cur, '\b')
					case 'a':
						cur = append(cur, '\a')
					default:
						cur = append(cur, line[i])
					}
					i++
					continue
				}
				if c == '"' {
					if i+1 < len(line) && !isBlank(line[i+1]) {
						return nil, protoErr("unbalanced quotes in request")
					}
					i++
					goto done
				}
				cur = append(cur, c)
				i++
			case insq:
				if c == '\\' && i+1 < len(line) && line[i+1] == '\'' {
					cur = append(cur, '\'')
					i += 2
					continue
				}
				if c == '\'' {
					if i+1 < len(line) && !isBlank(line[i+1]) {
						return nil, protoErr("unbalanced quotes in request")
					}
					i++
					goto done
				}
				cur = append(cur, c)
				i++
			default:
				if isBlank(c) {
					goto done
				}
				if c == '"' && cur == nil {
					inq = true
					cur = []byte{}
					i++
					continue
				}
				if c == '\'' && cur == nil {
					insq = true
					cur = []byte{}
					i++
					continue
				}
				cur = append(cur, c)
				i++
			}
		}
		if inq || insq {
			return nil, protoErr("unbalanced quotes in request")
		}
	done:
		if cur == nil {
			cur = []byte{}
		}
		out = append(out, cur)
	}
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0 }
func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func printable(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return string(rune(c))
	}
	return fmt.Sprintf("\\x%02x", c)
}

// noEOF turns an EOF inside a command into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
