package proxy

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"
)

// pipe is a packetConn reading what the other end writes.
func pipe(t *testing.T, max int) (*packetConn, *packetConn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return newPacketConn(a, max), newPacketConn(b, max)
}

// A payload longer than one packet is split on the way out and joined on
// the way in, the sequence numbers running on; an exact multiple of the
// packet size ends with an empty packet.
func TestSplitPackets(t *testing.T) {
	for _, n := range []int{0, 1, maxChunk - 1, maxChunk, maxChunk + 1, 2*maxChunk + 5} {
		w, r := pipe(t, 64<<20)
		payload := bytes.Repeat([]byte{byte(n)}, n)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		errc := make(chan error, 1)
		go func() {
			b := append(w.begin(), payload...)
			err := w.send(b)
			if err == nil {
				err = w.flush()
			}
			errc <- err
		}()
		got, err := r.read()
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("%d bytes: read back %d bytes, not the same", n, len(got))
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if want := uint8(n/maxChunk + 1); r.seq != want || w.seq != want {
			t.Fatalf("%d bytes: sequence %d/%d after, want %d", n, w.seq, r.seq, want)
		}
	}
}

// A payload beyond the limit is refused without reading it whole; a
// packet out of sequence is an error.
func TestPacketLimits(t *testing.T) {
	w, r := pipe(t, 100)
	go func() {
		_ = w.send(append(w.begin(), make([]byte, 101)...))
		_ = w.flush()
	}()
	if _, err := r.read(); !errors.Is(err, errPacketTooLarge) {
		t.Fatalf("a 101-byte payload with a 100-byte limit: %v", err)
	}
	w, r = pipe(t, 100)
	w.seq = 3
	go func() {
		_ = w.send(append(w.begin(), 1, 2, 3))
		_ = w.flush()
	}()
	_ = r.nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.read(); err == nil {
		t.Fatal("a packet with sequence 3 first was read")
	}
}

// readFrom reads packets from raw bytes until an error.
func readFrom(raw []byte, max int) {
	a, b := net.Pipe()
	go func() {
		_, _ = a.Write(raw)
		a.Close()
	}()
	pc := newPacketConn(b, max)
	for range 100 {
		if _, err := pc.read(); err != nil {
			break
		}
		pc.seq = 0
	}
	b.Close()
}

func FuzzPacket(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 3})
	f.Add([]byte{0xff, 0xff, 0xff, 0, 1, 2})
	f.Add([]byte{5, 0, 0, 1, 1})
	f.Fuzz(func(t *testing.T, raw []byte) {
		readFrom(raw, 1<<16)
	})
}

func FuzzHandshakeResponse(f *testing.F) {
	good := appendU32(nil, capProtocol41|capSecureConn|capPluginAuth|capConnectWithDB)
	good = appendU32(good, 1<<24)
	good = append(good, 45)
	good = append(good, make([]byte, 23)...)
	good = appendNulStr(good, "app")
	good = append(good, 20)
	good = append(good, bytes.Repeat([]byte{7}, 20)...)
	good = appendNulStr(good, "sharding_db")
	good = appendNulStr(good, NativePassword)
	f.Add(good)
	f.Add(good[:40])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		h, err := parseHandshakeResponse(p)
		if err == nil && h.caps&capProtocol41 == 0 {
			t.Fatalf("accepted a pre-4.1 response")
		}
		_ = checkPassword(h.plugin, "secret", bytes.Repeat([]byte{1}, 20), h.auth)
	})
}

// Every parameter type the protocol has decodes from arbitrary bytes to
// a value or an error, never a panic or a read past the packet.
func FuzzExecuteArgs(f *testing.F) {
	// 2 parameters: no NULLs, types bound (LONGLONG, VAR_STRING), 7, "ab".
	seed := []byte{0, 1, typeLongLong, 0, typeVarString, 0, 7, 0, 0, 0, 0, 0, 0, 0, 2, 'a', 'b'}
	f.Add(uint8(2), seed)
	f.Add(uint8(1), []byte{0, 1, typeDateTime, 0, 11, 0xea, 7, 12, 6, 9, 30, 15, 1, 0, 0, 0})
	f.Add(uint8(1), []byte{0, 1, typeTime, 0, 12, 1, 1, 0, 0, 0, 2, 3, 4, 5, 0, 0, 0})
	f.Add(uint8(3), []byte{5, 0})
	f.Fuzz(func(t *testing.T, n uint8, body []byte) {
		st := &prepared{params: int(n)}
		r := reader{b: body}
		args, err := st.decodeArgs(&r)
		if err == nil && len(args) != int(n) {
			t.Fatalf("%d parameters decoded as %d", n, len(args))
		}
	})
}
