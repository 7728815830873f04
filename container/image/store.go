// Package image keeps container images: an OCI image layout on disk
// (content-addressed blobs, an index naming the images) plus every layer
// unpacked once, in overlayfs's format, to serve as a read-only lower
// directory of any number of containers. It imports OCI image layouts and
// `docker save` archives, turns a container's upper directory back into a
// layer (commit), and exports an image as an OCI layout archive.
//
// Layers are stacked the way the images' authors meant: a file in a higher
// layer hides the same path below; ".wh.<name>" entries delete, and
// ".wh..wh..opq" empties a directory of what the layers below put in it.
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
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// ErrNotFound is returned for an image reference the store does not hold.
var ErrNotFound = errors.New("image: no such image")

// DefaultRoot is where images live unless told otherwise.
const DefaultRoot = "/var/lib/tangram/images"

// Store is an image store rooted at one directory. Operations from several
// processes are serialised by a lock file.
type Store struct {
	root string
}

// Image is one named image in the store.
type Image struct {
	Ref      string      `json:"ref"`
	Digest   string      `json:"digest"` // of the manifest
	Manifest v1.Manifest `json:"-"`
	Config   v1.Image    `json:"-"`
	Size     int64       `json:"size"` // of its blobs, compressed
	Created  time.Time   `json:"created"`
}

// Open opens (making it when absent) the store at root.
func Open(root string) (*Store, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("image: store root %q must be absolute", root)
	}
	for _, d := range []string{"blobs/sha256", "layers/sha256", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
	}
	s := &Store{root: root}
	if _, err := os.Stat(filepath.Join(root, "oci-layout")); errors.Is(err, fs.ErrNotExist) {
		b, _ := json.Marshal(v1.ImageLayout{Version: v1.ImageLayoutVersion})
		if err := os.WriteFile(filepath.Join(root, "oci-layout"), b, 0o644); err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
	}
	return s, nil
}

// Root is the store's directory.
func (s *Store) Root() string { return s.root }

// lock takes the store's lock file; the returned function releases it.
func (s *Store) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.root, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("image: lock store: %w", err)
	}
	return func() { f.Close() }, nil
}

func (s *Store) readIndex() (*v1.Index, error) {
	b, err := os.ReadFile(filepath.Join(s.root, "index.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return &v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	var idx v1.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("image: index.json is corrupt: %w", err)
	}
	return &idx, nil
}

func (s *Store) writeIndex(idx *v1.Index) error {
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	return atomicWrite(filepath.Join(s.root, "index.json"), b)
}

func atomicWrite(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("image: write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// NormalizeRef gives a reference a tag: "busybox" is "busybox:latest".
func NormalizeRef(ref string) string {
	if i := strings.LastIndex(ref, ":"); i < 0 || strings.Contains(ref[i:], "/") {
		return ref + ":latest"
	}
	return ref
}

func validRef(ref string) error {
	if ref == "" || len(ref) > 255 || strings.ContainsAny(ref, " \t\n\x00\\") || strings.HasPrefix(ref, "sha256:") {
		return fmt.Errorf("image: invalid reference %q", ref)
	}
	return nil
}

func (s *Store) blobPath(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("image: digest %q: %w", d, err)
	}
	if d.Algorithm() != digest.SHA256 {
		return "", fmt.Errorf("image: digest %s: only sha256 is supported", d)
	}
	return filepath.Join(s.root, "blobs/sha256", d.Encoded()), nil
}

// putBlob stores r as a blob, checking it against want when want is set,
// and returns its digest and size.
func (s *Store) putBlob(r io.Reader, want digest.Digest) (digest.Digest, int64, error) {
	if want != "" {
		if p, err := s.blobPath(want); err != nil {
			return "", 0, err
		} else if fi, err := os.Stat(p); err == nil {
			return want, fi.Size(), nil
		}
	}
	tmp, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "blob-")
	if err != nil {
		return "", 0, fmt.Errorf("image: %w", err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), r)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, fmt.Errorf("image: store blob: %w", err)
	}
	got := digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(h.Sum(nil)))
	if want != "" && got != want {
		return "", 0, fmt.Errorf("image: blob content is %s, but it was named %s", got, want)
	}
	p, _ := s.blobPath(got)
	if err := os.Rename(tmp.Name(), p); err != nil {
		return "", 0, fmt.Errorf("image: store blob: %w", err)
	}
	return got, n, nil
}

func (s *Store) readBlob(d digest.Digest, limit int64) ([]byte, error) {
	p, err := s.blobPath(d)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("image: blob %s: %w", d, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("image: blob %s: %w", d, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("image: blob %s is larger than %d bytes", d, limit)
	}
	return b, nil
}

const maxJSON = 4 << 20 // manifests, configs, indexes

// load reads an image's manifest and config from a manifest digest.
func (s *Store) load(ref string, d digest.Digest) (*Image, error) {
	b, err := s.readBlob(d, maxJSON)
	if err != nil {
		return nil, err
	}
	img := &Image{Ref: ref, Digest: d.String()}
	if err := json.Unmarshal(b, &img.Manifest); err != nil {
		return nil, fmt.Errorf("image: manifest %s: %w", d, err)
	}
	cb, err := s.readBlob(img.Manifest.Config.Digest, maxJSON)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(cb, &img.Config); err != nil {
		return nil, fmt.Errorf("image: config %s: %w", img.Manifest.Config.Digest, err)
	}
	if len(img.Config.RootFS.DiffIDs) != len(img.Manifest.Layers) {
		return nil, fmt.Errorf("image: %s has %d layers but its config lists %d", ref, len(img.Manifest.Layers), len(img.Config.RootFS.DiffIDs))
	}
	img.Size = int64(len(b)) + img.Manifest.Config.Size
	for _, l := range img.Manifest.Layers {
		img.Size += l.Size
	}
	if img.Config.Created != nil {
		img.Created = *img.Config.Created
	}
	return img, nil
}

// List returns the store's images by reference.
func (s *Store) List() ([]*Image, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	var out []*Image
	for _, m := range idx.Manifests {
		img, err := s.load(m.Annotations[v1.AnnotationRefName], m.Digest)
		if err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}

// Get finds an image by reference ("name:tag", a bare name meaning :latest)
// or by a prefix of its manifest digest of at least 6 hex digits.
func (s *Store) Get(ref string) (*Image, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	norm := NormalizeRef(ref)
	hexPrefix := strings.TrimPrefix(ref, "sha256:")
	for _, m := range idx.Manifests {
		name := m.Annotations[v1.AnnotationRefName]
		if name == norm || name == ref || (len(hexPrefix) >= 6 && strings.HasPrefix(m.Digest.Encoded(), hexPrefix)) {
			return s.load(name, m.Digest)
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, ref)
}

// tag points ref at a manifest (under the lock).
func (s *Store) tag(ref string, desc v1.Descriptor) error {
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	idx.Manifests = slices.DeleteFunc(idx.Manifests, func(m v1.Descriptor) bool { return m.Annotations[v1.AnnotationRefName] == ref })
	desc.Annotations = map[string]string{v1.AnnotationRefName: ref}
	desc.Platform = nil
	idx.Manifests = append(idx.Manifests, desc)
	return s.writeIndex(idx)
}

// Tag gives an image a further reference.
func (s *Store) Tag(src, ref string) error {
	ref = NormalizeRef(ref)
	if err := validRef(ref); err != nil {
		return err
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	img, err := s.Get(src)
	if err != nil {
		return err
	}
	return s.tag(ref, v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: digest.Digest(img.Digest), Size: manifestSize(s, img)})
}

func manifestSize(s *Store, img *Image) int64 {
	p, err := s.blobPath(digest.Digest(img.Digest))
	if err != nil {
		return 0
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Remove drops a reference; blobs and unpacked layers no image refers to
// any more are deleted (inUse lists layer directories still mounted by
// containers, which are kept).
func (s *Store) Remove(ref string, inUse func(layerDir string) bool) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	img, err := s.Get(ref)
	if err != nil {
		return err
	}
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	idx.Manifests = slices.DeleteFunc(idx.Manifests, func(m v1.Descriptor) bool { return m.Annotations[v1.AnnotationRefName] == img.Ref })
	if err := s.writeIndex(idx); err != nil {
		return err
	}
	return s.collect(idx, inUse)
}

// collect deletes what no indexed image uses.
func (s *Store) collect(idx *v1.Index, inUse func(string) bool) error {
	keepBlobs := map[string]bool{}
	keepLayers := map[string]bool{}
	for _, m := range idx.Manifests {
		img, err := s.load("", m.Digest)
		if err != nil {
			return err
		}
		keepBlobs[m.Digest.Encoded()] = true
		keepBlobs[img.Manifest.Config.Digest.Encoded()] = true
		for _, l := range img.Manifest.Layers {
			keepBlobs[l.Digest.Encoded()] = true
		}
		for _, d := range img.Config.RootFS.DiffIDs {
			keepLayers[d.Encoded()] = true
		}
	}
	blobs, _ := os.ReadDir(filepath.Join(s.root, "blobs/sha256"))
	for _, b := range blobs {
		if !keepBlobs[b.Name()] {
			os.Remove(filepath.Join(s.root, "blobs/sha256", b.Name()))
		}
	}
	layers, _ := os.ReadDir(filepath.Join(s.root, "layers/sha256"))
	for _, l := range layers {
		dir := filepath.Join(s.root, "layers/sha256", l.Name())
		if !keepLayers[l.Name()] && (inUse == nil || !inUse(dir)) {
			removeAll(dir)
		}
	}
	return nil
}

// LayerDirs unpacks (once) and returns the image's layers as directories
// for overlayfs, lowest first.
func (s *Store) LayerDirs(ctx context.Context, img *Image) ([]string, error) {
	var out []string
	for i, l := range img.Manifest.Layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		diffID := img.Config.RootFS.DiffIDs[i]
		if err := diffID.Validate(); err != nil || diffID.Algorithm() != digest.SHA256 {
			return nil, fmt.Errorf("image: layer %d of %s: bad diff ID %q", i, img.Ref, diffID)
		}
		dir := filepath.Join(s.root, "layers/sha256", diffID.Encoded())
		if _, err := os.Stat(dir); err == nil {
			out = append(out, dir)
			continue
		}
		if err := s.unpack(l, diffID, dir); err != nil {
			return nil, err
		}
		out = append(out, dir)
	}
	return out, nil
}

func (s *Store) unpack(l v1.Descriptor, diffID digest.Digest, dir string) error {
	p, err := s.blobPath(l.Digest)
	if err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("image: layer %s: %w", l.Digest, err)
	}
	defer f.Close()
	tmp, err := os.MkdirTemp(filepath.Join(s.root, "tmp"), "layer-")
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer removeAll(tmp)
	r, done, err := decompress(f)
	if err != nil {
		return err
	}
	defer done()
	h := sha256.New()
	if err := extractLayer(io.TeeReader(r, h), tmp); err != nil {
		return fmt.Errorf("image: layer %s: %w", l.Digest, err)
	}
	// The tar reader stops at the end-of-archive marker: hash the rest.
	if _, err := io.Copy(h, r); err != nil {
		return fmt.Errorf("image: layer %s: %w", l.Digest, err)
	}
	if got := digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(h.Sum(nil))); got != diffID {
		return fmt.Errorf("image: layer %s unpacks to %s, but the image config says %s", l.Digest, got, diffID)
	}
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, fs.ErrExist) && !errors.Is(err, unix.ENOTEMPTY) {
		return fmt.Errorf("image: %w", err)
	}
	return nil
}

// Commit makes a new image from base plus the changes in upper (an
// overlayfs upper directory), named ref.
func (s *Store) Commit(ctx context.Context, base *Image, upper, ref, comment string) (*Image, error) {
	ref = NormalizeRef(ref)
	if err := validRef(ref); err != nil {
		return nil, err
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeDiff(upper, pw)) }()
	d, size, err := s.putBlob(pr, "")
	pr.CloseWithError(err)
	if err != nil {
		return nil, err
	}
	cfg := base.Config
	cfg.RootFS.DiffIDs = append(slices.Clone(cfg.RootFS.DiffIDs), d)
	now := time.Now().UTC()
	cfg.Created = &now
	cfg.History = append(slices.Clone(cfg.History), v1.History{Created: &now, CreatedBy: "tangram container commit", Comment: comment})
	cb, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	cd, csize, err := s.putBlob(strings.NewReader(string(cb)), "")
	if err != nil {
		return nil, err
	}
	m := base.Manifest
	m.Config = v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: cd, Size: csize}
	m.Layers = append(slices.Clone(m.Layers), v1.Descriptor{MediaType: v1.MediaTypeImageLayer, Digest: d, Size: size})
	m.MediaType = v1.MediaTypeImageManifest
	m.SchemaVersion = 2
	mb, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	md, msize, err := s.putBlob(strings.NewReader(string(mb)), "")
	if err != nil {
		return nil, err
	}
	if err := s.tag(ref, v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: md, Size: msize}); err != nil {
		return nil, err
	}
	return s.load(ref, md)
}

// Export writes the image as an OCI image layout in a tar archive (what
// Import, umoci and skopeo read).
func (s *Store) Export(img *Image, w io.Writer) error {
	tw := tar.NewWriter(w)
	add := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	layout, _ := json.Marshal(v1.ImageLayout{Version: v1.ImageLayoutVersion})
	msize := manifestSize(s, img)
	idx := v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex, Manifests: []v1.Descriptor{{
		MediaType: v1.MediaTypeImageManifest, Digest: digest.Digest(img.Digest), Size: msize,
		Annotations: map[string]string{v1.AnnotationRefName: img.Ref},
	}}}
	ib, _ := json.Marshal(idx)
	if err := add("oci-layout", layout); err != nil {
		return fmt.Errorf("image: export: %w", err)
	}
	if err := add("index.json", ib); err != nil {
		return fmt.Errorf("image: export: %w", err)
	}
	blobs := []digest.Digest{digest.Digest(img.Digest), img.Manifest.Config.Digest}
	for _, l := range img.Manifest.Layers {
		blobs = append(blobs, l.Digest)
	}
	for _, d := range blobs {
		p, err := s.blobPath(d)
		if err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("image: export: %w", err)
		}
		fi, _ := f.Stat()
		err = tw.WriteHeader(&tar.Header{Name: "blobs/sha256/" + d.Encoded(), Mode: 0o644, Size: fi.Size(), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
		if err == nil {
			_, err = io.Copy(tw, f)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("image: export: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("image: export: %w", err)
	}
	return nil
}
