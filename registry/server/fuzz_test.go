package server

import (
	"testing"

	"github.com/tangram-dev/tangram/registry"

	"github.com/vmihailenco/msgpack/v5"
)

// FuzzGossipMessage feeds arbitrary bytes to the gossip decoder and merge:
// nothing may panic, and whatever is accepted must be a valid instance.
func FuzzGossipMessage(f *testing.F) {
	seed := func(m gossipMsg) {
		b, _ := msgpack.Marshal(&m)
		f.Add(b)
	}
	in := inst("svc", 1)
	in.Owner, in.Version = "peer", 5
	seed(gossipMsg{Kind: msgDelta, Owner: "peer", Puts: []*registry.Instance{&in}})
	seed(gossipMsg{Kind: msgState, Owner: "peer", Stamp: 9, Puts: []*registry.Instance{&in}})
	seed(gossipMsg{Kind: msgDelta, Owner: "peer", Dels: []delRef{{Key: in.Key, ID: "10.0.0.1:1", Version: 6}}})
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := New(Config{Logger: quiet(), NodeName: "self"})
		if err != nil {
			t.Fatal(err)
		}
		g := &gossip{r: r, log: quiet()}
		g.NotifyMsg(b)
		for _, s := range r.services {
			for _, in := range s.instances.all() {
				c := in.Clone()
				if err := c.Normalize(); err != nil || !in.Ephemeral {
					t.Fatalf("accepted an invalid instance %+v: %v", in, err)
				}
			}
		}
	})
}
