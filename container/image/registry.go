package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"

	digest "github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types of Docker's registry format, which registries still serve
// beside OCI's.
const (
	mediaDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// RegistryOptions configure Pull and Push.
type RegistryOptions struct {
	// PlainHTTP talks HTTP instead of HTTPS. Registries on a loopback
	// address are spoken to in HTTP anyway, as Docker does.
	PlainHTTP bool
	// Username and Password are sent with Basic auth, or to the token
	// service a registry names in its Bearer challenge.
	Username, Password string
	// Client is the HTTP client (default: http.DefaultClient).
	Client *http.Client
	// Progress, when set, is told of every blob moved.
	Progress func(what string, bytes int64)
}

// Remote is a parsed registry reference: host/repository plus a tag or a
// digest.
type Remote struct {
	Host, Repository, Tag string
	Digest                digest.Digest
}

// ParseRemote reads "host[:port]/repo[:tag][@sha256:…]". The host is the
// first path element when it holds a dot or a colon or is "localhost"
// (Docker's rule); otherwise the reference is refused: Tangram does not
// guess a default registry.
func ParseRemote(ref string) (Remote, error) {
	var r Remote
	rest := ref
	if at := strings.Index(rest, "@"); at >= 0 {
		d := digest.Digest(rest[at+1:])
		if err := d.Validate(); err != nil {
			return r, fmt.Errorf("image: reference %q: %w", ref, err)
		}
		r.Digest, rest = d, rest[:at]
	}
	host, path, ok := strings.Cut(rest, "/")
	if !ok || !(strings.ContainsAny(host, ".:") || host == "localhost") {
		return r, fmt.Errorf("image: reference %q names no registry host (want host[:port]/repository[:tag])", ref)
	}
	r.Host = host
	if i := strings.LastIndex(path, ":"); i >= 0 && !strings.Contains(path[i:], "/") {
		r.Tag, path = path[i+1:], path[:i]
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	for _, part := range strings.Split(path, "/") {
		if part == "" || strings.Trim(part, "abcdefghijklmnopqrstuvwxyz0123456789._-") != "" {
			return r, fmt.Errorf("image: reference %q: repository %q must be lower-case letters, digits, '.', '_', '-' and '/'", ref, path)
		}
	}
	r.Repository = path
	return r, nil
}

// String is the reference as written.
func (r Remote) String() string {
	s := r.Host + "/" + r.Repository
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + string(r.Digest)
	}
	return s
}

// registry is a client of one registry's distribution API.
type regClient struct {
	base   string
	repo   string
	opts   RegistryOptions
	client *http.Client
	mu     sync.Mutex
	auth   string // the Authorization header to send
}

func newRegistry(r Remote, o RegistryOptions) *regClient {
	scheme := "https"
	if o.PlainHTTP || isLoopback(r.Host) {
		scheme = "http"
	}
	c := o.Client
	if c == nil {
		c = http.DefaultClient
	}
	reg := &regClient{base: scheme + "://" + r.Host, repo: r.Repository, opts: o, client: c}
	if o.Username != "" {
		reg.auth = basicAuth(o.Username, o.Password)
	}
	return reg
}

func isLoopback(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func basicAuth(user, pass string) string {
	req, _ := http.NewRequest("GET", "http://x", nil)
	req.SetBasicAuth(user, pass)
	return req.Header.Get("Authorization")
}

// do sends a request, answering one Bearer or Basic challenge.
func (g *regClient) do(ctx context.Context, method, url string, hdr http.Header, body func() io.Reader, size int64) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		var b io.Reader
		if body != nil {
			b = body()
		}
		req, err := http.NewRequestWithContext(ctx, method, url, b)
		if err != nil {
			return nil, fmt.Errorf("image: registry: %w", err)
		}
		if size >= 0 && body != nil {
			req.ContentLength = size
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		g.mu.Lock()
		if g.auth != "" {
			req.Header.Set("Authorization", g.auth)
		}
		g.mu.Unlock()
		resp, err := g.client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("image: registry %s: %w", g.base, err)
		}
		if resp.StatusCode != http.StatusUnauthorized || attempt > 0 {
			return resp, nil
		}
		challenge := resp.Header.Get("WWW-Authenticate")
		resp.Body.Close()
		if err := g.authenticate(ctx, challenge); err != nil {
			return nil, err
		}
	}
}

// authenticate answers a challenge: Basic with the credentials, Bearer by
// asking the named token service (with the credentials, if any).
func (g *regClient) authenticate(ctx context.Context, challenge string) error {
	scheme, params, _ := strings.Cut(challenge, " ")
	switch strings.ToLower(scheme) {
	case "basic":
		if g.opts.Username == "" {
			return fmt.Errorf("image: registry %s wants a user name and password", g.base)
		}
		g.mu.Lock()
		g.auth = basicAuth(g.opts.Username, g.opts.Password)
		g.mu.Unlock()
		return nil
	case "bearer":
	default:
		return fmt.Errorf("image: registry %s: unsupported authentication %q", g.base, challenge)
	}
	p := parseChallenge(params)
	realm, err := url.Parse(p["realm"])
	if err != nil || p["realm"] == "" || (realm.Scheme != "https" && realm.Scheme != "http") {
		return fmt.Errorf("image: registry %s: bad token realm %q", g.base, p["realm"])
	}
	q := realm.Query()
	if s := p["service"]; s != "" {
		q.Set("service", s)
	}
	if s := p["scope"]; s != "" {
		q.Set("scope", s)
	}
	realm.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, "GET", realm.String(), nil)
	if err != nil {
		return fmt.Errorf("image: token: %w", err)
	}
	if g.opts.Username != "" {
		req.SetBasicAuth(g.opts.Username, g.opts.Password)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return fmt.Errorf("image: token from %s: %w", realm.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("image: token from %s: %s", realm.Host, resp.Status)
	}
	var tok struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tok); err != nil {
		return fmt.Errorf("image: token from %s: %w", realm.Host, err)
	}
	t := tok.Token
	if t == "" {
		t = tok.AccessToken
	}
	if t == "" {
		return fmt.Errorf("image: token from %s: empty", realm.Host)
	}
	g.mu.Lock()
	g.auth = "Bearer " + t
	g.mu.Unlock()
	return nil
}

// parseChallenge reads k="v",k2="v2".
func parseChallenge(s string) map[string]string {
	out := map[string]string{}
	for len(s) > 0 {
		s = strings.TrimLeft(s, " ,")
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			end := strings.Index(rest[1:], `"`)
			if end < 0 {
				break
			}
			v, s = rest[1:1+end], rest[2+end:]
		} else {
			v, s, _ = strings.Cut(rest, ",")
		}
		out[strings.ToLower(strings.TrimSpace(k))] = v
	}
	return out
}

func statusError(what string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return fmt.Errorf("image: registry: %s: %s %s", what, resp.Status, strings.TrimSpace(string(b)))
}

// Pull fetches an image from a registry into the store and names it by
// its remote reference (host/repo:tag). For an index it takes the
// linux image of this machine's architecture.
func (s *Store) Pull(ctx context.Context, ref string, o RegistryOptions) (*Image, error) {
	r, err := ParseRemote(ref)
	if err != nil {
		return nil, err
	}
	g := newRegistry(r, o)
	want := r.Tag
	if r.Digest != "" {
		want = string(r.Digest)
	}
	var md digest.Digest
	var mbody []byte
	for depth := 0; ; depth++ {
		body, d, mt, err := g.manifest(ctx, want)
		if err != nil {
			return nil, err
		}
		if depth == 0 && r.Digest != "" && d != r.Digest {
			return nil, fmt.Errorf("image: %s: the registry's manifest is %s", ref, d)
		}
		if mt != v1.MediaTypeImageIndex && mt != mediaDockerManifestList {
			md, mbody = d, body
			break
		}
		if depth > 2 {
			return nil, fmt.Errorf("image: %s: indexes nested too deep", ref)
		}
		var idx v1.Index
		if err := json.Unmarshal(body, &idx); err != nil {
			return nil, fmt.Errorf("image: %s: index: %w", ref, err)
		}
		want = ""
		for _, m := range idx.Manifests {
			if m.Platform != nil && m.Platform.OS == "linux" && m.Platform.Architecture == runtime.GOARCH {
				want = string(m.Digest)
				break
			}
		}
		if want == "" {
			return nil, fmt.Errorf("image: %s has no linux/%s image", ref, runtime.GOARCH)
		}
	}
	var m v1.Manifest
	if err := json.Unmarshal(mbody, &m); err != nil {
		return nil, fmt.Errorf("image: %s: manifest: %w", ref, err)
	}
	for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if err := g.fetchBlob(ctx, s, b); err != nil {
			return nil, err
		}
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, _, err := s.putBlob(bytes.NewReader(mbody), md); err != nil {
		return nil, err
	}
	name := r.Host + "/" + r.Repository + ":" + r.Tag
	if r.Tag == "" {
		name = r.Host + "/" + r.Repository + ":" + r.Digest.Encoded()[:12]
	}
	if err := s.tag(name, v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: md, Size: int64(len(mbody))}); err != nil {
		return nil, err
	}
	return s.load(name, md)
}

// manifest fetches a manifest by tag or digest; the digest is computed
// from the bytes received.
func (g *regClient) manifest(ctx context.Context, ref string) ([]byte, digest.Digest, string, error) {
	hdr := http.Header{"Accept": {v1.MediaTypeImageManifest + ", " + v1.MediaTypeImageIndex + ", " + mediaDockerManifest + ", " + mediaDockerManifestList}}
	resp, err := g.do(ctx, "GET", g.base+"/v2/"+g.repo+"/manifests/"+ref, hdr, nil, -1)
	if err != nil {
		return nil, "", "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", "", statusError("manifest "+g.repo+":"+ref, resp)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJSON+1))
	if err != nil {
		return nil, "", "", fmt.Errorf("image: registry: manifest: %w", err)
	}
	if len(body) > maxJSON {
		return nil, "", "", fmt.Errorf("image: registry: manifest larger than %d bytes", maxJSON)
	}
	sum := sha256.Sum256(body)
	d := digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum[:]))
	mt := resp.Header.Get("Content-Type")
	var probe struct {
		MediaType string `json:"mediaType"`
	}
	if json.Unmarshal(body, &probe) == nil && probe.MediaType != "" {
		mt = probe.MediaType
	}
	return body, d, mt, nil
}

func (g *regClient) fetchBlob(ctx context.Context, s *Store, b v1.Descriptor) error {
	if p, err := s.blobPath(b.Digest); err != nil {
		return err
	} else if _, err := os.Stat(p); err == nil {
		return nil
	}
	resp, err := g.do(ctx, "GET", g.base+"/v2/"+g.repo+"/blobs/"+string(b.Digest), nil, nil, -1)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError("blob "+string(b.Digest), resp)
	}
	_, n, err := s.putBlob(resp.Body, b.Digest)
	if err != nil {
		return err
	}
	if g.opts.Progress != nil {
		g.opts.Progress(string(b.Digest), n)
	}
	return nil
}

// Push uploads an image to a registry as ref (host/repo[:tag]): each blob
// the registry lacks, then the manifest.
func (s *Store) Push(ctx context.Context, img *Image, ref string, o RegistryOptions) error {
	r, err := ParseRemote(ref)
	if err != nil {
		return err
	}
	if r.Digest != "" {
		return fmt.Errorf("image: push to %s: name a tag, not a digest", ref)
	}
	g := newRegistry(r, o)
	for _, b := range append([]v1.Descriptor{img.Manifest.Config}, img.Manifest.Layers...) {
		if err := g.pushBlob(ctx, s, b.Digest); err != nil {
			return err
		}
	}
	mb, err := s.readBlob(digest.Digest(img.Digest), maxJSON)
	if err != nil {
		return err
	}
	mt := img.Manifest.MediaType
	if mt == "" {
		mt = v1.MediaTypeImageManifest
	}
	hdr := http.Header{"Content-Type": {mt}}
	resp, err := g.do(ctx, "PUT", g.base+"/v2/"+g.repo+"/manifests/"+r.Tag, hdr, func() io.Reader { return bytes.NewReader(mb) }, int64(len(mb)))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return statusError("put manifest", resp)
	}
	return nil
}

func (g *regClient) pushBlob(ctx context.Context, s *Store, d digest.Digest) error {
	blobURL := g.base + "/v2/" + g.repo + "/blobs/" + string(d)
	resp, err := g.do(ctx, "HEAD", blobURL, nil, nil, -1)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil // already there
	}
	resp, err = g.do(ctx, "POST", g.base+"/v2/"+g.repo+"/blobs/uploads/", nil, nil, -1)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return statusError("start upload", resp)
	}
	loc, err := resp.Location()
	if err != nil {
		return fmt.Errorf("image: registry: upload location: %w", err)
	}
	q := loc.Query()
	q.Set("digest", string(d))
	loc.RawQuery = q.Encode()
	p, err := s.blobPath(d)
	if err != nil {
		return err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("image: push: %w", err)
	}
	var open []*os.File
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	body := func() io.Reader {
		f, err := os.Open(p)
		if err != nil {
			return errReader{err}
		}
		open = append(open, f)
		return f
	}
	hdr := http.Header{"Content-Type": {"application/octet-stream"}}
	resp, err = g.do(ctx, "PUT", loc.String(), hdr, body, fi.Size())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return statusError("upload "+string(d), resp)
	}
	if g.opts.Progress != nil {
		g.opts.Progress(string(d), fi.Size())
	}
	return nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
