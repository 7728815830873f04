package image

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type entry struct {
	name, link string
	typ        byte
	body       string
}

func layerTar(entries ...entry) []byte {
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o644, Size: int64(len(e.body))}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		w.WriteHeader(h)
		if e.typ == tar.TypeReg {
			w.Write([]byte(e.body))
		}
	}
	w.Close()
	return b.Bytes()
}

func needRoot(t testing.TB) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: layers keep owners and make whiteout device nodes (CI runs as root)")
	}
}

func TestExtractStaysInside(t *testing.T) {
	needRoot(t)
	outside := t.TempDir()
	cases := []struct {
		name    string
		entries []entry
		wantErr string
	}{
		{"dotdot", []entry{{name: "../../" + filepath.Base(outside) + "/pwned", typ: tar.TypeReg, body: "x"}}, ""},
		{"absolute", []entry{{name: outside + "/pwned", typ: tar.TypeReg, body: "x"}}, ""},
		{"through a symlink", []entry{{name: "evil", typ: tar.TypeSymlink, link: outside}, {name: "evil/pwned", typ: tar.TypeReg, body: "x"}}, "symbolic link"},
		{"hard link out", []entry{{name: "h", typ: tar.TypeLink, link: "../../../etc/passwd"}}, "hard link"},
		{"whiteout through a symlink", []entry{{name: "evil", typ: tar.TypeSymlink, link: outside}, {name: "evil/.wh.x", typ: tar.TypeReg}}, "symbolic link"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			err := extractLayer(bytes.NewReader(layerTar(c.entries...)), dir)
			if c.wantErr == "" && err != nil {
				t.Fatalf("extract: %v", err)
			}
			if c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("extract: %v, want an error saying %q", err, c.wantErr)
			}
			if _, err := os.Lstat(filepath.Join(outside, "pwned")); err == nil {
				t.Fatal("an entry landed outside the layer")
			}
		})
	}
}

func TestWhiteoutsRoundTrip(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	in := layerTar(
		entry{name: "etc/", typ: tar.TypeDir},
		entry{name: "etc/.wh.motd", typ: tar.TypeReg},
		entry{name: "var/", typ: tar.TypeDir},
		entry{name: "var/.wh..wh..opq", typ: tar.TypeReg},
		entry{name: "var/kept", typ: tar.TypeReg, body: "k"},
	)
	if err := extractLayer(bytes.NewReader(in), dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(dir, "etc/motd"))
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("whiteout is not a character device: %v %v", fi, err)
	}
	var out bytes.Buffer
	if err := writeDiff(dir, &out); err != nil {
		t.Fatal(err)
	}
	var names []string
	tr := tar.NewReader(&out)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	got := strings.Join(names, " ")
	if got != "etc/ etc/.wh.motd var/ var/.wh..wh..opq var/kept" {
		t.Fatalf("round trip: %s", got)
	}
}

// FuzzExtractLayer feeds arbitrary bytes as a layer: an error or a tree
// inside the directory, never a panic or a file outside.
func FuzzExtractLayer(f *testing.F) {
	f.Add(layerTar(entry{name: "a/b", typ: tar.TypeReg, body: "x"}))
	f.Add(layerTar(entry{name: "l", typ: tar.TypeSymlink, link: "/"}, entry{name: "l/x", typ: tar.TypeReg}))
	f.Add(layerTar(entry{name: "d/.wh..wh..opq", typ: tar.TypeReg}, entry{name: "d/.wh.f", typ: tar.TypeReg}))
	f.Add([]byte{0x1f, 0x8b, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if os.Geteuid() != 0 {
			t.Skip("needs root")
		}
		parent := t.TempDir()
		dir := filepath.Join(parent, "layer")
		os.Mkdir(dir, 0o755)
		r, done, err := decompress(bytes.NewReader(data))
		if err != nil {
			return
		}
		defer done()
		extractLayer(r, dir)
		ents, _ := os.ReadDir(parent)
		if len(ents) != 1 {
			t.Fatalf("layer wrote beside its directory: %v", ents)
		}
	})
}
