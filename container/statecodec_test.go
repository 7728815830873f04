package container

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/container/network"
)

func sampleStates() []*State {
	code := 137
	created := time.Date(2026, 12, 7, 13, 45, 1, 123456789, time.UTC)
	return []*State{
		{OCIVersion: "1.3.0", ID: "c1", Status: Creating, Bundle: "/b", Rootfs: "/b/rootfs", Cgroup: "tangram/c1", Created: created},
		{OCIVersion: "1.3.0", ID: "c1b", Status: Stopped, Pid: 99, Bundle: "/b", Rootfs: "/b/rootfs", Cgroup: "/x",
			Annotations: map[string]string{"tangram.image": "busybox:latest", "b": ""}, Created: created, InitStart: 12345, ExitCode: &code},
		{OCIVersion: "1.3.0", ID: "c2", Status: Stopped, Pid: 4242, Bundle: "/b \"quoted\" \\ \t", Rootfs: "/r", Cgroup: "",
			Annotations: map[string]string{"z": "1", "a": "ünïcode", "ctl": "\x01\x1f"}, Created: created.Truncate(time.Second), InitStart: 1 << 40, ExitCode: &code},
		{OCIVersion: "1.3.0", ID: "c3", Status: Running, Pid: 7, Bundle: "/b", Created: created,
			Network: &network.Endpoint{Bridge: "tangram0", IP: "10.88.0.2/16", Gateway: "10.88.0.1", HostIf: "veth1", Ports: []network.Port{}}},
		{ID: "bad-utf8-\xff", Annotations: map[string]string{}},
	}
}

func TestStateCodecMatchesEncodingJSON(t *testing.T) {
	for i, st := range sampleStates() {
		b, err := encodeState(st)
		if err != nil {
			t.Fatal(err)
		}
		var viaJSON State
		if err := json.Unmarshal(b, &viaJSON); err != nil {
			t.Fatalf("state %d: encodeState wrote what encoding/json cannot read: %v\n%s", i, err, b)
		}
		want, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		var fromWant State
		if err := json.Unmarshal(want, &fromWant); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(viaJSON, fromWant) {
			t.Fatalf("state %d: encodeState means\n%+v\nencoding/json means\n%+v", i, viaJSON, fromWant)
		}
		got, err := decodeState(b)
		if err != nil || !reflect.DeepEqual(*got, fromWant) {
			t.Fatalf("state %d: decodeState %+v %v, want %+v", i, got, err, fromWant)
		}
		if i < 2 {
			if _, ok := fastState(b); !ok {
				t.Fatalf("state %d: the fast decoder gave up on what encodeState wrote: %s", i, b)
			}
		}
	}
}

// FuzzDecodeState holds the state decoder to encoding/json.
func FuzzDecodeState(f *testing.F) {
	for _, st := range sampleStates() {
		b, err := encodeState(st)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"created":"2026-12-07T13:45:01.5+00:00"}`))
	f.Add([]byte(`{"created":"2026-13-07T13:45:01Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gerr := decodeState(b)
		var want State
		werr := json.Unmarshal(b, &want)
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("decodeState error %v, encoding/json error %v", gerr, werr)
		}
		if gerr == nil && !reflect.DeepEqual(*got, want) {
			t.Fatalf("decodeState %+v, encoding/json %+v", *got, want)
		}
	})
}
