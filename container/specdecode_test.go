package container

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tangram-dev/tangram/container/seccomp"
)

// sampleSpecs are specs as bundles hold them: runc's defaults, rootless,
// with a seccomp profile, and with every resource the fast decoder reads.
func sampleSpecs() []*specs.Spec {
	plain := DefaultSpec("rootfs", []string{"sh", "-c", "echo hi"})
	rootless := DefaultSpec("/abs/rootfs", []string{"true"})
	Rootless(rootless, 1000, 1000)
	filtered := DefaultSpec("rootfs", []string{"true"})
	filtered.Linux.Seccomp = seccomp.Default()
	full := DefaultSpec("rootfs", []string{"true"})
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	u32 := func(v uint32) *uint32 { return &v }
	yes := true
	oom := -500
	mode := os.FileMode(0o620)
	full.Process.User.UID, full.Process.User.GID = 1000, 1001
	full.Process.OOMScoreAdj = &oom
	full.Process.User.Umask = u32(0o22)
	full.Process.User.AdditionalGids = []uint32{10, 20}
	full.Process.Rlimits = append(full.Process.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_NPROC", Hard: 1 << 63, Soft: 0})
	full.Process.ApparmorProfile, full.Process.SelinuxLabel = "profile", "label"
	full.Domainname = "example.test"
	full.Annotations = map[string]string{"a": "b", "tangram.network": "bridge"}
	full.Linux.Sysctl = map[string]string{"net.ipv4.ip_forward": "1"}
	full.Linux.CgroupsPath = "/tangram/x"
	full.Linux.RootfsPropagation, full.Linux.MountLabel = "rprivate", "mlabel"
	full.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229, FileMode: &mode, UID: u32(0), GID: u32(5)}}
	full.Linux.Resources.Memory = &specs.LinuxMemory{Limit: i64(64 << 20), Reservation: i64(-1), Swap: i64(128 << 20), Swappiness: u64(0), DisableOOMKiller: &yes}
	full.Linux.Resources.CPU = &specs.LinuxCPU{Shares: u64(512), Quota: i64(50000), Burst: u64(0), Period: u64(100000), Cpus: "0-1", Mems: "0"}
	full.Linux.Resources.Pids = &specs.LinuxPids{Limit: i64(64)}
	full.Linux.Resources.Unified = map[string]string{"memory.high": "max"}
	full.Mounts = append(full.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: "/srv", Options: []string{}, UIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 1}}})
	empty := &specs.Spec{Process: &specs.Process{Args: []string{}, Env: []string{}}, Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{}}}
	return []*specs.Spec{plain, rootless, filtered, full, empty}
}

func TestDecodeSpecFastPathMatchesEncodingJSON(t *testing.T) {
	for i, s := range sampleSpecs() {
		for _, indent := range []bool{false, true} {
			var b []byte
			var err error
			if indent {
				b, err = json.MarshalIndent(s, "", "\t")
			} else {
				b, err = json.Marshal(s)
			}
			if err != nil {
				t.Fatal(err)
			}
			fast, ok := fastSpec(b)
			if !ok {
				t.Fatalf("spec %d (indent %v): the fast decoder gave up on a spec it should read:\n%s", i, indent, b)
			}
			var want specs.Spec
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(fast, &want) {
				t.Fatalf("spec %d: fast decoder\n%+v\nencoding/json\n%+v", i, fast, &want)
			}
		}
	}
}

func TestDecodeSpecLeavesTheRestToEncodingJSON(t *testing.T) {
	base, err := json.Marshal(DefaultSpec("rootfs", []string{"true"}))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"a field it does not read": strings.Replace(string(base), `"ociVersion"`, `"hooks":{"prestart":[{"path":"/bin/true"}]},"ociVersion"`, 1),
		"a key cased differently":  strings.Replace(string(base), `"hostname"`, `"Hostname"`, 1),
		"an escape in a string":    strings.Replace(string(base), `"hostname":"`, `"hostname":"a\"b`, 1),
		"non-ASCII in a string":    strings.Replace(string(base), `"hostname":"`, `"hostname":"é`, 1),
		"a null":                   strings.Replace(string(base), `"hostname":"tangram"`, `"hostname":null`, 1),
		"a repeated key":           strings.Replace(string(base), `"ociVersion"`, `"root":{"readonly":false},"ociVersion"`, 1),
		"a fraction":               strings.Replace(string(base), `"uid":0`, `"uid":0.0`, 1),
	}
	for name, doc := range cases {
		if doc == string(base) {
			t.Fatalf("%s: the case does not change the document", name)
		}
		if _, ok := fastSpec([]byte(doc)); ok {
			t.Errorf("%s: the fast decoder took it", name)
		}
		got, gerr := decodeSpec([]byte(doc))
		var want specs.Spec
		werr := json.Unmarshal([]byte(doc), &want)
		if (gerr == nil) != (werr == nil) || (gerr == nil && !reflect.DeepEqual(got, &want)) {
			t.Errorf("%s: decodeSpec %v %v, encoding/json %v", name, got, gerr, werr)
		}
	}
	for _, doc := range []string{``, `[]`, `{`, `{"process":{"args":["a",]}}`, `{"linux":{"resources":{"pids":{"limit":99999999999999999999}}}}`, `{} x`,
		`{"process":{"user":{"uid":01}}}`, `{"process":{"user":{"uid":-1}}}`, `{"process":{"terminal":tru}}`, `{"hostname":"a`} {
		if _, err := decodeSpec([]byte(doc)); err == nil {
			t.Errorf("%q decoded without an error", doc)
		}
	}
}

// FuzzDecodeSpec holds the fast decoder to encoding/json: whatever it
// takes, encoding/json takes too, with the same result.
func FuzzDecodeSpec(f *testing.F) {
	for _, s := range sampleSpecs() {
		b, err := json.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"process":{"user":{"uid":-1}}}`))
	f.Add([]byte(`{"linux":{"resources":{"memory":{"limit":-0}}}}`))
	f.Add([]byte(`{"process":{"user":{"uid":01}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ok := fastSpec(b)
		got, gerr := decodeSpec(b)
		var want specs.Spec
		werr := json.Unmarshal(b, &want)
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("decodeSpec error %v, encoding/json error %v", gerr, werr)
		}
		if gerr == nil && !reflect.DeepEqual(got, &want) {
			t.Fatalf("decodeSpec %+v, encoding/json %+v", got, &want)
		}
		if ok && !reflect.DeepEqual(fast, &want) {
			t.Fatalf("fast decoder %+v, encoding/json %+v", fast, &want)
		}
	})
}

func TestDecodeOrderMatchesEncodingJSON(t *testing.T) {
	for _, s := range sampleSpecs() {
		for _, o := range []initOrder{{Spec: s}, {Spec: s, BindDevices: true, CgroupNS: true}} {
			b, err := json.Marshal(o)
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, '\n')
			got, err := decodeOrder(b)
			if err != nil {
				t.Fatal(err)
			}
			var want initOrder
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("decodeOrder %+v, encoding/json %+v", got, want)
			}
		}
	}
	if _, err := decodeOrder([]byte(`{"spec":{},"later":1}`)); err != nil {
		t.Fatalf("an order with a field the fast decoder does not know: %v", err)
	}
	if _, err := decodeOrder([]byte(`{"spec":`)); err == nil {
		t.Fatal("a cut order decoded")
	}
}
