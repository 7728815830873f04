package server

import (
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"sync"
)

// scripts is the SCRIPT LOAD cache. kv runs no Lua interpreter: EVAL and
// EVALSHA run a script only when kv has a native implementation of it
// (natives, by the SHA1 of its text); any other gets an error naming its
// SHA1, so that a library's unsupported script fails loudly, never
// silently.
type scripts struct {
	mu     sync.Mutex
	bodies map[string]string
}

func (s *scripts) init() { s.bodies = map[string]string{} }

func sha1hex(body []byte) string {
	h := sha1.Sum(body)
	return hex.EncodeToString(h[:])
}

// natives maps a script's SHA1 to its implementation.
var natives = map[string]func(x *ctx, keys, args [][]byte){}

func scriptCommands() []*cmdSpec {
	return []*cmdSpec{
		{name: "eval", arity: -3, flags: w | flagCustomProp, keys: evalKeys, fn: func(x *ctx, a [][]byte) { evalCmd(x, a, sha1hex(a[1])) }},
		{name: "evalsha", arity: -3, flags: w | flagCustomProp, keys: evalKeys, fn: func(x *ctx, a [][]byte) { evalCmd(x, a, strings.ToLower(string(a[1]))) }},
		noKey("script", -2, 0, cmdScript),
	}
}

func evalKeys(a [][]byte) [][]byte {
	n, ok := parseInt(a[2])
	if !ok || n < 0 || int(n) > len(a)-3 {
		return nil
	}
	return a[3 : 3+n]
}

func evalCmd(x *ctx, a [][]byte, sha string) {
	n, ok := parseInt(a[2])
	if !ok {
		x.err(errNotInt)
		return
	}
	if n < 0 {
		x.err("ERR Number of keys can't be negative")
		return
	}
	if int(n) > len(a)-3 {
		x.err("ERR Number of keys can't be greater than number of args")
		return
	}
	fn := natives[sha]
	if fn == nil {
		if strings.EqualFold(string(a[0]), "evalsha") {
			x.s.scripts.mu.Lock()
			_, known := x.s.scripts.bodies[sha]
			x.s.scripts.mu.Unlock()
			if !known {
				x.err("NOSCRIPT No matching script. Please use EVAL.")
				return
			}
		}
		x.err("ERR tangram kv runs no Lua interpreter and has no native version of script " + sha + " (docs/kv.md lists the scripts it runs)")
		return
	}
	x.script = sha
	fn(x, a[3:3+n], a[3+n:])
}

func cmdScript(x *ctx, a [][]byte) {
	sc := &x.s.scripts
	switch lowerName(a[1]) {
	case "load":
		if len(a) != 3 {
			x.err("ERR wrong number of arguments for 'script|load' command")
			return
		}
		sha := sha1hex(a[2])
		sc.mu.Lock()
		sc.bodies[sha] = string(a[2])
		sc.mu.Unlock()
		x.bulkStr(sha)
	case "exists":
		x.array(len(a) - 2)
		sc.mu.Lock()
		for _, s := range a[2:] {
			_, ok := sc.bodies[strings.ToLower(string(s))]
			x.boolInt(ok)
		}
		sc.mu.Unlock()
	case "flush":
		sc.mu.Lock()
		sc.bodies = map[string]string{}
		sc.mu.Unlock()
		x.ok()
	default:
		x.err("ERR unknown subcommand '" + clip(string(a[1]), 64) + "'. Try SCRIPT HELP.")
	}
}
