package server

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tangram-dev/tangram/trace/otlp"
	"github.com/tangram-dev/tangram/trace/store"
)

// receiveHTTP is OTLP/HTTP's POST /v1/traces: protobuf or JSON, gzip or
// identity; the reply in the request's encoding, with the refused spans
// as a partial success.
func (s *Server) receiveHTTP(w http.ResponseWriter, r *http.Request) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	isJSON := ct == "application/json"
	if !isJSON && ct != "application/x-protobuf" {
		writeStatus(w, http.StatusUnsupportedMediaType, false, fmt.Sprintf("content type %q: want application/x-protobuf or application/json", ct))
		return
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, s.cfg.MaxRequestBytes)
	switch r.Header.Get("Content-Encoding") {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			writeStatus(w, http.StatusBadRequest, isJSON, "gzip body: "+err.Error())
			return
		}
		defer zr.Close()
		body = io.LimitReader(zr, s.cfg.MaxRequestBytes+1)
	default:
		writeStatus(w, http.StatusUnsupportedMediaType, isJSON, fmt.Sprintf("content encoding %q: want gzip or none", r.Header.Get("Content-Encoding")))
		return
	}
	b, err := io.ReadAll(body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeStatus(w, http.StatusRequestEntityTooLarge, isJSON, fmt.Sprintf("request larger than %d bytes", s.cfg.MaxRequestBytes))
			return
		}
		writeStatus(w, http.StatusBadRequest, isJSON, "read body: "+err.Error())
		return
	}
	if int64(len(b)) > s.cfg.MaxRequestBytes {
		writeStatus(w, http.StatusRequestEntityTooLarge, isJSON, fmt.Sprintf("request larger than %d bytes once unzipped", s.cfg.MaxRequestBytes))
		return
	}
	var spans []store.Span
	if isJSON {
		spans, err = otlp.DecodeTracesJSON(nil, b)
	} else {
		spans, err = otlp.DecodeTraces(nil, b)
	}
	if err != nil {
		writeStatus(w, http.StatusBadRequest, isJSON, err.Error())
		return
	}
	if isJSON {
		s.forward(b, "application/json")
	} else {
		s.forward(b, "application/x-protobuf")
	}
	rejected := s.Ingest(spans)
	msg := ""
	if rejected > 0 {
		msg = "the collector's ingest queue is full: spans dropped"
	}
	if isJSON {
		w.Header().Set("Content-Type", "application/json")
		reply := map[string]any{}
		if rejected > 0 {
			reply["partialSuccess"] = map[string]string{"rejectedSpans": strconv.Itoa(rejected), "errorMessage": msg}
		}
		json.NewEncoder(w).Encode(reply)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	if rejected > 0 {
		w.Write(partialSuccess(rejected, msg))
	}
}

// writeStatus answers with an error as OTLP/HTTP says: a google.rpc.Status
// (code, message) in the request's encoding.
func writeStatus(w http.ResponseWriter, status int, isJSON bool, msg string) {
	code := 3 // INVALID_ARGUMENT
	if status == http.StatusRequestEntityTooLarge {
		code = 8 // RESOURCE_EXHAUSTED
	}
	if isJSON {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg})
		return
	}
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(code))
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, msg)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(status)
	w.Write(b)
}
