package image

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Import reads images from path — an OCI image layout directory, or a tar
// archive of one, or a `docker save` archive — into the store and returns
// them. name names an image its source leaves unnamed, or names the tag an
// OCI layout gives alone ("latest" becomes name:latest); with one image in
// the source, a name with a tag renames it.
func (s *Store) Import(ctx context.Context, path, name string) ([]*Image, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("image: import: %w", err)
	}
	dir := path
	if !fi.IsDir() {
		tmp, err := os.MkdirTemp(filepath.Join(s.root, "tmp"), "import-")
		if err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		defer removeAll(tmp)
		if err := unpackArchive(ctx, path, tmp); err != nil {
			return nil, err
		}
		dir = tmp
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err == nil {
		return s.importOCI(ctx, dir, name)
	}
	if _, err := os.Stat(filepath.Join(dir, "manifest.json")); err == nil {
		return s.importDocker(ctx, dir, name)
	}
	return nil, fmt.Errorf("image: %s is neither an OCI image layout (no oci-layout file) nor a docker save archive (no manifest.json)", path)
}

// unpackArchive extracts the plain files and directories of an archive
// (an image layout or a docker save) into dir.
func unpackArchive(ctx context.Context, path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("image: import: %w", err)
	}
	defer f.Close()
	r, done, err := decompress(f)
	if err != nil {
		return err
	}
	defer done()
	tr := tar.NewReader(r)
	for n := 0; ; n++ {
		if n%64 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("image: import %s: not a tar archive: %w", path, err)
		}
		rel := filepath.Clean("/" + hdr.Name)
		if rel == "/" {
			continue
		}
		if err := noSymlinks(dir, filepath.Dir(rel)); err != nil {
			return err
		}
		target := filepath.Join(dir, rel)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o700); err != nil {
				return fmt.Errorf("image: import: %w", err)
			}
		case tar.TypeReg, tar.TypeRegA:
			if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
				return fmt.Errorf("image: import: %w", err)
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err != nil {
				return fmt.Errorf("image: import: %w", err)
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("image: import %s: %w", hdr.Name, err)
			}
		case tar.TypeSymlink:
			// docker save links layers shared between images; resolve it
			// inside the archive only.
			src := filepath.Join(dir, filepath.Clean(filepath.Join(filepath.Dir(rel), hdr.Linkname)))
			if !strings.HasPrefix(src, dir+string(filepath.Separator)) {
				return fmt.Errorf("image: import: %s links outside the archive", hdr.Name)
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
				return fmt.Errorf("image: import: %w", err)
			}
			if err := os.Symlink(src, target); err != nil {
				return fmt.Errorf("image: import: %w", err)
			}
		}
	}
}

// openIn opens a file named by an archive inside dir, refusing to leave it.
func openIn(dir, name string) (*os.File, error) {
	p := filepath.Join(dir, filepath.Clean("/"+name))
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return nil, fmt.Errorf("image: import: %w", err)
	}
	rdir, _ := filepath.EvalSymlinks(dir)
	if !strings.HasPrefix(real, rdir+string(filepath.Separator)) {
		return nil, fmt.Errorf("image: import: %s is outside the archive", name)
	}
	return os.Open(real)
}

func (s *Store) importOCI(ctx context.Context, dir, name string) ([]*Image, error) {
	var idx v1.Index
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return nil, fmt.Errorf("image: import: %w", err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("image: import: index.json: %w", err)
	}
	copyBlob := func(d digest.Digest) (int64, error) {
		if err := d.Validate(); err != nil {
			return 0, fmt.Errorf("image: import: digest %q: %w", d, err)
		}
		f, err := openIn(dir, "blobs/"+string(d.Algorithm())+"/"+d.Encoded())
		if err != nil {
			return 0, err
		}
		defer f.Close()
		_, n, err := s.putBlob(f, d)
		return n, err
	}
	var out []*Image
	var visit func(d v1.Descriptor, ref string, depth int) error
	visit = func(d v1.Descriptor, ref string, depth int) error {
		if depth > 4 {
			return errors.New("image: import: indexes nested too deep")
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := copyBlob(d.Digest); err != nil {
			return err
		}
		body, err := s.readBlob(d.Digest, maxJSON)
		if err != nil {
			return err
		}
		switch d.MediaType {
		case v1.MediaTypeImageIndex, "application/vnd.docker.distribution.manifest.list.v2+json":
			var sub v1.Index
			if err := json.Unmarshal(body, &sub); err != nil {
				return fmt.Errorf("image: import: index %s: %w", d.Digest, err)
			}
			for _, m := range sub.Manifests {
				if m.Platform == nil || (m.Platform.OS == "linux" && m.Platform.Architecture == runtime.GOARCH) {
					return visit(m, ref, depth+1)
				}
			}
			return fmt.Errorf("image: import: %s has no linux/%s image", ref, runtime.GOARCH)
		}
		var m v1.Manifest
		if err := json.Unmarshal(body, &m); err != nil {
			return fmt.Errorf("image: import: manifest %s: %w", d.Digest, err)
		}
		if _, err := copyBlob(m.Config.Digest); err != nil {
			return err
		}
		for _, l := range m.Layers {
			if _, err := copyBlob(l.Digest); err != nil {
				return err
			}
		}
		if err := validRef(ref); err != nil {
			return err
		}
		if err := s.tag(ref, v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: d.Digest, Size: d.Size}); err != nil {
			return err
		}
		img, err := s.load(ref, d.Digest)
		if err != nil {
			return err
		}
		out = append(out, img)
		return nil
	}
	for i, m := range idx.Manifests {
		ref := refFor(m.Annotations[v1.AnnotationRefName], name, len(idx.Manifests), i)
		if ref == "" {
			return nil, fmt.Errorf("image: import: image %d of the layout has no name: give one (--name)", i)
		}
		if err := visit(m, ref, 0); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// refFor names an imported image: the source's name (a bare tag joined to
// name), else name.
func refFor(src, name string, count, i int) string {
	switch {
	case name != "" && count == 1 && strings.Contains(name, ":"):
		return name
	case src != "" && !strings.ContainsAny(src, ":/") && name != "":
		return strings.SplitN(name, ":", 2)[0] + ":" + src
	case src != "":
		return NormalizeRef(src)
	case name != "" && count == 1:
		return NormalizeRef(name)
	case name != "":
		return fmt.Sprintf("%s:%d", strings.SplitN(name, ":", 2)[0], i)
	}
	return ""
}

// dockerManifest is one entry of a docker save archive's manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func (s *Store) importDocker(ctx context.Context, dir, name string) ([]*Image, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, fmt.Errorf("image: import: %w", err)
	}
	var entries []dockerManifest
	if err := json.Unmarshal(b, &entries); err != nil {
		return nil, fmt.Errorf("image: import: docker manifest.json: %w", err)
	}
	var out []*Image
	for i, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		cf, err := openIn(dir, e.Config)
		if err != nil {
			return nil, err
		}
		cd, csize, err := s.putBlob(cf, "")
		cf.Close()
		if err != nil {
			return nil, err
		}
		m := v1.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageManifest,
			Config: v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: cd, Size: csize}}
		for _, l := range e.Layers {
			lf, err := openIn(dir, l)
			if err != nil {
				return nil, err
			}
			head := make([]byte, 2)
			n, _ := io.ReadFull(lf, head)
			lf.Seek(0, io.SeekStart)
			mt := v1.MediaTypeImageLayer
			if n == 2 && head[0] == 0x1f && head[1] == 0x8b {
				mt = v1.MediaTypeImageLayerGzip
			}
			ld, lsize, err := s.putBlob(lf, "")
			lf.Close()
			if err != nil {
				return nil, err
			}
			m.Layers = append(m.Layers, v1.Descriptor{MediaType: mt, Digest: ld, Size: lsize})
		}
		mb, err := json.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		h := sha256.Sum256(mb)
		md, msize, err := s.putBlob(strings.NewReader(string(mb)), digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(h[:])))
		if err != nil {
			return nil, err
		}
		refs := e.RepoTags
		if len(refs) == 0 || (name != "" && len(entries) == 1) {
			r := refFor("", name, len(entries), i)
			if r == "" {
				return nil, fmt.Errorf("image: import: image %d of the archive has no name: give one (--name)", i)
			}
			refs = []string{r}
		}
		for _, ref := range refs {
			ref = NormalizeRef(ref)
			if err := validRef(ref); err != nil {
				return nil, err
			}
			if err := s.tag(ref, v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: md, Size: msize}); err != nil {
				return nil, err
			}
			img, err := s.load(ref, md)
			if err != nil {
				return nil, err
			}
			out = append(out, img)
		}
	}
	return out, nil
}
