package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
)

// TestREADMETour runs README.md's tour as a reader would: every ```sh block,
// in order, line by line, in one bash shell, in a copy of the repository,
// with the ports the README uses. The runner adds only what a person does by
// eye: a command ending in `&` runs in the background (its output to a log)
// and the next line waits until it has printed something and the addresses
// it listens on answer; `# prints X` after a command means its output must
// contain X (for a background command: by the end of the tour); every other
// command must exit 0. `make tour` runs it alone.
func TestREADMETour(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the README's tour")
	}
	if os.Getenv("TANGRAM_TEST_STORE") != "" {
		t.Skip("the tour runs on its own SQLite store; once per make test")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(readme)
	// The tour: from its heading to the next section (the two commands
	// above it are the project's own — running the server, running these
	// tests).
	from := strings.Index(md, "## A 5-minute tour")
	if from < 0 {
		t.Fatal(`README.md has no "## A 5-minute tour" section`)
	}
	md = md[from:]
	if to := strings.Index(md[3:], "\n## "); to >= 0 {
		md = md[:to+3]
	}
	lines := shLines(md)
	if len(lines) < 40 {
		t.Fatalf("found %d tour lines in README.md; the parser is broken", len(lines))
	}
	for _, p := range []string{"7070", "7071", "7072", "7080", "7090", "7101", "7102", "7103", "9001", "3307", "18080", "4318", "4317"} {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+p, 200*time.Millisecond); err == nil {
			c.Close()
			t.Fatalf("port %s is in use: the README tour needs the ports it names (stop the server holding it)", p)
		}
	}
	dir := copyRepo(t, root)
	logs := t.TempDir()
	sh := exec.Command("bash", "--noprofile", "--norc", "-s")
	sh.Dir = dir
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TANGRAM_") {
			sh.Env = append(sh.Env, kv)
		}
	}
	in, err := sh.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sh.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	sh.Stderr = sh.Stdout.(io.Writer)
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = syscall.Kill(-sh.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = sh.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-sh.Process.Pid, syscall.SIGKILL)
			<-done
		}
		// The tour's background servers and broker are the shell's group:
		// the temporary directories go only once every one has exited (a
		// server still shutting down writes into its data directory).
		gone := func() bool { return syscall.Kill(-sh.Process.Pid, 0) == syscall.ESRCH }
		if !wait.Until(10*time.Second, gone) {
			_ = syscall.Kill(-sh.Process.Pid, syscall.SIGKILL)
			wait.For(t, 10*time.Second, "the tour's processes to exit", gone)
		}
	}()
	outLines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			outLines <- sc.Text()
		}
		close(outLines)
	}()
	send := func(s string) {
		if _, err := io.WriteString(in, s+"\n"); err != nil {
			t.Fatalf("the shell is gone: %v", err)
		}
	}
	send("exec 2>&1")
	// run sends one command and returns its output and exit status.
	run := func(cmd string, timeout time.Duration) (string, string) {
		send(cmd)
		send(`echo "__TOUR_RC=$?"`)
		var b strings.Builder
		deadline := time.After(timeout)
		for {
			select {
			case l, ok := <-outLines:
				if !ok {
					return b.String(), "shell exited"
				}
				if rc, ok := strings.CutPrefix(l, "__TOUR_RC="); ok {
					return b.String(), rc
				}
				b.WriteString(l + "\n")
			case <-deadline:
				return b.String(), "timed out after " + timeout.String()
			}
		}
	}
	var bgs []bgProc
	var mu sync.Mutex
	for i, l := range lines {
		cmd, prints := l.cmd, l.prints
		if head, rest, isBG := splitBackground(cmd); isBG {
			log := filepath.Join(logs, fmt.Sprintf("bg%02d.log", i))
			launch := head + " > " + log + " 2>&1 &"
			if rest != "" {
				launch += " " + rest
			}
			if o, rc := run(launch, 10*time.Second); rc != "0" {
				t.Fatalf("README line %q: %s\n%s", l.cmd, rc, o)
			}
			mu.Lock()
			bgs = append(bgs, bgProc{l.cmd, log, prints})
			mu.Unlock()
			// Wait for it as a reader would: it printed something, and the
			// addresses it listens on answer.
			waitFor(t, l.cmd, 180*time.Second, func() bool {
				b, _ := os.ReadFile(log)
				return len(b) > 0
			}, log)
			for _, a := range listenAddrs(head) {
				waitFor(t, l.cmd+" listening on "+a, 120*time.Second, func() bool {
					c, err := net.DialTimeout("tcp", a, 200*time.Millisecond)
					if err == nil {
						c.Close()
					}
					return err == nil
				}, log)
			}
			continue
		}
		o, rc := run(cmd, 150*time.Second)
		if rc != "0" {
			t.Fatalf("README line %q exited %s:\n%s%s", l.cmd, rc, o, bgTails(bgs))
		}
		if prints != "" && !strings.Contains(o, prints) {
			t.Fatalf("README line %q should print %q; it printed:\n%s", l.cmd, prints, o)
		}
	}
	// What the background commands promised.
	for _, b := range bgs {
		if b.prints == "" {
			continue
		}
		waitFor(t, fmt.Sprintf("%q to print %q", b.line, b.prints), 60*time.Second, func() bool {
			o, _ := os.ReadFile(b.log)
			return strings.Contains(string(o), b.prints)
		}, b.log)
	}
	t.Logf("ran %d README lines (%d in the background)", len(lines), len(bgs))
}

type tourLine struct{ cmd, prints string }

// "# prints X", X up to a "(" or ";" that starts a remark, or the end.
var printsRe = regexp.MustCompile(`#\s*prints\s+([^;(]+?)\s*(?:[;(].*)?$`)

// shLines returns the commands of README's ```sh blocks, in order, with
// what each promises to print.
func shLines(md string) []tourLine {
	var out []tourLine
	in := false
	for _, l := range strings.Split(md, "\n") {
		switch {
		case strings.HasPrefix(l, "```sh"):
			in = true
			continue
		case strings.HasPrefix(l, "```"):
			in = false
			continue
		}
		if !in || strings.TrimSpace(l) == "" || strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		var t tourLine
		if m := printsRe.FindStringSubmatch(l); m != nil {
			t.prints = m[1]
		}
		t.cmd = stripComment(l)
		out = append(out, t)
	}
	return out
}

// stripComment drops a trailing "  # …" comment (two spaces before the #,
// as the README aligns them), never a # inside quotes.
func stripComment(l string) string {
	quote := byte(0)
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '#' && i >= 2 && l[i-1] == ' ' && l[i-2] == ' ':
			return strings.TrimRight(l[:i], " ")
		}
	}
	return strings.TrimRight(l, " ")
}

// splitBackground splits "cmd & rest" or "cmd &" into the background command
// and what follows it on the line.
func splitBackground(cmd string) (head, rest string, ok bool) {
	if strings.HasSuffix(cmd, " &") {
		return strings.TrimSuffix(cmd, " &"), "", true
	}
	if i := strings.Index(cmd, " & "); i > 0 {
		return cmd[:i], strings.TrimSpace(cmd[i+3:]), true
	}
	return "", "", false
}

var listenRe = regexp.MustCompile(`(?:^|\s)(?:-addr|--http|--rpc|--route|--listen)\s+([^\s=]+)`)

// listenAddrs are the addresses a background command will listen on, as
// its flags say (":7080" is this host).
func listenAddrs(cmd string) []string {
	var out []string
	for _, m := range listenRe.FindAllStringSubmatch(cmd, -1) {
		a := m[1]
		if strings.HasPrefix(a, ":") {
			a = "127.0.0.1" + a
		}
		out = append(out, a)
	}
	return out
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool, log string) {
	t.Helper()
	if !wait.Until(d, cond) {
		b, _ := os.ReadFile(log)
		t.Fatalf("README tour: waited %v for %s; its output:\n%s", d, what, b)
	}
}

// bgProc is a command the tour runs in the background.
type bgProc struct{ line, log, prints string }

func bgTails(bgs []bgProc) string {
	var b strings.Builder
	for _, g := range bgs {
		o, _ := os.ReadFile(g.log)
		if len(o) > 2000 {
			o = o[len(o)-2000:]
		}
		fmt.Fprintf(&b, "\n--- background %q:\n%s", g.line, o)
	}
	return b.String()
}

// copyRepo copies the repository's files (tracked and untracked, not
// ignored) into a temporary directory: the tour writes ./data, ./bin, d2/.
func copyRepo(t *testing.T, root string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "tangram")
	cmd := exec.Command("git", "ls-files", "-co", "--exclude-standard", "-z")
	cmd.Dir = root
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v (the tour copies the repository)", err)
	}
	for _, f := range strings.Split(string(b), "\x00") {
		if f == "" {
			continue
		}
		src := filepath.Join(root, f)
		st, err := os.Lstat(src)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dst, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}
