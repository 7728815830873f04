package server_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/server/servertest"
)

// TestUnknownAPIPathsNeedAuth: without a token, an unknown /api path
// answers 401 like a known one, so routes cannot be enumerated.
func TestUnknownAPIPathsNeedAuth(t *testing.T) {
	h := servertest.Start(t)
	for _, p := range []string{"/api/v1/nope", "/api/v1/config/apps", "/api/v2/anything", "/api/v1/auth/users/x/nothing"} {
		resp, err := http.Get(h.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %d, want 401", p, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("GET", h.URL+"/api/v1/nope", nil)
	req.Header.Set("Authorization", "Bearer "+h.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown path with a token: %d", resp.StatusCode)
	}
}

// TestDataDirPrivate: the data directory and the SQLite database (password
// and token hashes, encrypted secrets) are readable by their owner only.
func TestDataDirPrivate(t *testing.T) {
	if os.Getenv("TANGRAM_TEST_STORE") != "" && os.Getenv("TANGRAM_TEST_STORE") != "sqlite" {
		t.Skip("the SQLite file is under test")
	}
	dir := filepath.Join(t.TempDir(), "data")
	servertest.Start(t, servertest.WithDataDir(dir))
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v %v", fi.Mode(), err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "tangram.db") {
			fi, err := os.Stat(filepath.Join(dir, e.Name()))
			if err != nil || fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s: mode %v %v", e.Name(), fi.Mode(), err)
			}
		}
	}
}

// TestTopicNeedsQueues: zero queues is refused, not silently the default.
func TestTopicNeedsQueues(t *testing.T) {
	h := servertest.Start(t)
	c, err := mq.NewClient(context.Background(), mq.Config{Servers: []string{h.Srv.RPCAddr()}, Token: h.Token})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.CreateTopic(context.Background(), "zero", 0, false)
	if err == nil || !strings.Contains(err.Error(), "0 queues") {
		t.Fatalf("0 queues: %v", err)
	}
}
