package store

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// ackMarker is the path the strace child stats after each acknowledged
// append, so the acknowledgement shows in the system-call trace.
const ackMarker = "/nonexistent-tangram-ack/"

// TestNewFilesAreDurableBeforeAcks checks, in the system calls themselves
// (strace), what kill -9 cannot show: every file the store creates has
// its directory fsynced after it is created — a commitlog segment before
// the first record acknowledged in it, and the segment itself synced (its
// size is metadata that msync does not carry) — and every file renamed
// into place (the checkpoint) has its directory fsynced after the rename.
// Without that, a power cut could take a new segment, and the
// acknowledged records in it, with its directory entry.
func TestNewFilesAreDurableBeforeAcks(t *testing.T) {
	if dir := os.Getenv("MQSTORE_STRACE_CHILD"); dir != "" {
		straceChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("runs a child under strace")
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Fatal("strace is needed (scripts/services.sh installs it): ", err)
	}
	dir := filepath.Join(t.TempDir(), "store") // created by the child
	trace := filepath.Join(t.TempDir(), "trace")
	cmd := exec.Command(strace, "-f", "-y", "-qq", "-o", trace,
		"-e", "trace=openat,mkdirat,fsync,fdatasync,rename,renameat,renameat2,newfstatat",
		os.Args[0], "-test.run", "^TestNewFilesAreDurableBeforeAcks$")
	cmd.Env = append(os.Environ(), "MQSTORE_STRACE_CHILD="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	f, err := os.Open(trace)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		created = map[string]int{} // path → line of its creation (or rename into place)
		order   []string
		syncs   = map[string][]int{} // path → lines where an fsync of it ended
		markers []struct {
			line int
			off  int64
		}
		pending = map[string]string{} // pid → path of an unfinished fsync
		pathArg = regexp.MustCompile(`"([^"]*)"`)
		fdPath  = regexp.MustCompile(`^f(?:data)?sync\(\d+<([^>]*)>`)
		resumed = regexp.MustCompile(`^<\.\.\. f(?:data)?sync resumed>.*= 0`)
		lineNo  = 0
	)
	create := func(p string) {
		if _, ok := created[p]; !ok && strings.HasPrefix(p, dir) {
			created[p] = lineNo
			order = append(order, p)
		}
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lineNo++
		pid, call, _ := strings.Cut(sc.Text(), " ")
		call = strings.TrimSpace(call)
		args := pathArg.FindAllStringSubmatch(call, -1)
		switch {
		case strings.HasPrefix(call, "openat(") && strings.Contains(call, "O_CREAT") && len(args) > 0:
			if !strings.Contains(call, "= -1") {
				create(args[0][1])
			}
		case (strings.HasPrefix(call, "mkdirat(") || strings.HasPrefix(call, "mkdir(")) && len(args) > 0:
			if !strings.Contains(call, "= -1") {
				create(args[0][1])
			}
		case strings.HasPrefix(call, "rename") && len(args) >= 2:
			if !strings.Contains(call, "= -1") {
				p := args[1][1]
				if strings.HasPrefix(p, dir) {
					created[p] = lineNo // each replacement needs its own sync
					order = append(order, p)
				}
			}
		case fdPath.MatchString(call):
			p := fdPath.FindStringSubmatch(call)[1]
			if strings.Contains(call, "<unfinished ...>") {
				pending[pid] = p
			} else if strings.HasSuffix(call, "= 0") {
				syncs[p] = append(syncs[p], lineNo)
			}
		case resumed.MatchString(call):
			if p, ok := pending[pid]; ok {
				syncs[p] = append(syncs[p], lineNo)
				delete(pending, pid)
			}
		case strings.Contains(call, ackMarker) && len(args) > 0:
			off, _ := strconv.ParseInt(strings.TrimPrefix(args[0][1], ackMarker), 10, 64)
			markers = append(markers, struct {
				line int
				off  int64
			}{lineNo, off})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	syncedBetween := func(p string, from, to int) bool {
		for _, l := range syncs[p] {
			if l > from && l < to {
				return true
			}
		}
		return false
	}
	segs := 0
	for _, p := range order {
		at := created[p]
		parent := filepath.Dir(p)
		deadline := lineNo + 1 // by the end of the run
		if filepath.Base(parent) == "commitlog" {
			// A segment: before the first ack of a record at or past its start.
			start, ok := parseSegmentName(filepath.Base(p))
			if !ok {
				continue
			}
			segs++
			for _, m := range markers {
				if m.line > at && m.off >= start {
					deadline = m.line
					break
				}
			}
			if !syncedBetween(p, at, deadline) {
				t.Errorf("segment %s (created at trace line %d) was not fsynced before line %d", p, at, deadline)
			}
		}
		if !syncedBetween(parent, at, deadline) {
			t.Errorf("%s created or renamed at trace line %d: its directory was not fsynced before line %d", p, at, deadline)
		}
	}
	if segs < 4 || len(markers) == 0 {
		t.Fatalf("the child made %d segments and %d acks: the check saw too little (is strace tracing the child?)", segs, len(markers))
	}
	t.Logf("%d files and directories created or renamed, %d segments, %d acks: each directory synced in time", len(order), segs, len(markers))
}

// straceChild appends with sync flush across several segments, marking
// each acknowledged append.
func straceChild(dir string) {
	s, err := Open(Config{Dir: dir, SegmentSize: 64 << 10, QueueFileEntries: 100, Flush: FlushSync, Logger: quiet()})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	for i := range 1200 {
		q := i % 2
		m := &Message{Topic: "dur", QueueID: uint32(q), Properties: map[string]string{"i": strconv.Itoa(i)}, Body: body("dur", q, i)}
		if err := s.Put(m); err != nil {
			fmt.Println("put:", err)
			os.Exit(1)
		}
		_, _ = os.Stat(ackMarker + strconv.FormatInt(m.Offset, 10))
	}
	s.WaitIndexed()
	if err := s.Close(); err != nil {
		fmt.Println("close:", err)
		os.Exit(1)
	}
}
