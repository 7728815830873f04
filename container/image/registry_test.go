package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// writeLayout writes an OCI image layout by hand: one image "t:1" whose one
// layer holds /hello.
func writeLayout(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	blobs := filepath.Join(dir, "blobs/sha256")
	os.MkdirAll(blobs, 0o755)
	put := func(b []byte) v1.Descriptor {
		sum := sha256.Sum256(b)
		d := digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum[:]))
		os.WriteFile(filepath.Join(blobs, d.Encoded()), b, 0o644)
		return v1.Descriptor{Digest: d, Size: int64(len(b))}
	}
	var layer bytes.Buffer
	w := tar.NewWriter(&layer)
	w.WriteHeader(&tar.Header{Name: "hello", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5})
	w.Write([]byte("hello"))
	w.Close()
	ld := put(layer.Bytes())
	ld.MediaType = v1.MediaTypeImageLayer
	cfg, _ := json.Marshal(v1.Image{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, RootFS: v1.RootFS{Type: "layers", DiffIDs: []digest.Digest{ld.Digest}}})
	cd := put(cfg)
	cd.MediaType = v1.MediaTypeImageConfig
	m, _ := json.Marshal(v1.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageManifest, Config: cd, Layers: []v1.Descriptor{ld}})
	md := put(m)
	md.MediaType = v1.MediaTypeImageManifest
	md.Annotations = map[string]string{v1.AnnotationRefName: "t:1"}
	idx, _ := json.Marshal(v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, Manifests: []v1.Descriptor{md}})
	os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	return dir
}

// tokenAuth puts a registry behind Docker's token flow: 401 with a Bearer
// challenge, a token service that wants user:secret.
func tokenAuth(h http.Handler, tokens *atomic.Int64) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "user" || p != "secret" {
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
		tokens.Add(1)
		w.Write([]byte(`{"token":"tok-123"}`))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-123" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+r.Host+`/token",service="test",scope="repository:x:pull"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
	return mux
}

func TestPushPull(t *testing.T) {
	var tokens atomic.Int64
	srv := httptest.NewServer(tokenAuth(registry.New(registry.Logger(log.New(io.Discard, "", 0))), &tokens))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()

	src, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := src.Import(ctx, writeLayout(t), "")
	if err != nil {
		t.Fatal(err)
	}
	creds := RegistryOptions{Username: "user", Password: "secret"}
	if err := src.Push(ctx, imgs[0], host+"/team/hello:v1", RegistryOptions{}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("push without credentials: %v", err)
	}
	if err := src.Push(ctx, imgs[0], host+"/team/hello:v1", creds); err != nil {
		t.Fatal(err)
	}
	// A second push finds every blob there already.
	if err := src.Push(ctx, imgs[0], host+"/team/hello:v2", creds); err != nil {
		t.Fatal(err)
	}
	dst, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	got, err := dst.Pull(ctx, host+"/team/hello:v1", creds)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != imgs[0].Digest || got.Ref != host+"/team/hello:v1" {
		t.Fatalf("pulled %s %s, want %s", got.Ref, got.Digest, imgs[0].Digest)
	}
	byDigest, err := dst.Pull(ctx, host+"/team/hello@"+imgs[0].Digest, creds)
	if err != nil || byDigest.Digest != imgs[0].Digest {
		t.Fatalf("pull by digest: %v %v", byDigest, err)
	}
	if tokens.Load() == 0 {
		t.Fatal("the token service was never asked")
	}
	if _, err := dst.Pull(ctx, host+"/team/absent:v1", creds); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("pull of a missing image: %v", err)
	}
	for _, bad := range []string{"hello", "host/Upper:1", "localhost:5000/a//b", host + "/x@sha256:zz"} {
		if _, err := ParseRemote(bad); err == nil {
			t.Errorf("ParseRemote(%q) accepted", bad)
		}
	}
}
