package resp

import (
	"bytes"
	"strconv"
)

// Parse decodes the command at the front of buf, for servers that read
// into their own buffers (an event loop) rather than through a Reader. It
// accepts what ReadCommand accepts and refuses it with the same errors.
//
// It returns the arguments (slices of buf, or of new memory for quoted
// inline words; args is reused) and n, the bytes the command took. When
// buf holds only part of a command, n is 0 and need is a lower bound on the
// length buf must reach before the command can be complete, so a caller
// receiving a large value does not rescan it as each piece arrives. An
// empty inline line or a multibulk of length ≤ 0 is a command of no
// arguments (n > 0, len(args) == 0), which a server skips.
func (l *Limits) Parse(buf []byte, args [][]byte) (out [][]byte, n, need int, err error) {
	out = args[:0]
	if len(buf) == 0 {
		return out, 0, 1, nil
	}
	if buf[0] != '*' {
		return l.parseInline(buf, out)
	}
	hdr, next, err := lineAt(buf, 1, 64, "multibulk header")
	if err != nil || next < 0 {
		return out, 0, len(buf) + 1, err
	}
	cnt, perr := strconv.ParseInt(string(hdr), 10, 64)
	if perr != nil || cnt > int64(limit(l.MaxArgs, DefaultMaxArgs)) {
		return out, 0, 0, protoErr("invalid multibulk length")
	}
	if cnt <= 0 {
		return out, next, 0, nil
	}
	maxBulk := int64(limit(l.MaxBulk, DefaultMaxBulk))
	maxReq := limit(l.MaxRequest, DefaultMaxRequest)
	total := 0
	pos := next
	for i := int64(0); i < cnt; i++ {
		if pos >= len(buf) {
			return out[:0], 0, pos + 1, nil
		}
		if buf[pos] != '$' {
			return out[:0], 0, 0, protoErr("expected '$', got '%s'", printable(buf[pos]))
		}
		hdr, next, err := lineAt(buf, pos+1, 64, "bulk header")
		if err != nil {
			return out[:0], 0, 0, err
		}
		if next < 0 {
			return out[:0], 0, len(buf) + 1, nil
		}
		m, perr := strconv.ParseInt(string(hdr), 10, 64)
		if perr != nil || m < 0 || m > maxBulk {
			return out[:0], 0, 0, protoErr("invalid bulk length")
		}
		if total+int(m) > maxReq {
			return out[:0], 0, 0, protoErr("request bigger than %d bytes", maxReq)
		}
		total += int(m)
		end := next + int(m)
		if end+2 > len(buf) {
			return out[:0], 0, end + 2, nil
		}
		if buf[end] != '\r' || buf[end+1] != '\n' {
			return out[:0], 0, 0, protoErr("bulk string not followed by CRLF")
		}
		out = append(out, buf[next:end:end])
		pos = end + 2
	}
	return out, pos, 0, nil
}

func (l *Limits) parseInline(buf []byte, out [][]byte) ([][]byte, int, int, error) {
	ln, next, err := lineAt(buf, 0, limit(l.MaxInline, DefaultMaxInline), "inline request")
	if err != nil || next < 0 {
		return out, 0, len(buf) + 1, err
	}
	words, err := SplitArgs(ln)
	if err != nil {
		return out, 0, 0, err
	}
	if len(words) > limit(l.MaxArgs, DefaultMaxArgs) {
		return out, 0, 0, protoErr("invalid multibulk length")
	}
	return append(out, words...), next, 0, nil
}

// lineAt finds the line starting at buf[from] (ended by LF, an optional
// CR before it dropped). next is the index after the LF, or -1 when the
// line is not complete yet; a line longer than max is an error, found as
// soon as max+2 bytes without an LF have arrived, as Reader does.
func lineAt(buf []byte, from, max int, what string) (line []byte, next int, err error) {
	rest := buf[from:]
	i := bytes.IndexByte(rest, '\n')
	if i < 0 {
		if len(rest) > max+2 {
			return nil, -1, protoErr("too big %s", what)
		}
		return nil, -1, nil
	}
	if i+1 > max+2 {
		return nil, -1, protoErr("too big %s", what)
	}
	line = rest[:i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, from + i + 1, nil
}
