package server

import "testing"

// OTLPAuth "auto" asks for tokens exactly when a receiver can be reached
// from another machine.
func TestOTLPAuthAuto(t *testing.T) {
	for _, c := range []struct {
		mode, http, grpc string
		want             bool
	}{
		{"", "127.0.0.1:4318", "127.0.0.1:4317", false},
		{"auto", "localhost:4318", "[::1]:4317", false},
		{"auto", "127.0.0.1:4318", ":4317", true},
		{"auto", "0.0.0.0:4318", "off", true},
		{"auto", "10.1.2.3:4318", "off", true},
		{"auto", "[::]:4318", "off", true},
		{"auto", "off", "off", false},
		{"on", "127.0.0.1:4318", "127.0.0.1:4317", true},
		{"off", ":4318", ":4317", false},
	} {
		cfg := Config{OTLPAuth: c.mode, OTLPHTTPAddr: c.http, OTLPGRPCAddr: c.grpc}
		if got := cfg.otlpAuth(); got != c.want {
			t.Errorf("OTLPAuth %q with %s and %s: %v, want %v", c.mode, c.http, c.grpc, got, c.want)
		}
	}
}
