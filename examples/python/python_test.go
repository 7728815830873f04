// Package python holds a standard-library Python client of Tangram's HTTP
// API (tangram.py) and runs its tests against a real server.
package python

import (
	"os"
	"os/exec"
	"testing"

	"github.com/tangram-dev/tangram/server/servertest"
)

// TestPythonClient runs test_tangram.py against a server, proving a team
// without Go can use the config center and the registry.
func TestPythonClient(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("the Python client's test needs python3: run scripts/services.sh (apt-get install python3)")
	}
	h := servertest.Start(t)
	cmd := exec.Command(py, "-m", "unittest", "-v", "test_tangram")
	cmd.Env = append(os.Environ(), "TANGRAM_URL="+h.URL, "TANGRAM_TOKEN="+h.Token, "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("python tests: %v", err)
	}
}
