package container

import (
	"encoding/json"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// State files are written two or three times and read once or more by
// every runtime command; encoding/json's first use in a process builds its
// reflection caches for State and time.Time, which costs a one-shot
// `tangram-oci run` more than the writes themselves. These hand-written
// forms cover a state without a network endpoint (the common case) and
// leave everything else to encoding/json, as decodeSpec does; a test and
// a fuzz test hold them to it.

// encodeState is json.Marshal(st), by hand where it can be.
func encodeState(st *State) ([]byte, error) {
	if st.Network != nil || !utf8.ValidString(st.OCIVersion+st.ID+string(st.Status)+st.Bundle+st.Rootfs+st.Cgroup) ||
		st.Created.Year() < 0 || st.Created.Year() > 9999 {
		return json.Marshal(st)
	}
	keys := make([]string, 0, len(st.Annotations))
	for k, v := range st.Annotations {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return json.Marshal(st)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b := make([]byte, 0, 256)
	b = append(b, `{"ociVersion":`...)
	b = appendJSONString(b, st.OCIVersion)
	b = append(b, `,"id":`...)
	b = appendJSONString(b, st.ID)
	b = append(b, `,"status":`...)
	b = appendJSONString(b, string(st.Status))
	if st.Pid != 0 {
		b = append(b, `,"pid":`...)
		b = strconv.AppendInt(b, int64(st.Pid), 10)
	}
	b = append(b, `,"bundle":`...)
	b = appendJSONString(b, st.Bundle)
	if len(keys) > 0 {
		b = append(b, `,"annotations":{`...)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, st.Annotations[k])
		}
		b = append(b, '}')
	}
	b = append(b, `,"rootfs":`...)
	b = appendJSONString(b, st.Rootfs)
	b = append(b, `,"cgroup":`...)
	b = appendJSONString(b, st.Cgroup)
	b = append(b, `,"created":"`...)
	b = st.Created.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if st.InitStart != 0 {
		b = append(b, `,"init_start":`...)
		b = strconv.AppendUint(b, st.InitStart, 10)
	}
	if st.ExitCode != nil {
		b = append(b, `,"exit_code":`...)
		b = strconv.AppendInt(b, int64(*st.ExitCode), 10)
	}
	return append(b, '}'), nil
}

// appendJSONString appends s (valid UTF-8) as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// decodeState is json.Unmarshal into a State, by hand where it can be.
func decodeState(b []byte) (*State, error) {
	if st, ok := fastState(b); ok {
		return st, nil
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func fastState(b []byte) (*State, bool) {
	d := &specDecoder{b: b}
	st := &State{}
	d.object(true, func(k string) bool {
		switch k {
		case "ociVersion":
			st.OCIVersion = d.str()
		case "id":
			st.ID = d.str()
		case "status":
			st.Status = Status(d.str())
		case "pid":
			st.Pid = int(d.int64(strconv.IntSize))
		case "bundle":
			st.Bundle = d.str()
		case "annotations":
			st.Annotations = d.stringMap()
		case "rootfs":
			st.Rootfs = d.str()
		case "cgroup":
			st.Cgroup = d.str()
		case "created":
			// Only UTC as encodeState writes it: other offsets' locations
			// are encoding/json's business.
			s := d.str()
			if len(s) == 0 || s[len(s)-1] != 'Z' {
				return false
			}
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return false
			}
			st.Created = t
		case "init_start":
			st.InitStart = d.uint64(64)
		case "exit_code":
			c := int(d.int64(strconv.IntSize))
			st.ExitCode = &c
		default:
			return false
		}
		return true
	})
	d.space()
	if d.bad || d.i != len(d.b) {
		return nil, false
	}
	return st, true
}
