package resp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// parseAll decodes every command of data with Parse, feeding it the bytes
// in pieces of step (the last piece may be shorter), as a server reading a
// socket would see them. It stops at the first error or when the data ends
// inside a command (partial reports that).
func parseAll(l *Limits, data []byte, step int) (cmds [][][]byte, partial bool, err error) {
	var buf []byte
	fed := 0
	for {
		args, n, need, err := l.Parse(buf, nil)
		if err != nil {
			return cmds, false, err
		}
		if n > 0 {
			if len(args) > 0 {
				cp := make([][]byte, len(args))
				for i, a := range args {
					cp[i] = bytes.Clone(a)
				}
				cmds = append(cmds, cp)
			}
			buf = buf[n:]
			continue
		}
		if need <= len(buf) {
			return cmds, false, fmt.Errorf("need %d with %d buffered", need, len(buf))
		}
		if fed == len(data) {
			return cmds, len(buf) > 0, nil
		}
		k := min(step, len(data)-fed)
		buf = append(buf, data[fed:fed+k]...)
		fed += k
	}
}

func readAll(l Limits, data []byte) (cmds [][][]byte, err error) {
	r := NewReader(bytes.NewReader(data), 64)
	r.Limits = l
	for {
		args, err := r.ReadCommand()
		if err != nil {
			return cmds, err
		}
		if len(args) > 0 {
			cp := make([][]byte, len(args))
			for i, a := range args {
				cp[i] = bytes.Clone(a)
			}
			cmds = append(cmds, cp)
		}
	}
}

// checkSame holds Parse to ReadCommand's answer on data.
func checkSame(t *testing.T, data []byte, step int) {
	l := Limits{MaxBulk: 1 << 12, MaxArgs: 64, MaxInline: 256, MaxRequest: 1 << 14}
	want, rerr := readAll(l, data)
	got, partial, perr := parseAll(&l, data, step)
	if perr != nil && !IsProtocol(perr) {
		t.Fatalf("%q: %v", data, perr)
	}
	if len(got) != len(want) && !(perr != nil && len(got) < len(want)) {
		t.Fatalf("%q: Parse found %d commands, ReadCommand %d (%v / %v)", data, len(got), len(want), perr, rerr)
	}
	for i := range got {
		if fmt.Sprintf("%q", got[i]) != fmt.Sprintf("%q", want[i]) {
			t.Fatalf("%q: command %d: Parse %q, ReadCommand %q", data, i, got[i], want[i])
		}
	}
	var pe *ProtocolError
	switch {
	case errors.As(rerr, &pe):
		if perr == nil || perr.Error() != rerr.Error() {
			t.Fatalf("%q: ReadCommand refused it (%v), Parse said %v", data, rerr, perr)
		}
	case errors.Is(rerr, io.ErrUnexpectedEOF):
		// The data ends inside a command: Parse waits for more, unless
		// it already saw a line too long to ever be valid.
		if perr == nil && !partial {
			t.Fatalf("%q: ends inside a command but Parse did not wait for more", data)
		}
		if perr != nil && !strings.Contains(perr.Error(), "too big") {
			t.Fatalf("%q: Parse refused a truncated command: %v", data, perr)
		}
	case errors.Is(rerr, io.EOF):
		// (ReadCommand also ends with io.EOF on an unterminated inline
		// line, where Parse waits for its end.)
		if perr != nil && !strings.Contains(perr.Error(), "too big") {
			t.Fatalf("%q: whole commands, but Parse said %v", data, perr)
		}
	}
}

func TestParseAgreesWithReader(t *testing.T) {
	for _, s := range []string{
		"*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\nPING  x 'y z' \"q\\n\"\r\n",
		"*0\r\n*-1\r\n\r\n\n*1\r\n$4\r\nPING\r\n",
		"*1\r\n$4\r\nPINGxx", "*1\r\n$-1\r\n", "*1\r\n:4\r\n", "*x\r\n", "*99999\r\n",
		"*1\r\n$5000\r\n", "*1\r\n$" + strings.Repeat("1", 70) + "\r\n",
		"*" + strings.Repeat("1", 80), strings.Repeat("a", 300) + "\r\n", "'unbalanced\r\n",
		"*2\r\n$1\r\na\r\n$1\r\nb", "*3\r\n$3\r\nSET\r\n$1\r\n\x00\r\n$0\r\n\r\n",
		"*2\r\n$4096\r\n" + strings.Repeat("v", 4096) + "\r\n$4096\r\n" + strings.Repeat("v", 4096) + "\r\n",
		"*5\r\n" + strings.Repeat("$4000\r\n"+strings.Repeat("w", 4000)+"\r\n", 5),
	} {
		for _, step := range []int{1, 3, 7, 64, 1 << 20} {
			checkSame(t, []byte(s), step)
		}
	}
}

// A large value arriving in pieces is not rescanned for each piece: need
// tells the caller to wait until the whole bulk is there.
func TestParseNeedSkipsRescans(t *testing.T) {
	var l Limits
	cmd := AppendCommand(nil, []byte("SET"), []byte("k"), bytes.Repeat([]byte("x"), 100000))
	_, n, need, err := l.Parse(cmd[:40], nil)
	if err != nil || n != 0 || need != len(cmd) {
		t.Fatalf("n %d need %d (want %d) err %v", n, need, len(cmd), err)
	}
	args, n, _, err := l.Parse(cmd, nil)
	if err != nil || n != len(cmd) || len(args) != 3 || len(args[2]) != 100000 {
		t.Fatalf("n %d err %v", n, err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"*1\r\n$4\r\nPING\r\n", "SET a \"b c\"\r\n", "*2\r\n$3\r\nGET\r\n$-1\r\n", "*-1\r\n", "'unbalanced\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\n\x00\r\n$0\r\n\r\n", "*1\r\n$70000\r\n", "*2\r\n$1\r\na\r\n$1\r\nb"} {
		f.Add([]byte(s), uint8(1))
		f.Add([]byte(s), uint8(5))
	}
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		checkSame(t, data, int(step)%32+1)
	})
}
