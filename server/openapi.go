package server

import (
	"bytes"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"

	configserver "github.com/tangram-dev/tangram/config/server"
	idserver "github.com/tangram-dev/tangram/idgen/server"
	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apidoc"
	"github.com/tangram-dev/tangram/internal/auth"
	jobserver "github.com/tangram-dev/tangram/job/server"
	lockserver "github.com/tangram-dev/tangram/lock/server"
	registryserver "github.com/tangram-dev/tangram/registry/server"
	traceserver "github.com/tangram-dev/tangram/trace/server"
	txnserver "github.com/tangram-dev/tangram/txn/server"
)

// platformRoutes documents the routes server/ mounts itself.
func platformRoutes() []apidoc.Route {
	return []apidoc.Route{
		{Method: "GET", Path: "/api/v1/version", Tag: "platform", Summary: "The server's version and store dialect", Response: map[string]string{}},
		{Method: "GET", Path: "/api/v1/openapi.yaml", Tag: "platform", Summary: "This document", Text: true},
	}
}

// APIRoutes lists every documented HTTP route of the platform, whichever
// components a server runs.
func APIRoutes() []apidoc.Route {
	var out []apidoc.Route
	for _, l := range [][]apidoc.Route{platformRoutes(), auth.APIRoutes(), configserver.APIRoutes(), registryserver.APIRoutes(), jobserver.APIRoutes(), lockserver.APIRoutes(), idserver.APIRoutes(), txnserver.APIRoutes(), traceserver.APIRoutes()} {
		out = append(out, l...)
	}
	return out
}

// OpenAPI renders the HTTP API as an OpenAPI 3.1 YAML document (the
// committed docs/openapi.yaml is this output).
func OpenAPI() ([]byte, error) {
	spec, err := apidoc.Spec(apidoc.Info{Title: "Tangram HTTP API", Version: "v1",
		Description: "Every route needs an API token (Authorization: Bearer tgm_…) or a console session with its " +
			"X-CSRF-Token. Errors come in one envelope, {\"error\":{\"code\",\"message\",\"details\"}}, with the codes of " +
			"docs/errors.md. Request bodies are JSON objects; unknown fields are refused."}, APIRoutes())
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(spec); err != nil {
		return nil, fmt.Errorf("server: encode the OpenAPI document: %w", err)
	}
	_ = enc.Close()
	return b.Bytes(), nil
}

// recordingMux registers routes on a ServeMux and remembers the API
// patterns, so a test can hold them against the document.
type recordingMux struct {
	*http.ServeMux
	mu       sync.Mutex
	patterns []string
}

func (m *recordingMux) Handle(pattern string, h http.Handler) {
	if method, path, ok := strings.Cut(pattern, " "); ok && strings.HasPrefix(path, "/api/") {
		m.mu.Lock()
		m.patterns = append(m.patterns, method+" "+path)
		m.mu.Unlock()
	}
	m.ServeMux.Handle(pattern, h)
}

// MountedAPI lists the "METHOD /api/…" patterns this server mounted.
func (s *Server) MountedAPI() []string {
	if s.mux == nil {
		return nil
	}
	s.mux.mu.Lock()
	defer s.mux.mu.Unlock()
	out := append([]string(nil), s.mux.patterns...)
	sort.Strings(out)
	return out
}

var _ api.Mux = (*recordingMux)(nil)
