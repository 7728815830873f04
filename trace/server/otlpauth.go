package server

import (
	"errors"
	"net/http"
	"strings"

	"github.com/tangram-dev/tangram/internal/auth"
)

// check asks Config.Authenticate about r's token: nil when it may pass;
// otherwise whether the token was refused (else the check failed) and why.
func (s *Server) check(r *http.Request) (refused bool, err error) {
	token := auth.Bearer(r)
	if token == "" {
		return true, errors.New("OTLP export without a bearer token: send the header Authorization: Bearer <API token> (OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<token>)")
	}
	if err := s.cfg.Authenticate(r.Context(), token); err != nil {
		if errors.Is(err, ErrUnauthenticated) {
			return true, errors.New("invalid or expired API token")
		}
		return false, errors.New("checking the API token: " + err.Error())
	}
	return false, nil
}

// authHTTP lets only authenticated OTLP/HTTP requests through (all, when
// Config.Authenticate is nil); the refusal is OTLP's Status, in the
// request's encoding.
func (s *Server) authHTTP(next http.Handler) http.Handler {
	return s.authed(next, func(w http.ResponseWriter, r *http.Request, refused bool, err error) {
		isJSON := strings.HasPrefix(r.Header.Get("Content-Type"), "application/json")
		if refused {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tangram"`)
			writeCode(w, http.StatusUnauthorized, 16, isJSON, err.Error()) // UNAUTHENTICATED
			return
		}
		writeCode(w, http.StatusServiceUnavailable, 14, isJSON, err.Error()) // UNAVAILABLE
	})
}

// authGRPC is authHTTP for OTLP/gRPC: the status goes in a trailers-only
// reply.
func (s *Server) authGRPC(next http.Handler) http.Handler {
	return s.authed(next, func(w http.ResponseWriter, _ *http.Request, refused bool, err error) {
		w.Header().Set("Content-Type", "application/grpc")
		code := grpcUnavailable
		if refused {
			code = grpcUnauthenticated
		}
		grpcStatus(w, code, err.Error())
		w.WriteHeader(http.StatusOK)
	})
}

// authed runs next for the requests check lets in and refuse for the
// others.
func (s *Server) authed(next http.Handler, refuse func(w http.ResponseWriter, r *http.Request, refused bool, err error)) http.Handler {
	if s.cfg.Authenticate == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refused, err := s.check(r)
		if err == nil {
			next.ServeHTTP(w, r)
			return
		}
		if !refused {
			s.log.Warn("trace: OTLP export refused: the token could not be checked", "err", err)
		}
		refuse(w, r, refused, err)
	})
}
