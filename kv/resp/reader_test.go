package resp

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestReadCommand(t *testing.T) {
	in := "*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\nPING  x 'y z' \"q\\n\"\r\n"
	r := NewReader(bytes.NewBufferString(in), 16)
	args, err := r.ReadCommand()
	if err != nil || len(args) != 2 || string(args[1]) != "a\r\nb" {
		t.Fatal(args, err)
	}
	args, err = r.ReadCommand()
	if err != nil || len(args) != 4 || string(args[2]) != "y z" || string(args[3]) != "q\n" {
		t.Fatalf("%q %v", args, err)
	}
	if _, err := r.ReadCommand(); !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
}

func FuzzReadCommand(f *testing.F) {
	for _, s := range []string{"*1\r\n$4\r\nPING\r\n", "SET a \"b c\"\r\n", "*2\r\n$3\r\nGET\r\n$-1\r\n", "*-1\r\n", "'unbalanced\r\n", "*3\r\n$3\r\nSET\r\n$1\r\n\x00\r\n$0\r\n\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), 64)
		r.MaxBulk, r.MaxArgs, r.MaxRequest = 1<<16, 1<<10, 1<<20
		for i := 0; i < 100; i++ {
			args, err := r.ReadCommand()
			if err != nil {
				return
			}
			// What was read encodes back and reads back the same.
			enc := AppendCommand(nil, args...)
			r2 := NewReader(bytes.NewReader(enc), 64)
			back, err := r2.ReadCommand()
			if err != nil || len(back) != len(args) {
				t.Fatalf("round trip of %q: %q %v", args, back, err)
			}
			for j := range args {
				if !bytes.Equal(back[j], args[j]) {
					t.Fatalf("round trip of %q: %q", args, back)
				}
			}
		}
	})
}
