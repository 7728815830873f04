package codec

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/wrapperspb"
)

type msg struct {
	A string
	B []int
}

func TestRoundTrips(t *testing.T) {
	for _, c := range []Codec{JSON, Msgpack} {
		b, err := c.Append([]byte("prefix"), &msg{A: "x", B: []int{1, 2}})
		if err != nil || !strings.HasPrefix(string(b), "prefix") {
			t.Fatalf("%s: %v", c.Name(), err)
		}
		var out msg
		if err := c.Unmarshal(b[len("prefix"):], &out); err != nil || out.A != "x" || len(out.B) != 2 {
			t.Fatalf("%s: %+v %v", c.Name(), out, err)
		}
		if ByID(c.ID()) != c {
			t.Fatal("ByID")
		}
	}
	b, err := Proto.Append(nil, wrapperspb.String("hi"))
	if err != nil {
		t.Fatal(err)
	}
	var s wrapperspb.StringValue
	if err := Proto.Unmarshal(b, &s); err != nil || s.Value != "hi" {
		t.Fatal(err)
	}
	if _, err := Proto.Append(nil, &msg{}); err == nil || !strings.Contains(err.Error(), "not a protobuf message") {
		t.Fatalf("want a clear error, got %v", err)
	}
	if For(&s) != Proto || For(&msg{}) != Msgpack {
		t.Fatal("For")
	}
	if _, err := ByName("xml"); err == nil {
		t.Fatal("ByName(xml)")
	}
}

// Five bytes declaring a huge array must be refused before msgpack/v5
// preallocates it; valid messages pass.
func TestMsgpackLengthBomb(t *testing.T) {
	var out struct{ P []*msg }
	bomb := []byte("\x81\xa1P\xdd\x7f\xff\xff\xff\xc0")
	if err := Msgpack.Unmarshal(bomb, &out); err == nil || !strings.Contains(err.Error(), "declares") {
		t.Fatalf("want a refusal, got %v", err)
	}
	b, _ := Msgpack.Append(nil, &struct{ P []*msg }{P: []*msg{{A: "x", B: []int{1, 2, 3}}, nil}})
	if err := checkMsgpack(b); err != nil {
		t.Fatalf("valid message refused: %v", err)
	}
	if err := checkMsgpack(b[:len(b)-1]); err == nil {
		t.Fatal("truncated message accepted")
	}
}

func FuzzMsgpack(f *testing.F) {
	b, _ := Msgpack.Append(nil, &msg{A: "x", B: []int{1, 2}})
	f.Add(b)
	f.Add([]byte("\x81\xa1P\xdd\x7f\xff\xff\xff\xc0"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var m msg
		_ = Msgpack.Unmarshal(in, &m)
		var anyv any
		_ = Msgpack.Unmarshal(in, &anyv)
	})
}
