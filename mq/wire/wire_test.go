package wire

import (
	"errors"
	"strings"
	"testing"

	"github.com/tangram-dev/tangram/rpc/codec"
)

func sampleSend() *SendRequest {
	return &SendRequest{Topic: "orders", Queue: 2, AutoCreate: true, Queues: 8, Msgs: []Msg{
		{Props: map[string]string{PropKeys: "a b", PropTags: "paid"}, Body: []byte("hello"), BornAt: 42},
		{Body: []byte{}, BornAt: 7},
	}}
}

func samplePull() *PullReply {
	return &PullReply{Next: 10, Min: 1, Max: 12, Moved: true, Msgs: []StoredMsg{
		{ID: FormatID("b1", 4096, 120), Topic: "orders", Queue: 3, QueueOffset: 9, Props: map[string]string{"k": "v"}, Body: []byte("x"), BornAt: 1, StoredAt: 2},
	}}
}

func TestCodecRoundTrip(t *testing.T) {
	for _, c := range []codec.Codec{codec.Msgpack, codec.JSON} {
		b, err := c.Append(nil, sampleSend())
		if err != nil {
			t.Fatal(err)
		}
		var got SendRequest
		if err := c.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", c.Name(), err)
		}
		if got.Topic != "orders" || got.Queue != 2 || !got.AutoCreate || got.Queues != 8 || len(got.Msgs) != 2 ||
			string(got.Msgs[0].Body) != "hello" || got.Msgs[0].Props[PropTags] != "paid" || got.Msgs[1].BornAt != 7 {
			t.Fatalf("%s: %+v", c.Name(), got)
		}
		b, err = c.Append(nil, samplePull())
		if err != nil {
			t.Fatal(err)
		}
		var pr PullReply
		if err := c.Unmarshal(b, &pr); err != nil {
			t.Fatalf("%s: %v", c.Name(), err)
		}
		if pr.Next != 10 || !pr.Moved || len(pr.Msgs) != 1 || pr.Msgs[0].ID != samplePull().Msgs[0].ID || pr.Msgs[0].StoredAt != 2 {
			t.Fatalf("%s: %+v", c.Name(), pr)
		}
	}
}

func TestCheck(t *testing.T) {
	cases := []struct {
		name string
		mod  func(r *SendRequest)
		want string
	}{
		{"ok", func(r *SendRequest) {}, ""},
		{"topic", func(r *SendRequest) { r.Topic = "a/b" }, "name"},
		{"empty", func(r *SendRequest) { r.Msgs = nil }, "batch of 0"},
		{"queue", func(r *SendRequest) { r.Queue = -2 }, "queue -2"},
		{"body", func(r *SendRequest) { r.Msgs[0].Body = make([]byte, 11) }, "exceeds the limit of 10"},
		{"prop", func(r *SendRequest) { r.Msgs[0].Props[""] = "x" }, "property"},
	}
	for _, c := range cases {
		r := sampleSend()
		c.mod(r)
		err := r.Check(10)
		if c.want == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

func TestParseID(t *testing.T) {
	id := FormatID("broker-1", 1<<40, 300)
	b, off, sz, err := ParseID(id)
	if err != nil || b != "broker-1" || off != 1<<40 || sz != 300 {
		t.Fatalf("%q: %v %v %v %v", id, b, off, sz, err)
	}
	for _, bad := range []string{"", "x@b", "0000000000000000000000zz@b", "000000000000000000000000@b", strings.Repeat("F", 24) + "@b", "00000000000000010000000A@"} {
		if _, _, _, err := ParseID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzSendRequest decodes arbitrary bytes as a send request the way a
// broker does: it may fail, never panic or allocate beyond the limits,
// and what decodes and passes Check re-encodes.
func FuzzSendRequest(f *testing.F) {
	for _, v := range []any{sampleSend(), samplePull(), &SendRequest{Topic: "t", Queue: -1, Msgs: []Msg{{Body: []byte("b")}}}} {
		b, _ := codec.Msgpack.Append(nil, v)
		f.Add(b)
	}
	f.Add([]byte{0x95, 0xa1, 't', 0x00, 0xc2, 0x00, 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r SendRequest
		if err := codec.Msgpack.Unmarshal(data, &r); err != nil {
			return
		}
		if len(r.Msgs) > MaxBatch {
			t.Fatalf("%d messages decoded", len(r.Msgs))
		}
		if r.Check(DefaultMaxBody) != nil {
			return
		}
		if _, err := codec.Msgpack.Append(nil, &r); err != nil {
			t.Fatal(err)
		}
		var p PullReply
		_ = codec.Msgpack.Unmarshal(data, &p)
		if len(p.Msgs) > MaxPull {
			t.Fatalf("%d pulled messages decoded", len(p.Msgs))
		}
	})
}

// FuzzParseID: message IDs come from users (look-ups, resends, retries).
func FuzzParseID(f *testing.F) {
	f.Add(FormatID("b", 0, 1))
	f.Add("garbage@")
	f.Fuzz(func(t *testing.T, s string) {
		b, off, sz, err := ParseID(s)
		if err != nil {
			return
		}
		if off < 0 || sz <= 0 || b == "" {
			t.Fatalf("%q parsed to %q %d %d", s, b, off, sz)
		}
		if FormatID(b, off, sz) != strings.ToUpper(s[:24])+"@"+b {
			t.Fatalf("%q does not round-trip", s)
		}
	})
}
