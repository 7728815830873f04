// Package yamlout gives cliout's printers YAML output; the full tangram
// binary imports it, the lean runtime binary does not.
package yamlout

import (
	"io"

	"go.yaml.in/yaml/v3"

	"github.com/tangram-dev/tangram/cmd/internal/cliout"
)

func init() {
	cliout.RegisterYAML(func(w io.Writer, v any) error { return yaml.NewEncoder(w).Encode(v) })
}
