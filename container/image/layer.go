package image

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Whiteouts as image layers record them (the OCI image spec, after AUFS):
// ".wh.<name>" deletes name from the layers below; ".wh..wh..opq" in a
// directory hides everything below it in that directory. overlayfs marks
// the same as a 0/0 character device and an "opaque" extended attribute.
const (
	whPrefix = ".wh."
	whOpaque = ".wh..wh..opq"
	opaqueX  = "trusted.overlay.opaque"
)

// maxLayerEntries bounds a layer so that a hostile archive cannot fill the
// disk with inodes; a layer holding more is refused.
const maxLayerEntries = 1 << 22

// decompress returns a reader for a layer blob: gzip when it starts with
// gzip's magic, plain tar otherwise.
func decompress(r io.Reader) (io.Reader, func(), error) {
	br := newPeekReader(r)
	head, _ := br.peek(2)
	if len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("image: layer: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	}
	return br, func() {}, nil
}

// extractLayer unpacks a layer tar into dir (empty, made by the caller) in
// overlayfs's format: whiteout files become 0/0 character devices, opaque
// markers the opaque attribute. Entries may not leave dir: absolute paths
// and ".." are taken relative to it, and no entry is written through a
// symbolic link an earlier entry made.
func extractLayer(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	type dirTime struct {
		path  string
		mtime time.Time
	}
	var dirs []dirTime
	n := 0
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("image: read layer: %w", err)
		}
		n++
		if n > maxLayerEntries {
			return fmt.Errorf("image: layer holds more than %d entries", maxLayerEntries)
		}
		for k := range hdr.PAXRecords {
			// A sparse entry expands holes into zeros: a few bytes of
			// layer could claim terabytes. Image builders never write them.
			if strings.HasPrefix(k, "GNU.sparse.") {
				return fmt.Errorf("image: layer entry %s is a sparse file, which layers may not hold", hdr.Name)
			}
		}
		rel := filepath.Clean("/" + hdr.Name)
		if rel == "/" {
			continue
		}
		parent, base := filepath.Split(rel)
		if err := noSymlinks(dir, parent); err != nil {
			return err
		}
		target := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return fmt.Errorf("image: layer entry %s: %w", hdr.Name, err)
		}
		switch {
		case base == whOpaque:
			if err := unix.Lsetxattr(filepath.Dir(target), opaqueX, []byte("y"), 0); err != nil {
				return fmt.Errorf("image: opaque directory %s: %w", parent, err)
			}
			continue
		case strings.HasPrefix(base, whPrefix):
			hidden := filepath.Join(filepath.Dir(target), strings.TrimPrefix(base, whPrefix))
			removeAll(hidden)
			if err := unix.Mknod(hidden, unix.S_IFCHR, 0); err != nil {
				return fmt.Errorf("image: whiteout %s: %w", hdr.Name, err)
			}
			continue
		}
		// A later entry replaces an earlier one of the same name, except
		// that a directory stays a directory.
		if fi, err := os.Lstat(target); err == nil && !(fi.IsDir() && hdr.Typeflag == tar.TypeDir) {
			removeAll(target)
		}
		mode := uint32(hdr.Mode & 0o7777)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(target, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("image: layer entry %s: %w", hdr.Name, err)
			}
			dirs = append(dirs, dirTime{target, hdr.ModTime})
		case tar.TypeReg, tar.TypeRegA:
			f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
			if err != nil {
				return fmt.Errorf("image: layer entry %s: %w", hdr.Name, err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("image: layer entry %s: %w", hdr.Name, err)
			}
		case tar.TypeSymlink:
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return fmt.Errorf("image: layer entry %s: %w", hdr.Name, err)
			}
		case tar.TypeLink:
			src := filepath.Join(dir, filepath.Clean("/"+hdr.Linkname))
			if err := noSymlinks(dir, filepath.Dir(filepath.Clean("/"+hdr.Linkname))); err != nil {
				return err
			}
			if err := os.Link(src, target); err != nil {
				return fmt.Errorf("image: layer entry %s: hard link to %s: %w", hdr.Name, hdr.Linkname, err)
			}
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			m := mode
			switch hdr.Typeflag {
			case tar.TypeChar:
				m |= unix.S_IFCHR
			case tar.TypeBlock:
				m |= unix.S_IFBLK
			default:
				m |= unix.S_IFIFO
			}
			if err := unix.Mknod(target, m, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))); err != nil {
				return fmt.Errorf("image: layer entry %s: %w", hdr.Name, err)
			}
		case tar.TypeXGlobalHeader:
			continue
		default:
			return fmt.Errorf("image: layer entry %s: unsupported type %q", hdr.Name, hdr.Typeflag)
		}
		if err := os.Lchown(target, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("image: layer entry %s: chown: %w", hdr.Name, err)
		}
		for k, v := range hdr.PAXRecords {
			if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if err := unix.Lsetxattr(target, name, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
					return fmt.Errorf("image: layer entry %s: xattr %s: %w", hdr.Name, name, err)
				}
			}
		}
		if hdr.Typeflag != tar.TypeSymlink {
			// chown clears set-id bits: the mode goes on after it.
			if err := os.Chmod(target, fs.FileMode(mode&0o777)|setBits(mode)); err != nil {
				return fmt.Errorf("image: layer entry %s: chmod: %w", hdr.Name, err)
			}
		}
		if hdr.Typeflag != tar.TypeDir {
			ts := []unix.Timespec{unix.NsecToTimespec(hdr.AccessTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
			if hdr.AccessTime.IsZero() {
				ts[0] = ts[1]
			}
			unix.UtimesNanoAt(unix.AT_FDCWD, target, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
	}
	// Directory times last: creating their entries changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		t := unix.NsecToTimespec(dirs[i].mtime.UnixNano())
		unix.UtimesNanoAt(unix.AT_FDCWD, dirs[i].path, []unix.Timespec{t, t}, unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}

func setBits(mode uint32) fs.FileMode {
	var m fs.FileMode
	if mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

func removeAll(path string) {
	if err := os.RemoveAll(path); err != nil {
		// A directory made read-only by an earlier entry.
		filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
		os.RemoveAll(path)
	}
}

// noSymlinks fails when a directory on the way from root to rel (inside
// root) is a symbolic link: an entry written there would land outside the
// layer.
func noSymlinks(root, rel string) error {
	cur := root
	for _, part := range strings.Split(strings.Trim(rel, "/"), "/") {
		if part == "" {
			continue
		}
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("image: layer writes through the symbolic link %s", strings.TrimPrefix(cur, root))
		}
		if !fi.IsDir() {
			return fmt.Errorf("image: layer entry below %s, which is not a directory", strings.TrimPrefix(cur, root))
		}
	}
	return nil
}

// writeDiff writes an overlay upper directory as a layer tar: files as
// they are, 0/0 character devices as ".wh." whiteouts, opaque directories
// with a ".wh..wh..opq" entry. Entries are in lexical order, owners and
// modes kept.
func writeDiff(upper string, w io.Writer) error {
	tw := tar.NewWriter(w)
	links := map[uint64]string{} // inode → first path, for hard links
	var paths []string
	err := filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != upper {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("image: read changes: %w", err)
	}
	sort.Strings(paths)
	for _, p := range paths {
		rel, _ := filepath.Rel(upper, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("image: read changes: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("image: %s: no stat information", rel)
		}
		if fi.Mode()&fs.ModeCharDevice != 0 && st.Rdev == 0 {
			dir, base := filepath.Split(rel)
			hdr := &tar.Header{Name: dir + whPrefix + base, Typeflag: tar.TypeReg, Mode: 0o600, ModTime: fi.ModTime(), Format: tar.FormatPAX}
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("image: write layer: %w", err)
			}
			continue
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return fmt.Errorf("image: %w", err)
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("image: %s: %w", rel, err)
		}
		hdr.Name = rel
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
		hdr.Uname, hdr.Gname = "", ""
		hdr.Format = tar.FormatPAX
		if fi.Mode().IsRegular() && st.Nlink > 1 {
			if first, ok := links[st.Ino]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				links[st.Ino] = rel
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("image: write layer: %w", err)
		}
		if hdr.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return fmt.Errorf("image: %w", err)
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("image: write layer: %w", err)
			}
		}
		if fi.IsDir() {
			buf := make([]byte, 8)
			if n, err := unix.Lgetxattr(p, opaqueX, buf); err == nil && string(buf[:n]) == "y" {
				if err := tw.WriteHeader(&tar.Header{Name: rel + "/" + whOpaque, Typeflag: tar.TypeReg, Mode: 0o600, ModTime: fi.ModTime(), Format: tar.FormatPAX}); err != nil {
					return fmt.Errorf("image: write layer: %w", err)
				}
			}
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("image: write layer: %w", err)
	}
	return nil
}

// peekReader is a reader that can look at its first bytes.
type peekReader struct {
	r   io.Reader
	buf []byte
}

func newPeekReader(r io.Reader) *peekReader { return &peekReader{r: r} }

func (p *peekReader) peek(n int) ([]byte, error) {
	for len(p.buf) < n {
		b := make([]byte, n-len(p.buf))
		m, err := p.r.Read(b)
		p.buf = append(p.buf, b[:m]...)
		if err != nil {
			return p.buf, err
		}
	}
	return p.buf[:n], nil
}

func (p *peekReader) Read(b []byte) (int, error) {
	if len(p.buf) > 0 {
		n := copy(b, p.buf)
		p.buf = p.buf[n:]
		return n, nil
	}
	return p.r.Read(b)
}
