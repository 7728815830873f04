// Package logfile keeps a container's output in a file that rotates by
// size, as Docker's json-file driver does with max-size and max-file: the
// current file is path, older ones path.1 (the newest) to path.N. Writer
// appends and rotates; Copy prints the files in order and can follow the
// current one across rotations.
package logfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Writer appends to path and rotates it before it would pass maxSize:
// path.(N-1) becomes path.N (the oldest beyond maxFiles files in all is
// removed), …, path becomes path.1, and a new path is started. Writes are
// cut at line ends, so a file ends with a whole line; only a line longer
// than maxSize is split.
type Writer struct {
	path     string
	maxSize  int64
	maxFiles int

	mu   sync.Mutex
	f    *os.File
	size int64
}

// Open opens (creating) path for appending. maxSize ≤ 0 means no
// rotation; maxFiles counts the current file, so 1 keeps no old file.
func Open(path string, maxSize int64, maxFiles int) (*Writer, error) {
	if maxSize > 0 && maxFiles < 1 {
		return nil, fmt.Errorf("logfile: %d files: need at least 1", maxFiles)
	}
	w := &Writer{path: path, maxSize: maxSize, maxFiles: maxFiles}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) open() error {
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("logfile: %w", err)
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// Write appends p, rotating where it would not fit.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return 0, os.ErrClosed
	}
	total := 0
	for len(p) > 0 {
		chunk := p
		rotate := false
		if room := w.maxSize - w.size; w.maxSize > 0 && int64(len(p)) > room {
			rotate = true
			cut := 0
			if room > 0 {
				cut = bytes.LastIndexByte(p[:room], '\n') + 1
			}
			switch {
			case cut > 0:
				chunk = p[:cut] // the whole lines that fit
			case w.size > 0:
				chunk = nil // nothing fits: start a new file
			default:
				chunk = p[:w.maxSize] // one line longer than a file
			}
		}
		if len(chunk) > 0 {
			n, err := w.f.Write(chunk)
			w.size += int64(n)
			total += n
			if err != nil {
				return total, err
			}
			p = p[n:]
		}
		if rotate {
			if err := w.rotate(); err != nil {
				return total, err
			}
		}
	}
	return total, nil
}

func (w *Writer) rotate() error {
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	w.f = nil
	if w.maxFiles == 1 {
		if err := os.Remove(w.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("logfile: rotate: %w", err)
		}
		return w.open()
	}
	os.Remove(w.path + "." + strconv.Itoa(w.maxFiles-1))
	for i := w.maxFiles - 2; i >= 1; i-- {
		old := w.path + "." + strconv.Itoa(i)
		if err := os.Rename(old, w.path+"."+strconv.Itoa(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("logfile: rotate: %w", err)
		}
	}
	if err := os.Rename(w.path, w.path+".1"); err != nil {
		return fmt.Errorf("logfile: rotate: %w", err)
	}
	return w.open()
}

// Close closes the current file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// Files lists the log's files that exist, oldest first: path.N … path.1,
// path.
func Files(path string) []string {
	var old []string
	for i := 1; ; i++ {
		p := path + "." + strconv.Itoa(i)
		if _, err := os.Stat(p); err != nil {
			break
		}
		old = append(old, p)
	}
	out := make([]string, 0, len(old)+1)
	for i := len(old) - 1; i >= 0; i-- {
		out = append(out, old[i])
	}
	if _, err := os.Stat(path); err == nil {
		out = append(out, path)
	}
	return out
}

// Copy writes the log — every file, oldest first — to out. With follow
// it then keeps printing what is appended, reopening path when it was
// rotated (after printing the rest of the file it had), until done
// reports true (checked each poll) or ctx ends. Output written and
// rotated away twice within one poll is skipped.
func Copy(ctx context.Context, path string, out io.Writer, follow bool, done func() bool, poll time.Duration) error {
	files := Files(path)
	if len(files) == 0 {
		return fmt.Errorf("logfile: %s: %w", path, os.ErrNotExist)
	}
	for _, p := range files[:len(files)-1] {
		if err := copyFile(p, out); err != nil {
			return err
		}
	}
	cur, err := os.Open(files[len(files)-1])
	if err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	defer func() { cur.Close() }()
	for {
		if _, err := io.Copy(out, cur); err != nil {
			return fmt.Errorf("logfile: %w", err)
		}
		if !follow {
			return nil
		}
		if rotated(cur, path) {
			next, err := os.Open(path)
			if err == nil {
				if _, err := io.Copy(out, cur); err != nil {
					next.Close()
					return fmt.Errorf("logfile: %w", err)
				}
				cur.Close()
				cur = next
				continue
			}
		}
		if done() {
			_, err := io.Copy(out, cur)
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
}

// rotated reports whether path now names another file than f.
func rotated(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	if err != nil {
		return false
	}
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && (sa.Ino != sb.Ino || sa.Dev != sb.Dev)
}

func copyFile(p string, out io.Writer) error {
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // rotated away meanwhile
		}
		return fmt.Errorf("logfile: %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(out, f); err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	return nil
}
