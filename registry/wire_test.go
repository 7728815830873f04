package registry

import (
	"reflect"
	"testing"

	"github.com/tangram-dev/tangram/rpc/codec"
)

func sampleSnapshot() *Snapshot {
	a := &Instance{Key: Key{Namespace: "prod", Group: "g", Service: "orders"}, ID: "i-1", Host: "10.0.0.1", Port: 80, Weight: 250,
		Zone: "az1", Cluster: "c", Metadata: map[string]string{"v": "2", "proto": "rpc"}, Healthy: true, Enabled: true,
		Ephemeral: true, Owner: "reg-1", Version: 1234567, RegisteredAt: 99}
	b := &Instance{Key: a.Key, ID: "i-2", Host: "db.internal", Port: 5432, Owner: "reg-2", Version: -1}
	return &Snapshot{Key: a.Key, Revision: 42, Node: "reg-1", Full: true, Emptied: false, Instances: []*Instance{a, b},
		Events: []Event{{Revision: 41, Type: EventPut, Instance: a}, {Revision: 42, Type: EventDelete, Instance: b}}}
}

func TestWireRoundTrip(t *testing.T) {
	want := sampleSnapshot()
	b, err := codec.Msgpack.Append(nil, want)
	if err != nil {
		t.Fatal(err)
	}
	var got Snapshot
	if err := codec.Msgpack.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	got.enc = nil
	if !reflect.DeepEqual(&got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	var in Instance
	ib, _ := codec.Msgpack.Append(nil, want.Instances[0])
	if err := codec.Msgpack.Unmarshal(ib, &in); err != nil || !reflect.DeepEqual(&in, want.Instances[0]) {
		t.Fatalf("instance: %+v %v", in, err)
	}
}

// FuzzWire: the snapshot decoder never panics or over-allocates, and what it
// accepts encodes back to itself.
func FuzzWire(f *testing.F) {
	b, _ := codec.Msgpack.Append(nil, sampleSnapshot())
	f.Add(b)
	f.Add([]byte{0xc4, 0x03, 1, 1, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		var s Snapshot
		if err := codec.Msgpack.Unmarshal(in, &s); err != nil {
			return
		}
		again, err := codec.Msgpack.Append(nil, &s)
		if err != nil {
			t.Fatal(err)
		}
		var s2 Snapshot
		if err := codec.Msgpack.Unmarshal(again, &s2); err != nil {
			t.Fatalf("re-decoding: %v", err)
		}
		if len(s2.Instances) != len(s.Instances) || len(s2.Events) != len(s.Events) || s2.Revision != s.Revision {
			t.Fatal("round trip changed the snapshot")
		}
	})
}
