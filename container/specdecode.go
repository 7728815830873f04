package container

import (
	"encoding/json"
	"os"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// decodeSpec decodes a runtime spec (config.json, or the spec in the
// init's orders). encoding/json stays the reference: its first decode in
// a process builds reflection caches for the spec's dozens of types,
// 0.5–1 ms — a tenth of a whole container run, paid by every runtime
// process (runc pays it too). So the fields bundles commonly hold are
// first read by a hand-written decoder that allocates only the result;
// anything it does not know — another field, a key cased differently, a
// null, an escape or a non-ASCII byte in a string, a number that is not a
// plain integer, a repeated key, malformed JSON — sends the whole
// document to encoding/json, whose result and errors are the ones
// returned. A fuzz test holds the two to the same result.
func decodeSpec(b []byte) (*specs.Spec, error) {
	if s, ok := fastSpec(b); ok {
		return s, nil
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// fastSpec decodes b when every part of it is one the fast decoder knows.
func fastSpec(b []byte) (*specs.Spec, bool) {
	d := &specDecoder{b: b}
	s := d.spec()
	d.space()
	if d.bad || d.i != len(d.b) {
		return nil, false
	}
	return s, true
}

// specDecoder reads JSON from b at i; bad means "leave it to
// encoding/json", and once set every method returns zero values.
type specDecoder struct {
	b   []byte
	i   int
	bad bool
}

func (d *specDecoder) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// next skips white space and reports the next byte (0 at the end).
func (d *specDecoder) next() byte {
	d.space()
	if d.bad || d.i >= len(d.b) {
		d.bad = true
		return 0
	}
	return d.b[d.i]
}

func (d *specDecoder) want(c byte) {
	if d.next() != c {
		d.bad = true
		return
	}
	d.i++
}

// object calls field for each key of an object, positioned at its value;
// field returns false for a key it does not know. A repeated key is left
// to encoding/json (it merges into the first value). maps set dup false:
// a repeated map key simply overwrites, as encoding/json does.
func (d *specDecoder) object(dup bool, field func(key string) bool) {
	d.want('{')
	if d.bad {
		return
	}
	if d.next() == '}' {
		d.i++
		return
	}
	var seen []string
	for !d.bad {
		key := d.str()
		d.want(':')
		if d.bad {
			return
		}
		if dup {
			for _, k := range seen {
				if k == key {
					d.bad = true
					return
				}
			}
			seen = append(seen, key)
		}
		if !field(key) {
			d.bad = true
			return
		}
		switch d.next() {
		case ',':
			d.i++
		case '}':
			d.i++
			return
		default:
			d.bad = true
		}
	}
}

// array calls elem for each element; an empty array is reported by a
// first call never made (callers make their empty, non-nil slice).
func (d *specDecoder) array(elem func()) {
	d.want('[')
	if d.bad {
		return
	}
	if d.next() == ']' {
		d.i++
		return
	}
	for !d.bad {
		elem()
		switch d.next() {
		case ',':
			d.i++
		case ']':
			d.i++
			return
		default:
			d.bad = true
		}
	}
}

// str reads a string of printable ASCII without escapes.
func (d *specDecoder) str() string {
	d.want('"')
	if d.bad {
		return ""
	}
	start := d.i
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			s := string(d.b[start:d.i])
			d.i++
			return s
		case c < 0x20 || c >= 0x80 || c == '\\':
			d.bad = true
			return ""
		}
		d.i++
	}
	d.bad = true
	return ""
}

func (d *specDecoder) boolean() bool {
	switch d.next() {
	case 't':
		if d.literal("true") {
			return true
		}
	case 'f':
		if d.literal("false") {
			return false
		}
	}
	d.bad = true
	return false
}

func (d *specDecoder) literal(s string) bool {
	if len(d.b)-d.i < len(s) || string(d.b[d.i:d.i+len(s)]) != s {
		return false
	}
	d.i += len(s)
	return true
}

// integer reads a JSON integer (no fraction or exponent: encoding/json
// refuses those for integer fields too, which fallback reports).
func (d *specDecoder) integer(signed bool) string {
	d.next()
	if d.bad {
		return ""
	}
	start := d.i
	if d.i < len(d.b) && d.b[d.i] == '-' {
		if !signed {
			d.bad = true
			return ""
		}
		d.i++
	}
	digits := d.i
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	n := d.i - digits
	if n == 0 || (n > 1 && d.b[digits] == '0') {
		d.bad = true
		return ""
	}
	if d.i < len(d.b) {
		switch d.b[d.i] {
		case '.', 'e', 'E':
			d.bad = true
			return ""
		}
	}
	return string(d.b[start:d.i])
}

func (d *specDecoder) int64(bits int) int64 {
	s := d.integer(true)
	if d.bad {
		return 0
	}
	v, err := strconv.ParseInt(s, 10, bits)
	if err != nil {
		d.bad = true
	}
	return v
}

func (d *specDecoder) uint64(bits int) uint64 {
	s := d.integer(false)
	if d.bad {
		return 0
	}
	v, err := strconv.ParseUint(s, 10, bits)
	if err != nil {
		d.bad = true
	}
	return v
}

func (d *specDecoder) uint32() uint32 { return uint32(d.uint64(32)) }

func (d *specDecoder) strings() []string {
	out := []string{}
	d.array(func() { out = append(out, d.str()) })
	return out
}

func (d *specDecoder) stringMap() map[string]string {
	out := map[string]string{}
	d.object(false, func(k string) bool { out[k] = d.str(); return true })
	return out
}

func (d *specDecoder) spec() *specs.Spec {
	s := &specs.Spec{}
	d.object(true, func(k string) bool {
		switch k {
		case "ociVersion":
			s.Version = d.str()
		case "process":
			s.Process = d.process()
		case "root":
			s.Root = &specs.Root{}
			d.object(true, func(k string) bool {
				switch k {
				case "path":
					s.Root.Path = d.str()
				case "readonly":
					s.Root.Readonly = d.boolean()
				default:
					return false
				}
				return true
			})
		case "hostname":
			s.Hostname = d.str()
		case "domainname":
			s.Domainname = d.str()
		case "mounts":
			s.Mounts = []specs.Mount{}
			d.array(func() { s.Mounts = append(s.Mounts, d.mount()) })
		case "annotations":
			s.Annotations = d.stringMap()
		case "linux":
			s.Linux = d.linux()
		default:
			return false
		}
		return true
	})
	return s
}

func (d *specDecoder) process() *specs.Process {
	p := &specs.Process{}
	d.object(true, func(k string) bool {
		switch k {
		case "terminal":
			p.Terminal = d.boolean()
		case "user":
			d.object(true, func(k string) bool {
				switch k {
				case "uid":
					p.User.UID = d.uint32()
				case "gid":
					p.User.GID = d.uint32()
				case "umask":
					v := d.uint32()
					p.User.Umask = &v
				case "additionalGids":
					p.User.AdditionalGids = []uint32{}
					d.array(func() { p.User.AdditionalGids = append(p.User.AdditionalGids, d.uint32()) })
				default:
					return false
				}
				return true
			})
		case "args":
			p.Args = d.strings()
		case "env":
			p.Env = d.strings()
		case "cwd":
			p.Cwd = d.str()
		case "capabilities":
			c := &specs.LinuxCapabilities{}
			p.Capabilities = c
			d.object(true, func(k string) bool {
				switch k {
				case "bounding":
					c.Bounding = d.strings()
				case "effective":
					c.Effective = d.strings()
				case "inheritable":
					c.Inheritable = d.strings()
				case "permitted":
					c.Permitted = d.strings()
				case "ambient":
					c.Ambient = d.strings()
				default:
					return false
				}
				return true
			})
		case "rlimits":
			p.Rlimits = []specs.POSIXRlimit{}
			d.array(func() {
				var r specs.POSIXRlimit
				d.object(true, func(k string) bool {
					switch k {
					case "type":
						r.Type = d.str()
					case "hard":
						r.Hard = d.uint64(64)
					case "soft":
						r.Soft = d.uint64(64)
					default:
						return false
					}
					return true
				})
				p.Rlimits = append(p.Rlimits, r)
			})
		case "noNewPrivileges":
			p.NoNewPrivileges = d.boolean()
		case "apparmorProfile":
			p.ApparmorProfile = d.str()
		case "selinuxLabel":
			p.SelinuxLabel = d.str()
		case "oomScoreAdj":
			v := int(d.int64(strconv.IntSize))
			p.OOMScoreAdj = &v
		default:
			return false
		}
		return true
	})
	return p
}

func (d *specDecoder) mount() specs.Mount {
	var m specs.Mount
	d.object(true, func(k string) bool {
		switch k {
		case "destination":
			m.Destination = d.str()
		case "type":
			m.Type = d.str()
		case "source":
			m.Source = d.str()
		case "options":
			m.Options = d.strings()
		case "uidMappings":
			m.UIDMappings = d.idMappings()
		case "gidMappings":
			m.GIDMappings = d.idMappings()
		default:
			return false
		}
		return true
	})
	return m
}

func (d *specDecoder) idMappings() []specs.LinuxIDMapping {
	out := []specs.LinuxIDMapping{}
	d.array(func() {
		var m specs.LinuxIDMapping
		d.object(true, func(k string) bool {
			switch k {
			case "containerID":
				m.ContainerID = d.uint32()
			case "hostID":
				m.HostID = d.uint32()
			case "size":
				m.Size = d.uint32()
			default:
				return false
			}
			return true
		})
		out = append(out, m)
	})
	return out
}

func (d *specDecoder) linux() *specs.Linux {
	l := &specs.Linux{}
	d.object(true, func(k string) bool {
		switch k {
		case "uidMappings":
			l.UIDMappings = d.idMappings()
		case "gidMappings":
			l.GIDMappings = d.idMappings()
		case "sysctl":
			l.Sysctl = d.stringMap()
		case "resources":
			l.Resources = d.resources()
		case "cgroupsPath":
			l.CgroupsPath = d.str()
		case "namespaces":
			l.Namespaces = []specs.LinuxNamespace{}
			d.array(func() {
				var n specs.LinuxNamespace
				d.object(true, func(k string) bool {
					switch k {
					case "type":
						n.Type = specs.LinuxNamespaceType(d.str())
					case "path":
						n.Path = d.str()
					default:
						return false
					}
					return true
				})
				l.Namespaces = append(l.Namespaces, n)
			})
		case "devices":
			l.Devices = []specs.LinuxDevice{}
			d.array(func() { l.Devices = append(l.Devices, d.device()) })
		case "seccomp":
			l.Seccomp = d.seccomp()
		case "rootfsPropagation":
			l.RootfsPropagation = d.str()
		case "maskedPaths":
			l.MaskedPaths = d.strings()
		case "readonlyPaths":
			l.ReadonlyPaths = d.strings()
		case "mountLabel":
			l.MountLabel = d.str()
		default:
			return false
		}
		return true
	})
	return l
}

func (d *specDecoder) device() specs.LinuxDevice {
	var v specs.LinuxDevice
	d.object(true, func(k string) bool {
		switch k {
		case "path":
			v.Path = d.str()
		case "type":
			v.Type = d.str()
		case "major":
			v.Major = d.int64(64)
		case "minor":
			v.Minor = d.int64(64)
		case "fileMode":
			m := os.FileMode(d.uint32())
			v.FileMode = &m
		case "uid":
			u := d.uint32()
			v.UID = &u
		case "gid":
			g := d.uint32()
			v.GID = &g
		default:
			return false
		}
		return true
	})
	return v
}

func (d *specDecoder) resources() *specs.LinuxResources {
	r := &specs.LinuxResources{}
	i64 := func() *int64 { v := d.int64(64); return &v }
	u64 := func() *uint64 { v := d.uint64(64); return &v }
	d.object(true, func(k string) bool {
		switch k {
		case "devices":
			r.Devices = []specs.LinuxDeviceCgroup{}
			d.array(func() {
				var c specs.LinuxDeviceCgroup
				d.object(true, func(k string) bool {
					switch k {
					case "allow":
						c.Allow = d.boolean()
					case "type":
						c.Type = d.str()
					case "major":
						c.Major = i64()
					case "minor":
						c.Minor = i64()
					case "access":
						c.Access = d.str()
					default:
						return false
					}
					return true
				})
				r.Devices = append(r.Devices, c)
			})
		case "memory":
			m := &specs.LinuxMemory{}
			r.Memory = m
			d.object(true, func(k string) bool {
				switch k {
				case "limit":
					m.Limit = i64()
				case "reservation":
					m.Reservation = i64()
				case "swap":
					m.Swap = i64()
				case "swappiness":
					m.Swappiness = u64()
				case "disableOOMKiller":
					v := d.boolean()
					m.DisableOOMKiller = &v
				default:
					return false
				}
				return true
			})
		case "cpu":
			c := &specs.LinuxCPU{}
			r.CPU = c
			d.object(true, func(k string) bool {
				switch k {
				case "shares":
					c.Shares = u64()
				case "quota":
					c.Quota = i64()
				case "burst":
					c.Burst = u64()
				case "period":
					c.Period = u64()
				case "cpus":
					c.Cpus = d.str()
				case "mems":
					c.Mems = d.str()
				default:
					return false
				}
				return true
			})
		case "pids":
			r.Pids = &specs.LinuxPids{}
			d.object(true, func(k string) bool {
				if k != "limit" {
					return false
				}
				r.Pids.Limit = i64()
				return true
			})
		case "unified":
			r.Unified = d.stringMap()
		default:
			return false
		}
		return true
	})
	return r
}

func (d *specDecoder) seccomp() *specs.LinuxSeccomp {
	s := &specs.LinuxSeccomp{}
	uptr := func() *uint { v := uint(d.uint64(strconv.IntSize)); return &v }
	d.object(true, func(k string) bool {
		switch k {
		case "defaultAction":
			s.DefaultAction = specs.LinuxSeccompAction(d.str())
		case "defaultErrnoRet":
			s.DefaultErrnoRet = uptr()
		case "architectures":
			s.Architectures = []specs.Arch{}
			d.array(func() { s.Architectures = append(s.Architectures, specs.Arch(d.str())) })
		case "flags":
			s.Flags = []specs.LinuxSeccompFlag{}
			d.array(func() { s.Flags = append(s.Flags, specs.LinuxSeccompFlag(d.str())) })
		case "listenerPath":
			s.ListenerPath = d.str()
		case "listenerMetadata":
			s.ListenerMetadata = d.str()
		case "syscalls":
			s.Syscalls = []specs.LinuxSyscall{}
			d.array(func() {
				var c specs.LinuxSyscall
				d.object(true, func(k string) bool {
					switch k {
					case "names":
						c.Names = d.strings()
					case "action":
						c.Action = specs.LinuxSeccompAction(d.str())
					case "errnoRet":
						c.ErrnoRet = uptr()
					case "args":
						c.Args = []specs.LinuxSeccompArg{}
						d.array(func() {
							var a specs.LinuxSeccompArg
							d.object(true, func(k string) bool {
								switch k {
								case "index":
									a.Index = uint(d.uint64(strconv.IntSize))
								case "value":
									a.Value = d.uint64(64)
								case "valueTwo":
									a.ValueTwo = d.uint64(64)
								case "op":
									a.Op = specs.LinuxSeccompOperator(d.str())
								default:
									return false
								}
								return true
							})
							c.Args = append(c.Args, a)
						})
					default:
						return false
					}
					return true
				})
				s.Syscalls = append(s.Syscalls, c)
			})
		default:
			return false
		}
		return true
	})
	return s
}
