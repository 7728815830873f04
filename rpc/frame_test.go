package rpc

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

var frameCases = []Frame{
	{Type: FrameRequest, ID: 1, Codec: 1, Service: "Echo", Method: "Echo", Timeout: 1500 * time.Microsecond, Body: []byte("hello")},
	{Type: FrameResponse, ID: 1<<63 + 5, Codec: 3, Status: NotFound, Message: "unknown method", Meta: Metadata{"k": "v", "traceparent": "00-x"}},
	{Type: FrameOneway, ID: 2, Service: "Log", Method: "Write", Flags: FlagCompressed, Body: []byte{0, 1, 2}},
	{Type: FrameStreamData, ID: 3, Body: bytes.Repeat([]byte{7}, 300)},
	{Type: FramePing, ID: 99},
	{Type: FrameGoAway, ID: 10, Message: "bye"},
}

func encode(f *Frame) []byte { return appendFrame(nil, f) }

func TestFrameRoundTrip(t *testing.T) {
	var stream []byte
	for i := range frameCases {
		stream = append(stream, encode(&frameCases[i])...)
	}
	fr := newFrameReader(bytes.NewReader(stream), 0)
	for i, want := range frameCases {
		var got Frame
		if err := fr.read(&got); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if len(want.Body) == 0 {
			want.Body = nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("frame %d:\n got %+v\nwant %+v", i, got, want)
		}
	}
}

func TestFrameRejects(t *testing.T) {
	good := encode(&frameCases[0])
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"magic", mut(func(b []byte) []byte { b[0] = 'X'; return b }), "bad magic"},
		{"version", mut(func(b []byte) []byte { b[2] = 9; return b }), "unsupported protocol version 9"},
		{"type", mut(func(b []byte) []byte { b[3] = 200; return b }), "unknown frame type 200"},
		{"too large", mut(func(b []byte) []byte { b[20] = 0x7f; return b }), "frame too large"},
		{"truncated body", good[:len(good)-2], "unexpected EOF"},
		{"truncated header", good[:10], "unexpected EOF"},
		{"string overrun", mut(func(b []byte) []byte { b[24] = 100; return b }), "overruns the header section"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var f Frame
			err := newFrameReader(bytes.NewReader(c.in), 1<<20).read(&f)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
	var f Frame
	err := newFrameReader(bytes.NewReader(mut(func(b []byte) []byte { b[20] = 0x7f; return b })), 1<<20).read(&f)
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatal(err)
	}
}

// FuzzFrame feeds arbitrary bytes to the decoder: it must never panic nor
// allocate past the limit, and any frame it accepts must encode back to a
// stream that decodes to the same frame.
func FuzzFrame(f *testing.F) {
	for i := range frameCases {
		f.Add(encode(&frameCases[i]))
	}
	f.Add([]byte("TG\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		fr := newFrameReader(bytes.NewReader(in), 1<<16)
		for {
			var fr1 Frame
			if err := fr.read(&fr1); err != nil {
				return
			}
			if len(fr1.Body) > 1<<16 {
				t.Fatalf("body of %d bytes past the limit", len(fr1.Body))
			}
			var fr2 Frame
			if err := newFrameReader(bytes.NewReader(encode(&fr1)), 1<<17).read(&fr2); err != nil {
				t.Fatalf("re-decoding %+v: %v", fr1, err)
			}
			if len(fr1.Meta) == 0 {
				fr1.Meta = nil
			}
			if !reflect.DeepEqual(fr1, fr2) {
				t.Fatalf("round trip:\n %+v\n %+v", fr1, fr2)
			}
		}
	})
}

// Malformed bytes from a client close only that connection: the server keeps
// serving others.
func TestGarbageClosesOnlyThatConnection(t *testing.T) {
	_, addr := testServer(t, Config{})
	c := dial(t, addr)
	nc, err := netDial(addr)
	must(t, err)
	defer nc.Close()
	nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	buf := make([]byte, 1)
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Read(buf); err == nil {
		t.Fatal("server answered garbage instead of closing")
	}
	if _, err := Call[echoResp](t.Context(), c, "Echo/Echo", &echoReq{Text: "still here"}); err != nil {
		t.Fatal(err)
	}
}
