package server

import "sync/atomic"

// cmdSpec describes a command: its arity in Redis's convention (positive:
// exactly, negative: at least, the name included), its flags, where its
// keys are (first, last, step; last -1 means to the end, -2 all but the
// last argument) and what runs it.
type cmdSpec struct {
	name              string
	arity             int
	flags             cmdFlag
	first, last, step int
	keys              func(args [][]byte) [][]byte // for commands whose keys are not a range
	fn                func(x *ctx, args [][]byte)
	group             string
	summary           string

	// INFO commandstats, counted without a shared lock.
	calls, usec, failed atomic.Int64
}

type cmdFlag uint32

const (
	flagWrite      cmdFlag = 1 << iota // changes data: logged, refused at maxmemory when also flagDenyOOM
	flagReadOnly                       // reads data
	flagNoLock                         // takes its own locks (or none)
	flagNoAuth                         // allowed before AUTH
	flagMultiCtl                       // MULTI, EXEC, DISCARD, WATCH…: run even inside MULTI
	flagNoMulti                        // refused inside MULTI (blocking, subscribe)
	flagPubSubOK                       // allowed while subscribed (RESP2)
	flagCustomProp                     // logs its own records (x.prop) instead of itself
	flagDenyOOM                        // may grow memory: refused at maxmemory under noeviction
	flagSetLast                        // recorded as the client's last command
	flagAdmin                          // administrative
	flagLoading                        // may run while loading
	flagMayWait                        // may wait (a blocking pop, AUTH through a hook): an event loop runs it on a goroutine
)

func (s *cmdSpec) arityOK(n int) bool {
	if s.arity >= 0 {
		return n == s.arity
	}
	return n >= -s.arity
}

// keyArgs returns the command's keys.
func (s *cmdSpec) keyArgs(args [][]byte) [][]byte {
	if s.keys != nil {
		return s.keys(args)
	}
	if s.first == 0 {
		return nil
	}
	last := s.last
	switch {
	case last == -1:
		last = len(args) - 1
	case last == -2:
		last = len(args) - 2
	}
	var out [][]byte
	for i := s.first; i <= last && i < len(args); i += max(s.step, 1) {
		out = append(out, args[i])
	}
	return out
}

// shardMask is the set of shards the command's keys live in.
func (s *cmdSpec) shardMask(args [][]byte) uint64 {
	if s.keys == nil && s.first > 0 && s.last == s.first {
		if s.first < len(args) {
			return 1 << shardOf(args[s.first])
		}
		return 0
	}
	var m uint64
	for _, k := range s.keyArgs(args) {
		m |= 1 << shardOf(k)
	}
	return m
}

// commands is the command table, by lower-case name.
var commands map[string]*cmdSpec

// The table refers to COMMAND, which reads the table: it is filled here
// (a map of a few hundred entries, microseconds).
func init() { commands = buildCommands() }

func buildCommands() map[string]*cmdSpec {
	m := map[string]*cmdSpec{}
	for _, group := range [][]*cmdSpec{stringCommands(), keyCommands(), hashCommands(), listCommands(), setCommands(), zsetCommands(), serverCommands(), multiCommands(), pubsubCommands(), scriptCommands()} {
		for _, c := range group {
			if c.step == 0 {
				c.step = 1
			}
			m[c.name] = c
		}
	}
	return m
}

// Shorthands for the tables.
const (
	w   = flagWrite | flagDenyOOM | flagSetLast
	wd  = flagWrite | flagSetLast // writes that free memory (DEL, …)
	ro  = flagReadOnly | flagSetLast
	adm = flagAdmin | flagSetLast
)

func key1(name string, arity int, flags cmdFlag, fn func(*ctx, [][]byte)) *cmdSpec {
	return &cmdSpec{name: name, arity: arity, flags: flags, first: 1, last: 1, step: 1, fn: fn}
}

func keysAll(name string, arity int, flags cmdFlag, fn func(*ctx, [][]byte)) *cmdSpec {
	return &cmdSpec{name: name, arity: arity, flags: flags, first: 1, last: -1, step: 1, fn: fn}
}

func noKey(name string, arity int, flags cmdFlag, fn func(*ctx, [][]byte)) *cmdSpec {
	return &cmdSpec{name: name, arity: arity, flags: flags | flagNoLock, fn: fn}
}
