package layout

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestVersionStartsFast: the packages of Tangram itself do no costly work
// at program start (a PBKDF2 hash or a regular expression with counted
// repetitions made `tangram version`, and every SDK user, pay for it).
// It reads the Go runtime's own init trace, which times each package's
// initialisation, rather than the wall clock of a noisy machine; the
// bound is on the least of three runs.
func TestVersionStartsFast(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the tangram binary")
	}
	bin := filepath.Join(t.TempDir(), "tangram")
	goTool(t, "build", "-o", bin, "../../cmd/tangram")
	const budgetMS = 2.0
	best, bestAll := -1.0, -1.0
	var worst string
	for range 3 {
		cmd := exec.Command(bin, "version")
		cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tangram version: %v\n%s", err, out)
		}
		own, all, slowest := initClock(string(out))
		if best < 0 || own < best {
			best, worst = own, slowest
		}
		if bestAll < 0 || all < bestAll {
			bestAll = all
		}
	}
	t.Logf("package initialisation: Tangram's own %.2f ms, all packages %.2f ms", best, bestAll)
	if best > budgetMS {
		t.Errorf("Tangram's packages take %.2f ms to initialise (budget %.1f ms); slowest: %s", best, budgetMS, worst)
	}
}

// initClock sums the "ms clock" of init trace lines: of Tangram's own
// packages, of all packages, and names Tangram's slowest.
func initClock(trace string) (own, all float64, slowest string) {
	var max float64
	for _, line := range strings.Split(trace, "\n") {
		f := strings.Fields(line)
		// init <pkg> @<t> ms, <clock> ms clock, …
		if len(f) < 7 || f[0] != "init" || f[6] != "clock," {
			continue
		}
		ms, err := strconv.ParseFloat(f[4], 64)
		if err != nil {
			continue
		}
		all += ms
		if strings.HasPrefix(f[1], "github.com/tangram-dev/tangram") {
			own += ms
			if ms > max {
				max, slowest = ms, f[1]+" "+f[4]+" ms"
			}
		}
	}
	return own, all, slowest
}
