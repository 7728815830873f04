package container

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/container/cgroup"
	"github.com/tangram-dev/tangram/container/image"
	"github.com/tangram-dev/tangram/internal/wait"
)

// umociLayout builds an OCI image layout with umoci (Debian's package):
// "base" holds busybox, /etc/motd and /etc/dir/a, and runs `sh -c 'echo
// hi'` with FOO=bar; "v2" is base with /etc/motd deleted — a whiteout
// written by umoci.
func umociLayout(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("umoci"); err != nil {
		t.Fatalf("umoci not found: install Debian's umoci (scripts/services.sh does)")
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox not found: install Debian's busybox-static")
	}
	dir := t.TempDir()
	layout := filepath.Join(dir, "L")
	sh := func(script string) {
		t.Helper()
		cmd := exec.Command("sh", "-ec", script)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
	}
	sh(`umoci init --layout L
umoci new --image L:base
umoci unpack --image L:base B
mkdir -p B/rootfs/bin B/rootfs/etc/dir B/rootfs/tmp
cp ` + bb + ` B/rootfs/bin/busybox
for a in sh cat ls echo rm mkdir test true; do ln -s busybox B/rootfs/bin/$a; done
echo motd > B/rootfs/etc/motd
echo a > B/rootfs/etc/dir/a
umoci repack --image L:base B
umoci config --image L:base --config.cmd sh --config.cmd -c --config.cmd 'echo hi' --config.env FOO=bar --config.env PATH=/bin
umoci unpack --image L:base B2
rm B2/rootfs/etc/motd
umoci repack --image L:v2 B2`)
	return layout
}

// runImage runs a container from ref with args and returns its exit code
// and output.
func runImage(t *testing.T, r *Runtime, store *image.Store, id, ref string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	p, err := r.CreateFromImage(ctx, id, storeImages{store}, ref, ImageOptions{Args: args}, CreateOptions{Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("create %s from %s: %v", id, ref, err)
	}
	defer r.Delete(context.Background(), id, true)
	if err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return code, out.String()
}

func TestImageLayersWhiteoutsAndCommit(t *testing.T) {
	needRoot(t)
	layout := umociLayout(t)
	store, err := image.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	imgs, err := store.Import(ctx, layout, "demo")
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 2 || imgs[0].Ref != "demo:base" || imgs[1].Ref != "demo:v2" {
		t.Fatalf("imported %+v", imgs)
	}
	r := newRuntime(t)
	// The image's own command and environment.
	if code, out := runImage(t, r, store, "base-cmd", "demo:base"); code != 0 || out != "hi\n" {
		t.Fatalf("image command: %d %q", code, out)
	}
	if _, err := r.CreateFromImage(ctx, "nope", storeImages{store}, "demo", ImageOptions{}, CreateOptions{}); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("demo (demo:latest) does not exist: %v", err)
	}
	if code, out := runImage(t, r, store, "base", "demo:base", "sh", "-c", "cat /etc/motd; echo $FOO; hostname"); code != 0 || out != "motd\nbar\nbase\n" {
		t.Fatalf("base: %d %q", code, out)
	}
	// umoci's whiteout hides the lower layer's file.
	if code, out := runImage(t, r, store, "v2", "demo:v2", "sh", "-c", "test -e /etc/motd && echo present; cat /etc/dir/a"); code != 0 || out != "a\n" {
		t.Fatalf("v2: %d %q", code, out)
	}

	// Change a container: delete a lower file, replace a lower directory,
	// add a file; commit; the new image has exactly those changes.
	if code, out := runImage(t, r, store, "work", "demo:base", "sh", "-c", "rm /etc/motd; rm -r /etc/dir; mkdir /etc/dir; echo new > /etc/dir/b; echo made > /made"); code != 0 {
		t.Fatalf("work: %d %q", code, out)
	}
	// runImage deleted it; do it again without deleting, then commit.
	p, err := r.CreateFromImage(ctx, "work", storeImages{store}, "demo:base", ImageOptions{Args: []string{"sh", "-c", "rm /etc/motd; rm -r /etc/dir; mkdir /etc/dir; echo new > /etc/dir/b; echo made > /made"}}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, "work"); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(); err != nil || code != 0 {
		t.Fatalf("work: %d %v", code, err)
	}
	committed, err := r.Commit(ctx, "work", storeImages{store}, "demo:committed", "test")
	if err != nil {
		t.Fatal(err)
	}
	img, err := store.Get(committed.Ref)
	if err != nil || img.Digest != committed.Digest {
		t.Fatalf("the committed image in the store: %v (%s, committed %s)", err, img.Digest, committed.Digest)
	}
	if err := r.Delete(ctx, "work", false); err != nil {
		t.Fatal(err)
	}
	if len(img.Manifest.Layers) != 2 || len(img.Config.History) == 0 {
		t.Fatalf("committed image: %d layers, history %v", len(img.Manifest.Layers), img.Config.History)
	}
	entries := layerEntries(t, store, img.Manifest.Layers[1].Digest.Encoded())
	for _, want := range []string{"etc/.wh.motd", "etc/dir/.wh..wh..opq", "etc/dir/b", "made"} {
		if !strings.Contains(entries, want+"\n") {
			t.Errorf("committed layer lacks %s:\n%s", want, entries)
		}
	}
	check := "test -e /etc/motd && echo motd; ls /etc/dir; cat /made"
	if code, out := runImage(t, r, store, "committed", "demo:committed", "sh", "-c", check); code != 0 || out != "b\nmade\n" {
		t.Fatalf("committed: %d %q", code, out)
	}

	// Export and import into another store: the same image, the same files.
	var archive bytes.Buffer
	if err := store.Export(img, &archive); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "committed.tar")
	if err := os.WriteFile(tarPath, archive.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	other, err := image.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	again, err := other.Import(ctx, tarPath, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 1 || again[0].Digest != img.Digest || again[0].Ref != "demo:committed" {
		t.Fatalf("re-imported %+v, want %s", again, img.Digest)
	}
	if code, out := runImage(t, r, other, "again", "demo:committed", "sh", "-c", check); code != 0 || out != "b\nmade\n" {
		t.Fatalf("re-imported: %d %q", code, out)
	}
	// Removing an image deletes the blobs only it used.
	if err := store.Remove("demo:committed", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get("demo:committed"); err == nil {
		t.Fatal("removed image still found")
	}
	if _, err := os.Stat(filepath.Join(store.Root(), "blobs/sha256", img.Manifest.Layers[1].Digest.Encoded())); !os.IsNotExist(err) {
		t.Fatalf("the removed image's own layer is still stored: %v", err)
	}
	if code, _ := runImage(t, r, store, "base2", "demo:base", "true"); code != 0 {
		t.Fatal("base image broken by removing another")
	}
}

func layerEntries(t *testing.T, store *image.Store, hexDigest string) string {
	f, err := os.Open(filepath.Join(store.Root(), "blobs/sha256", hexDigest))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names strings.Builder
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names.WriteString(strings.TrimSuffix(h.Name, "/") + "\n")
	}
	return names.String()
}

// dockerArchive writes a `docker save` archive by hand: one image, one
// uncompressed layer holding busybox as sh.
func dockerArchive(t *testing.T) string {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox not found")
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	lw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755})
	lw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))})
	lw.Write(data)
	lw.WriteHeader(&tar.Header{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	lw.WriteHeader(&tar.Header{Name: "bin/echo", Typeflag: tar.TypeLink, Linkname: "bin/busybox", Mode: 0o755})
	lw.Close()
	sum := sha256.Sum256(layer.Bytes())
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Cmd": []string{"/bin/sh", "-c", "echo from docker"}, "Env": []string{"PATH=/bin"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(sum[:])}},
	})
	manifest, _ := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{"bb:1"}, "Layers": []string{"abc/layer.tar"}}})
	var out bytes.Buffer
	w := tar.NewWriter(&out)
	for _, f := range []struct {
		name string
		body []byte
	}{{"manifest.json", manifest}, {"config.json", cfg}, {"abc/layer.tar", layer.Bytes()}} {
		w.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(f.body))})
		w.Write(f.body)
	}
	w.Close()
	p := filepath.Join(t.TempDir(), "docker.tar")
	if err := os.WriteFile(p, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestImportDockerSave(t *testing.T) {
	needRoot(t)
	store, err := image.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := store.Import(context.Background(), dockerArchive(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Ref != "bb:1" {
		t.Fatalf("imported %+v", imgs)
	}
	r := newRuntime(t)
	if code, out := runImage(t, r, store, "docker", "bb:1"); code != 0 || out != "from docker\n" {
		t.Fatalf("docker image: %d %q", code, out)
	}
	if code, out := runImage(t, r, store, "docker2", "bb:1", "echo", "hard", "link"); code != 0 || out != "hard link\n" {
		t.Fatalf("hard-linked applet: %d %q", code, out)
	}
}

// TestHelperRuntime is not a test: TestRuntimeKilled runs this binary with
// it as a runtime process that runs one container from an image and waits.
func TestHelperRuntime(t *testing.T) {
	root, images := os.Getenv("HELPER_RUNTIME_ROOT"), os.Getenv("HELPER_RUNTIME_IMAGES")
	if root == "" {
		t.Skip("a helper process for TestRuntimeKilled")
	}
	r, err := New(Config{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	store, err := image.Open(images)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p, err := r.CreateFromImage(ctx, "survivor", storeImages{store}, "demo:base", ImageOptions{Args: []string{"sh", "-c", "echo alive > /tmp/alive; exec sleep 600"}}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, "survivor"); err != nil {
		t.Fatal(err)
	}
	p.Wait() // killed with -9 before this returns
}

// TestRuntimeKilled kills the runtime process that created and waits for
// a container: the container runs on, a new runtime finds it running from
// the state on disk, and deleting it removes its cgroup, its overlay mount
// and its bundle.
func TestRuntimeKilled(t *testing.T) {
	needRoot(t)
	layout := umociLayout(t)
	images := t.TempDir()
	store, err := image.Open(images)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Import(context.Background(), layout, "demo"); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	helper := exec.Command(os.Args[0], "-test.run", "^TestHelperRuntime$")
	helper.Env = append(os.Environ(), "HELPER_RUNTIME_ROOT="+root, "HELPER_RUNTIME_IMAGES="+images)
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Delete(context.Background(), "survivor", true) })
	wait.For(t, 20*time.Second, "the container running", func() bool {
		st, err := r.State("survivor")
		if err != nil || st.Status != Running {
			return false
		}
		_, err = os.Stat(filepath.Join(st.Bundle, "upper/tmp/alive"))
		return err == nil
	})
	helper.Process.Kill()
	helper.Wait()
	st, err := r.State("survivor")
	if err != nil || st.Status != Running {
		t.Fatalf("after the runtime was killed: %+v %v", st, err)
	}
	g, err := cgroup.Open(st.Cgroup)
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(st.Bundle, "rootfs")
	if err := r.Delete(context.Background(), "survivor", true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(g.Dir("memory")); !os.IsNotExist(err) {
		t.Errorf("cgroup left behind: %v", err)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), rootfs) {
		t.Errorf("overlay still mounted at %s", rootfs)
	}
	if _, err := os.Stat(st.Bundle); !os.IsNotExist(err) {
		t.Errorf("bundle left behind: %v", err)
	}
	if _, err := r.State("survivor"); !errors.Is(err, ErrNotFound) {
		t.Errorf("state after delete: %v", err)
	}
}

// storeImages is the store as the runtime's Images, as
// container/imagesource.New makes it (which these in-package tests cannot
// import: it imports this package).
type storeImages struct{ s *image.Store }

func (si storeImages) Resolve(ctx context.Context, ref string) (*Image, error) {
	img, err := si.s.Get(ref)
	if err != nil {
		return nil, err
	}
	layers, err := si.s.LayerDirs(ctx, img)
	if err != nil {
		return nil, err
	}
	c := img.Config.Config
	return &Image{Ref: img.Ref, Digest: img.Digest, Layers: layers, Config: ImageConfig{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir, User: c.User}}, nil
}

func (si storeImages) Commit(ctx context.Context, base, upper, ref, comment string) (*Image, error) {
	b, err := si.s.Get(base)
	if err != nil {
		return nil, err
	}
	img, err := si.s.Commit(ctx, b, upper, ref, comment)
	if err != nil {
		return nil, err
	}
	return &Image{Ref: img.Ref, Digest: img.Digest}, nil
}
