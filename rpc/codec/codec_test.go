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
