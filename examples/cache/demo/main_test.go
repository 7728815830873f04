package main

import "testing"

// TestDemo runs the README tour's cache demo.
func TestDemo(t *testing.T) {
	if err := run(); err != nil {
		t.Fatal(err)
	}
}
