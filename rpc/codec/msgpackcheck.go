package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// maxContainer bounds one msgpack array or map's declared length.
const maxContainer = 1 << 22

var errTruncated = errors.New("codec msgpack: truncated input")

// checkMsgpack walks msgpack input without decoding it and rejects declared
// lengths the input cannot hold. msgpack/v5 (v5.4.1) preallocates a slice
// of the declared length before decoding its elements, so five bytes
// declaring a 4-billion-element array would otherwise cost gigabytes; every
// element takes at least one byte, so a length above the bytes left is a
// lie.
func checkMsgpack(b []byte) error {
	pending := 1 // values still to read
	for pending > 0 {
		if len(b) == 0 {
			return errTruncated
		}
		c := b[0]
		b = b[1:]
		pending--
		var skip, n int // bytes to skip; elements to add
		switch {
		case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			n = 2 * int(c&0x0f)
		case c >= 0x90 && c <= 0x9f:
			n = int(c & 0x0f)
		case c >= 0xa0 && c <= 0xbf:
			skip = int(c & 0x1f)
		default:
			var err error
			if skip, n, b, err = msgpackHeader(c, b); err != nil {
				return err
			}
		}
		if skip > len(b) {
			return errTruncated
		}
		b = b[skip:]
		if n > maxContainer || n > len(b) {
			return fmt.Errorf("codec msgpack: a container declares %d elements with %d bytes left", n, len(b))
		}
		pending += n
		if pending > len(b) {
			return fmt.Errorf("codec msgpack: %d values declared with %d bytes left", pending, len(b))
		}
	}
	return nil
}

// msgpackHeader reads the length bytes after type byte c.
func msgpackHeader(c byte, b []byte) (skip, n int, rest []byte, err error) {
	size := func(w int) (int, error) {
		if len(b) < w {
			return 0, errTruncated
		}
		var v uint64
		switch w {
		case 1:
			v = uint64(b[0])
		case 2:
			v = uint64(binary.BigEndian.Uint16(b))
		case 4:
			v = uint64(binary.BigEndian.Uint32(b))
		}
		b = b[w:]
		if v > 1<<31 {
			return 0, fmt.Errorf("codec msgpack: length %d too large", v)
		}
		return int(v), nil
	}
	switch c {
	case 0xc4, 0xd9: // bin8, str8
		skip, err = size(1)
	case 0xc5, 0xda: // bin16, str16
		skip, err = size(2)
	case 0xc6, 0xdb: // bin32, str32
		skip, err = size(4)
	case 0xc7: // ext8
		skip, err = size(1)
		skip++
	case 0xc8:
		skip, err = size(2)
		skip++
	case 0xc9:
		skip, err = size(4)
		skip++
	case 0xca, 0xd2, 0xce: // float32, int32, uint32
		skip = 4
	case 0xcb, 0xd3, 0xcf: // float64, int64, uint64
		skip = 8
	case 0xcc, 0xd0: // uint8, int8
		skip = 1
	case 0xcd, 0xd1: // uint16, int16
		skip = 2
	case 0xd4:
		skip = 2
	case 0xd5:
		skip = 3
	case 0xd6:
		skip = 5
	case 0xd7:
		skip = 9
	case 0xd8:
		skip = 17
	case 0xdc: // array16
		n, err = size(2)
	case 0xdd: // array32
		n, err = size(4)
	case 0xde: // map16
		n, err = size(2)
		n *= 2
	case 0xdf: // map32
		n, err = size(4)
		n *= 2
	default: // 0xc1 is never used
		err = fmt.Errorf("codec msgpack: invalid type byte %#x", c)
	}
	return skip, n, b, err
}
