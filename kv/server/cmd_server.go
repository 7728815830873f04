package server

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func serverCommands() []*cmdSpec {
	return []*cmdSpec{
		noKey("ping", -1, flagNoAuth|flagPubSubOK, cmdPing),
		noKey("echo", 2, 0, func(x *ctx, a [][]byte) { x.bulk(a[1]) }),
		noKey("quit", -1, flagNoAuth|flagPubSubOK|flagMultiCtl, nil),
		noKey("auth", -2, flagNoAuth|flagMultiCtl|flagMayWait, cmdAuth),
		noKey("hello", -1, flagNoAuth|flagMultiCtl|flagMayWait, cmdHello),
		noKey("select", 2, flagLoading, cmdSelect),
		noKey("dbsize", 1, ro, func(x *ctx, _ [][]byte) { x.int(x.s.dbsize(x.db)) }),
		noKey("flushdb", -1, wd, func(x *ctx, _ [][]byte) { x.s.flush(x, x.db); x.ok() }),
		noKey("flushall", -1, wd, func(x *ctx, _ [][]byte) { x.s.flush(x, -1); x.ok() }),
		noKey("time", 1, 0, cmdTime),
		noKey("info", -1, 0, cmdInfo),
		noKey("config", -2, adm, cmdConfig),
		noKey("client", -2, flagPubSubOK, cmdClient),
		noKey("command", -1, 0, cmdCommand),
		noKey("slowlog", -2, adm, cmdSlowLog),
		noKey("reset", 1, flagNoAuth|flagPubSubOK|flagMultiCtl, cmdReset),
		noKey("bgrewriteaof", 1, adm, cmdBGRewriteAOF),
		noKey("lastsave", 1, 0, func(x *ctx, _ [][]byte) { x.int(x.s.startAt.Unix()) }),
	}
}

func cmdPing(x *ctx, a [][]byte) {
	if len(a) > 2 {
		x.err("ERR wrong number of arguments for 'ping' command")
		return
	}
	if !x.c.v3 && x.c.async.Load() && x.c.isSubscriber() {
		x.array(2)
		x.bulkStr("pong")
		if len(a) == 2 {
			x.bulk(a[1])
		} else {
			x.bulkStr("")
		}
		return
	}
	if len(a) == 2 {
		x.bulk(a[1])
		return
	}
	x.simple("PONG")
}

func cmdAuth(x *ctx, a [][]byte) {
	if len(a) > 3 {
		x.err(errSyntax)
		return
	}
	user, pass := "default", string(a[1])
	if len(a) == 3 {
		user, pass = string(a[1]), string(a[2])
	}
	if !x.s.needAuth() {
		x.err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
		return
	}
	if !x.s.checkAuth(user, pass) {
		x.err("WRONGPASS invalid username-password pair or user is disabled.")
		return
	}
	x.c.setAuthed(user)
	x.ok()
}

func cmdHello(x *ctx, a [][]byte) {
	proto := 0
	if len(a) > 1 {
		v, ok := parseInt(a[1])
		if !ok {
			x.err("ERR Protocol version is not an integer or out of range")
			return
		}
		if v < 2 || v > 3 {
			x.err("NOPROTO unsupported protocol version")
			return
		}
		proto = int(v)
	}
	for i := 2; i < len(a); i++ {
		switch {
		case eqFold(a[i], "auth") && i+2 < len(a):
			if !x.s.checkAuth(string(a[i+1]), string(a[i+2])) {
				x.err("WRONGPASS invalid username-password pair or user is disabled.")
				return
			}
			x.c.setAuthed(string(a[i+1]))
			i += 2
		case eqFold(a[i], "setname") && i+1 < len(a):
			x.c.mu.Lock()
			x.c.name = string(a[i+1])
			x.c.mu.Unlock()
			i++
		default:
			x.err(errSyntax)
			return
		}
	}
	if !x.c.authed {
		x.err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
		return
	}
	if proto != 0 {
		x.c.mu.Lock()
		x.c.v3 = proto == 3
		x.c.mu.Unlock()
	}
	p := int64(2)
	if x.c.v3 {
		p = 3
	}
	x.mapHdr(7)
	x.bulkStr("server")
	x.bulkStr("redis")
	x.bulkStr("version")
	x.bulkStr(redisVersion)
	x.bulkStr("proto")
	x.int(p)
	x.bulkStr("id")
	x.int(x.c.id)
	x.bulkStr("mode")
	x.bulkStr("standalone")
	x.bulkStr("role")
	x.bulkStr("master")
	x.bulkStr("modules")
	x.array(0)
}

// redisVersion is the Redis version whose behaviour kv follows (clients
// switch features on it).
const redisVersion = "7.0.15"

func cmdSelect(x *ctx, a [][]byte) {
	n, ok := parseInt(a[1])
	if !ok {
		x.err(errNotInt)
		return
	}
	if n < 0 || n >= int64(x.s.cfg.Databases) {
		x.err("ERR DB index is out of range")
		return
	}
	x.c.mu.Lock()
	x.c.db = int(n)
	x.c.mu.Unlock()
	x.db = int(n)
	if x.s.aof != nil && !x.loading {
		// The log names the database of each record itself.
	}
	x.ok()
}

// flush empties db (every database when db < 0), shard by shard.
func (s *Server) flush(x *ctx, db int) {
	s.lockMask(^uint64(0))
	for i := range s.shards {
		sh := &s.shards[i]
		for d := range sh.dbs {
			if db >= 0 && d != db {
				continue
			}
			if t := sh.dbs[d]; t != nil {
				sh.keys.Add(-int64(t.len()))
			}
			sh.dbs[d], sh.vol[d] = nil, nil
		}
		for k, ws := range sh.watched {
			if db < 0 || k.db == db {
				for _, c := range ws {
					c.watchDirty.Store(true)
				}
			}
		}
		if db < 0 {
			sh.mem.Store(0)
		} else {
			var m int64
			for _, t := range sh.dbs {
				if t != nil {
					t.each(func(k string, e *entry) bool { m += e.size(k); return true })
				}
			}
			sh.mem.Store(m)
		}
	}
	if s.aof != nil && !x.loading {
		if db < 0 {
			s.aof.append(0, -1, [][]byte{[]byte("FLUSHALL")})
		} else {
			s.aof.append(db, -1, [][]byte{[]byte("FLUSHDB")})
		}
	}
	if s.trackers.active.Load() > 0 {
		x.trackingFlush()
	}
	s.unlockMask(^uint64(0))
}

func cmdTime(x *ctx, _ [][]byte) {
	now := time.Now()
	x.array(2)
	x.bulkStr(strconv.FormatInt(now.Unix(), 10))
	x.bulkStr(strconv.FormatInt(int64(now.Nanosecond()/1000), 10))
}

func cmdInfo(x *ctx, a [][]byte) {
	want := map[string]bool{}
	for _, s := range a[1:] {
		want[strings.ToLower(string(s))] = true
	}
	all := len(want) == 0 || want["all"] || want["everything"] || want["default"]
	x.verbatim(x.s.info(all, want))
}

func (s *Server) info(all bool, want map[string]bool) string {
	var b strings.Builder
	sec := func(name string) bool {
		if !all && !want[name] {
			return false
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString("# " + strings.ToUpper(name[:1]) + name[1:] + "\r\n")
		return true
	}
	kv := func(k string, v any) { fmt.Fprintf(&b, "%s:%v\r\n", k, v) }
	up := time.Since(s.startAt)
	if sec("server") {
		kv("redis_version", redisVersion)
		kv("tangram_version", s.cfg.Version)
		kv("redis_mode", "standalone")
		kv("os", runtime.GOOS+" "+runtime.GOARCH)
		kv("arch_bits", 64)
		kv("multiplexing_api", "goroutines")
		kv("process_id", os.Getpid())
		kv("tcp_port", portOf(s.Addr()))
		kv("uptime_in_seconds", int64(up.Seconds()))
		kv("uptime_in_days", int64(up.Hours()/24))
		kv("executable", "tangram")
	}
	if sec("clients") {
		s.mu.Lock()
		n := len(s.clients)
		blocked := 0
		for _, c := range s.clients {
			if c.blocked.Load() {
				blocked++
			}
		}
		s.mu.Unlock()
		kv("connected_clients", n)
		kv("blocked_clients", blocked)
		kv("maxclients", s.cfg.MaxClients)
	}
	if sec("memory") {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		used := s.usedMemory()
		kv("used_memory", used)
		kv("used_memory_human", human(used))
		kv("used_memory_heap", ms.HeapAlloc)
		kv("used_memory_rss", rss())
		kv("used_memory_rss_human", human(rss()))
		kv("maxmemory", s.maxMem.Load())
		kv("maxmemory_human", human(s.maxMem.Load()))
		kv("maxmemory_policy", s.policy.Load())
		kv("mem_allocator", "go")
		if used > 0 {
			kv("mem_fragmentation_ratio", fmt.Sprintf("%.2f", float64(rss())/float64(used)))
		}
	}
	if sec("persistence") {
		kv("loading", 0)
		kv("aof_enabled", b2i(s.aof != nil))
		if s.aof != nil {
			st := s.aof.status()
			kv("aof_rewrite_in_progress", b2i(st.rewriting))
			kv("aof_rewrites", st.rewrites)
			kv("aof_last_bgrewrite_status", st.lastRewrite)
			kv("aof_current_size", st.size)
			kv("aof_base_size", st.baseSize)
			kv("aof_fsync", s.aof.policy)
			kv("aof_last_write_status", st.lastWrite)
		}
		kv("aof_load_time_ms", s.loadTime.Milliseconds())
	}
	if sec("stats") {
		kv("total_connections_received", s.stats.connections.Load())
		var total int64
		for _, c := range commands {
			total += c.calls.Load()
		}
		kv("total_commands_processed", total)
		kv("rejected_connections", s.stats.rejected.Load())
		kv("expired_keys", s.stats.expired.Load())
		kv("evicted_keys", s.stats.evicted.Load())
		var hits, misses int64
		for i := range s.shards {
			sh := &s.shards[i]
			sh.mu.Lock()
			hits, misses = hits+sh.hits, misses+sh.misses
			sh.mu.Unlock()
		}
		kv("keyspace_hits", hits)
		kv("keyspace_misses", misses)
		kv("pubsub_channels", s.pubsub.count())
	}
	if sec("replication") {
		kv("role", "master")
		kv("connected_slaves", 0)
	}
	if sec("cpu") {
		u, sy := cpuTimes()
		kv("used_cpu_sys", fmt.Sprintf("%.6f", sy))
		kv("used_cpu_user", fmt.Sprintf("%.6f", u))
	}
	if want["commandstats"] || want["everything"] {
		sec("commandstats")
		for _, cs := range s.stats.commandStats() {
			fmt.Fprintf(&b, "cmdstat_%s:calls=%d,usec=%d,usec_per_call=%.2f,rejected_calls=0,failed_calls=%d\r\n", cs.name, cs.calls, cs.usec, float64(cs.usec)/float64(max(cs.calls, 1)), cs.failed)
		}
	}
	if sec("keyspace") {
		for db := 0; db < s.cfg.Databases; db++ {
			n, exp := s.dbCounts(db)
			if n > 0 {
				fmt.Fprintf(&b, "db%d:keys=%d,expires=%d,avg_ttl=0\r\n", db, n, exp)
			}
		}
	}
	return b.String()
}

func (s *Server) dbCounts(db int) (keys, expires int) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		if t := sh.dbs[db]; t != nil {
			keys += t.len()
		}
		if t := sh.vol[db]; t != nil {
			expires += t.len()
		}
		sh.mu.Unlock()
	}
	return
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func portOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return addr[i+1:]
	}
	return addr
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.2fK", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

// rss is the process's resident set in bytes (Linux), 0 elsewhere.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	p, _ := strconv.ParseInt(f[1], 10, 64)
	return p * int64(os.Getpagesize())
}

func cpuTimes() (user, sys float64) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+2:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0, 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	sy, _ := strconv.ParseFloat(f[12], 64)
	return u / 100, sy / 100
}

func cmdConfig(x *ctx, a [][]byte) {
	sub := strings.ToLower(string(a[1]))
	switch sub {
	case "get":
		if len(a) < 3 {
			x.err("ERR wrong number of arguments for 'config|get' command")
			return
		}
		vals := x.s.configValues()
		var out [][2]string
		names := make([]string, 0, len(vals))
		for k := range vals {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, p := range a[2:] {
			for _, k := range names {
				if globMatch([]byte(strings.ToLower(string(p))), []byte(k), true) {
					out = append(out, [2]string{k, vals[k]})
				}
			}
		}
		x.mapHdr(len(out))
		for _, kv := range out {
			x.bulkStr(kv[0])
			x.bulkStr(kv[1])
		}
	case "set":
		if len(a) < 4 || len(a)%2 != 0 {
			x.err("ERR wrong number of arguments for 'config|set' command")
			return
		}
		for i := 2; i < len(a); i += 2 {
			if msg := x.s.configSet(strings.ToLower(string(a[i])), string(a[i+1])); msg != "" {
				x.err(msg)
				return
			}
		}
		x.ok()
	case "resetstat":
		x.s.stats.reset()
		x.ok()
	case "rewrite":
		x.err("ERR tangram kv is configured by flags; CONFIG REWRITE has no file to write")
	default:
		x.err("ERR unknown subcommand '" + clip(string(a[1]), 64) + "'. Try CONFIG HELP.")
	}
}

func (s *Server) configValues() map[string]string {
	app := "no"
	fsync := s.cfg.Fsync
	if s.aof != nil {
		app = "yes"
	}
	return map[string]string{
		"maxmemory":                   strconv.FormatInt(s.maxMem.Load(), 10),
		"maxmemory-policy":            s.policy.Load().(string),
		"appendonly":                  app,
		"appendfsync":                 fsync,
		"save":                        "",
		"databases":                   strconv.Itoa(s.cfg.Databases),
		"maxclients":                  strconv.Itoa(s.cfg.MaxClients),
		"timeout":                     strconv.Itoa(int(s.cfg.IdleTimeout.Seconds())),
		"tcp-keepalive":               strconv.Itoa(int(s.cfg.KeepAlive.Seconds())),
		"port":                        portOf(s.Addr()),
		"bind":                        "",
		"dir":                         s.cfg.Dir,
		"slowlog-log-slower-than":     strconv.FormatInt(s.cfg.SlowLogThreshold.Microseconds(), 10),
		"slowlog-max-len":             strconv.Itoa(s.cfg.SlowLogLen),
		"proto-max-bulk-len":          strconv.Itoa(64 << 20),
		"auto-aof-rewrite-percentage": strconv.Itoa(s.cfg.RewritePercent),
		"auto-aof-rewrite-min-size":   strconv.FormatInt(s.cfg.RewriteMinSize, 10),
		"cluster-enabled":             "no",
		"notify-keyspace-events":      "",
	}
}

func (s *Server) configSet(k, v string) string {
	switch k {
	case "maxmemory":
		n, err := parseMem(v)
		if err != nil {
			return "ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value"
		}
		s.maxMem.Store(n)
	case "maxmemory-policy":
		if !validPolicy(v) {
			return "ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - argument(s) must be one of the following: " + strings.Join(policies, ", ")
		}
		s.policy.Store(v)
	default:
		return "ERR Unknown option or number of arguments for CONFIG SET - '" + clip(k, 64) + "'"
	}
	return ""
}

func parseMem(v string) (int64, error) {
	v = strings.ToLower(strings.TrimSpace(v))
	mul := int64(1)
	for _, u := range []struct {
		s string
		m int64
	}{{"gb", 1 << 30}, {"mb", 1 << 20}, {"kb", 1 << 10}, {"g", 1e9}, {"m", 1e6}, {"k", 1e3}, {"b", 1}} {
		if strings.HasSuffix(v, u.s) {
			v, mul = strings.TrimSuffix(v, u.s), u.m
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("kv: memory value %q", v)
	}
	return n * mul, nil
}

func cmdClient(x *ctx, a [][]byte) {
	sub := strings.ToLower(string(a[1]))
	switch sub {
	case "setname":
		if len(a) != 3 {
			x.err("ERR wrong number of arguments for 'client|setname' command")
			return
		}
		if strings.ContainsAny(string(a[2]), " \n\r") {
			x.err("ERR Client names cannot contain spaces, newlines or special characters.")
			return
		}
		x.c.mu.Lock()
		x.c.name = string(a[2])
		x.c.mu.Unlock()
		x.ok()
	case "getname":
		x.c.mu.Lock()
		n := x.c.name
		x.c.mu.Unlock()
		if n == "" {
			x.null()
		} else {
			x.bulkStr(n)
		}
	case "id":
		x.int(x.c.id)
	case "info":
		x.verbatim(x.s.clientLine(x.c))
	case "list":
		x.s.mu.Lock()
		cs := make([]*client, 0, len(x.s.clients))
		for _, c := range x.s.clients {
			cs = append(cs, c)
		}
		x.s.mu.Unlock()
		sort.Slice(cs, func(i, j int) bool { return cs[i].id < cs[j].id })
		var b strings.Builder
		for _, c := range cs {
			b.WriteString(x.s.clientLine(c))
		}
		x.verbatim(b.String())
	case "kill":
		n := x.s.killClients(x, a[2:])
		if n < 0 {
			return
		}
		if len(a) == 3 {
			if n == 0 {
				x.err("ERR No such client")
				return
			}
			x.ok()
			return
		}
		x.int(int64(n))
	case "tracking":
		cmdClientTracking(x, a)
	case "caching":
		cmdClientCaching(x, a)
	case "trackinginfo":
		cmdClientTrackingInfo(x)
	case "getredir":
		cmdClientGetRedir(x)
	case "setinfo", "no-evict", "no-touch", "reply":
		x.ok()
	default:
		x.err("ERR unknown subcommand '" + clip(string(a[1]), 64) + "'. Try CLIENT HELP.")
	}
}

func (s *Server) clientLine(c *client) string {
	c.mu.Lock()
	name, user, db, v3 := c.name, c.user, c.db, c.v3
	c.mu.Unlock()
	last := ""
	if sp := c.lastCmd.Load(); sp != nil {
		last = sp.name
	}
	if user == "" {
		user = "default"
	}
	if last == "" {
		last = "NULL"
	}
	now := time.Now()
	return fmt.Sprintf("id=%d addr=%s laddr=%s fd=0 name=%s age=%d idle=%d flags=N db=%d sub=0 psub=0 multi=-1 qbuf=0 obl=0 oll=0 omem=0 events=r cmd=%s user=%s resp=%d\n",
		c.id, c.raddr, c.laddr, name, int(now.Sub(c.created).Seconds()),
		(msAt(now)-c.lastAt.Load())/1000, db, last, user, 2+b2i(v3))
}

// killClients handles CLIENT KILL addr and CLIENT KILL ID/ADDR/USER/SKIPME
// filters; it returns -1 after replying with an error.
func (s *Server) killClients(x *ctx, a [][]byte) int {
	var id int64 = -1
	addr, user := "", ""
	skipMe := true
	if len(a) == 1 {
		addr = string(a[0])
	} else {
		if len(a)%2 != 0 {
			x.err(errSyntax)
			return -1
		}
		for i := 0; i < len(a); i += 2 {
			v := string(a[i+1])
			switch strings.ToLower(string(a[i])) {
			case "id":
				n, ok := parseInt(a[i+1])
				if !ok {
					x.err("ERR client-id should be greater than 0")
					return -1
				}
				id = n
			case "addr":
				addr = v
			case "user":
				user = v
			case "skipme":
				skipMe = strings.EqualFold(v, "yes")
			default:
				x.err(errSyntax)
				return -1
			}
		}
	}
	s.mu.Lock()
	var victims []*client
	for _, c := range s.clients {
		if (id >= 0 && c.id != id) || (addr != "" && c.raddr != addr) {
			continue
		}
		if user != "" {
			c.mu.Lock()
			u := c.user
			c.mu.Unlock()
			if u != user {
				continue
			}
		}
		if c == x.c && (skipMe && len(a) != 1) {
			continue
		}
		victims = append(victims, c)
	}
	s.mu.Unlock()
	for _, c := range victims {
		if c == x.c {
			c.dead.Store(true) // closes after this reply
			continue
		}
		c.kill()
	}
	return len(victims)
}

func cmdCommand(x *ctx, a [][]byte) {
	sub := ""
	if len(a) > 1 {
		sub = strings.ToLower(string(a[1]))
	}
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	switch sub {
	case "count":
		x.int(int64(len(commands)))
	case "docs":
		want := names
		if len(a) > 2 {
			want = nil
			for _, n := range a[2:] {
				if commands[strings.ToLower(string(n))] != nil {
					want = append(want, strings.ToLower(string(n)))
				}
			}
		}
		x.mapHdr(len(want))
		for _, n := range want {
			c := commands[n]
			x.bulkStr(n)
			x.mapHdr(3)
			x.bulkStr("summary")
			x.bulkStr(c.summaryText())
			x.bulkStr("since")
			x.bulkStr("1.0.0")
			x.bulkStr("group")
			x.bulkStr(c.groupName())
		}
	case "", "info":
		want := names
		if sub == "info" && len(a) > 2 {
			want = nil
			for _, n := range a[2:] {
				want = append(want, strings.ToLower(string(n)))
			}
		}
		x.array(len(want))
		for _, n := range want {
			c := commands[n]
			if c == nil {
				x.nullArray()
				continue
			}
			x.array(6)
			x.bulkStr(n)
			x.int(int64(c.arity))
			fl := c.flagNames()
			x.setHdr(len(fl))
			for _, f := range fl {
				x.simple(f)
			}
			x.int(int64(c.first))
			x.int(int64(c.last))
			x.int(int64(c.step))
		}
	default:
		x.err("ERR unknown subcommand '" + clip(string(a[1]), 64) + "'. Try COMMAND HELP.")
	}
}

func (c *cmdSpec) flagNames() []string {
	var out []string
	if c.flags&flagWrite != 0 {
		out = append(out, "write")
	}
	if c.flags&flagReadOnly != 0 {
		out = append(out, "readonly")
	}
	if c.flags&flagDenyOOM != 0 {
		out = append(out, "denyoom")
	}
	if c.flags&flagAdmin != 0 {
		out = append(out, "admin")
	}
	if c.flags&flagPubSubOK != 0 {
		out = append(out, "pubsub")
	}
	if c.flags&flagNoMulti != 0 {
		out = append(out, "noscript")
	}
	return out
}

func (c *cmdSpec) summaryText() string {
	if c.summary != "" {
		return c.summary
	}
	return "See the Redis documentation of " + strings.ToUpper(c.name) + "."
}

func (c *cmdSpec) groupName() string {
	if c.group != "" {
		return c.group
	}
	return "generic"
}

func cmdReset(x *ctx, _ [][]byte) {
	c := x.c
	c.multi, c.inMulti, c.multiErr = nil, false, false
	x.s.unwatchAll(c)
	x.s.pubsub.unsubscribeAll(c)
	c.mu.Lock()
	c.db, c.v3 = 0, false
	c.name = ""
	c.mu.Unlock()
	if x.s.needAuth() {
		c.authed = false
		c.restrict()
	}
	x.simple("RESET")
}

func cmdBGRewriteAOF(x *ctx, _ [][]byte) {
	if x.s.aof == nil {
		x.err("ERR tangram kv runs without an append-only file (no --kv-dir)")
		return
	}
	if !x.s.aof.startRewrite() {
		x.err("ERR Background append only file rewriting already in progress")
		return
	}
	x.simple("Background append only file rewriting started")
}

// stats are the server's counters (INFO stats, /metrics); per-command
// counts live in each command's spec.
type stats struct {
	connections, commands, rejected atomic.Int64
	expired, evicted                atomic.Int64
}

type cmdStat struct {
	name                string
	calls, usec, failed int64
}

func (st *stats) record(spec *cmdSpec, d time.Duration, failed bool) {
	spec.calls.Add(1)
	spec.usec.Add(d.Microseconds())
	if failed {
		spec.failed.Add(1)
	}
}

func (st *stats) commandStats() []cmdStat {
	var out []cmdStat
	for _, c := range commands {
		if n := c.calls.Load(); n > 0 {
			out = append(out, cmdStat{name: c.name, calls: n, usec: c.usec.Load(), failed: c.failed.Load()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func (st *stats) reset() {
	for _, c := range commands {
		c.calls.Store(0)
		c.usec.Store(0)
		c.failed.Store(0)
	}
	st.expired.Store(0)
	st.evicted.Store(0)
}

// slowLog keeps the slowest recent commands (SLOWLOG GET).
type slowLog struct {
	mu      sync.Mutex
	max     int
	nextID  int64
	entries []slowEntry
}

type slowEntry struct {
	id     int64
	at     time.Time
	dur    time.Duration
	args   []string
	client string
	name   string
}

func (l *slowLog) add(c *client, args [][]byte, at time.Time, d time.Duration) {
	e := slowEntry{at: at, dur: d, client: c.raddr}
	for i, a := range args {
		if i >= 32 {
			e.args = append(e.args, fmt.Sprintf("... (%d more arguments)", len(args)-i))
			break
		}
		s := string(a)
		if len(s) > 128 {
			s = s[:128] + fmt.Sprintf("... (%d more bytes)", len(a)-128)
		}
		e.args = append(e.args, s)
	}
	c.mu.Lock()
	e.name = c.name
	c.mu.Unlock()
	l.mu.Lock()
	e.id = l.nextID
	l.nextID++
	l.entries = append([]slowEntry{e}, l.entries...)
	if len(l.entries) > l.max {
		l.entries = l.entries[:l.max]
	}
	l.mu.Unlock()
}

func cmdSlowLog(x *ctx, a [][]byte) {
	l := &x.s.slow
	switch strings.ToLower(string(a[1])) {
	case "get":
		n := 10
		if len(a) > 2 {
			v, ok := parseInt(a[2])
			if !ok {
				x.err(errNotInt)
				return
			}
			n = int(v)
		}
		l.mu.Lock()
		es := l.entries
		if n >= 0 && n < len(es) {
			es = es[:n]
		}
		es = append([]slowEntry(nil), es...)
		l.mu.Unlock()
		x.array(len(es))
		for _, e := range es {
			x.array(6)
			x.int(e.id)
			x.int(e.at.Unix())
			x.int(e.dur.Microseconds())
			x.array(len(e.args))
			for _, s := range e.args {
				x.bulkStr(s)
			}
			x.bulkStr(e.client)
			x.bulkStr(e.name)
		}
	case "len":
		l.mu.Lock()
		n := len(l.entries)
		l.mu.Unlock()
		x.int(int64(n))
	case "reset":
		l.mu.Lock()
		l.entries = nil
		l.mu.Unlock()
		x.ok()
	default:
		x.err("ERR unknown subcommand '" + clip(string(a[1]), 64) + "'. Try SLOWLOG HELP.")
	}
}
