package server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"testing"

	"github.com/tangram-dev/tangram/kv/resp"
)

// compatScript is run against real Redis 7 and against kv; the replies
// must match byte for byte. (Replies whose order Redis leaves undefined —
// SMEMBERS of a hash-table set, KEYS — are not in it.)
var compatScript = [][]string{
	{"SET", "s", "hello"}, {"GET", "s"}, {"SET", "s", "x", "NX"}, {"SET", "s", "y", "XX", "GET"},
	{"SET", "s", "z", "EX", "0"}, {"SET", "s", "z", "EX", "-5"}, {"SET", "s", "z", "EX", "abc"}, {"SET", "s", "z", "NX", "XX"},
	{"SET", "s"}, {"GET"}, {"GETSET", "s", "w"}, {"GETDEL", "s"}, {"GETDEL", "s"},
	{"SET", "bin", "a\r\nb\x00c"}, {"GET", "bin"}, {"STRLEN", "bin"}, {"APPEND", "bin", "\x00"}, {"GETRANGE", "bin", "1", "-2"},
	{"GETRANGE", "bin", "-1", "-5"}, {"SETRANGE", "sr", "5", "ab"}, {"GET", "sr"}, {"SETRANGE", "sr", "-1", "x"},
	{"INCR", "n"}, {"INCRBY", "n", "10"}, {"DECRBY", "n", "3"}, {"DECR", "n"}, {"INCRBY", "n", "x"},
	{"SET", "big", "9223372036854775807"}, {"INCR", "big"}, {"SET", "neg", "-9223372036854775808"}, {"DECR", "neg"},
	{"INCRBYFLOAT", "f", "1.1"}, {"INCRBYFLOAT", "f", "2.2"}, {"INCRBYFLOAT", "f", "1e3"}, {"INCRBYFLOAT", "f", "abc"},
	{"SET", "sp", " 1"}, {"INCR", "sp"}, {"SET", "plus", "+1"}, {"INCR", "plus"},
	{"MSET", "a", "1", "b", "2"}, {"MGET", "a", "b", "nope"}, {"MSET", "a"}, {"MSETNX", "a", "1", "c", "3"}, {"MSETNX", "c", "3", "d", "4"},
	{"EXISTS", "a", "a", "nope"}, {"DEL", "a", "nope"}, {"TYPE", "b"}, {"TYPE", "nope"},
	{"EXPIRE", "b", "100"}, {"TTL", "b"}, {"PERSIST", "b"}, {"TTL", "b"}, {"TTL", "nope"}, {"EXPIRE", "b", "100", "XX"}, {"EXPIRE", "b", "100", "NX", "XX"},
	{"EXPIRE", "b", "abc"}, {"RENAME", "nope", "x"}, {"RENAME", "b", "b2"}, {"GET", "b2"}, {"RENAMENX", "b2", "c"},
	{"RPUSH", "l", "a", "b", "c", "d", "e"}, {"LRANGE", "l", "0", "-1"}, {"LRANGE", "l", "-100", "100"}, {"LRANGE", "l", "3", "1"},
	{"LPOP", "l"}, {"RPOP", "l", "2"}, {"LPOP", "l", "0"}, {"LPOP", "l", "-1"}, {"LLEN", "l"}, {"LINDEX", "l", "-1"}, {"LINDEX", "l", "9"},
	{"LSET", "l", "9", "x"}, {"LSET", "nolist", "0", "x"}, {"LINSERT", "l", "BEFORE", "c", "bb"}, {"LINSERT", "l", "AFTER", "zz", "x"},
	{"LRANGE", "l", "0", "-1"}, {"LREM", "l", "0", "bb"}, {"LTRIM", "l", "0", "0"}, {"LRANGE", "l", "0", "-1"}, {"LPOP", "nolist", "2"}, {"LPOP", "nolist"},
	{"GET", "l"}, {"LPUSH", "s2", "x"}, {"SET", "str", "v"}, {"LPUSH", "str", "x"},
	{"HSET", "h", "f1", "v1", "f2", "v2"}, {"HSET", "h", "f1"}, {"HGET", "h", "f1"}, {"HMGET", "h", "f1", "no", "f2"}, {"HGETALL", "h"},
	{"HKEYS", "h"}, {"HVALS", "h"}, {"HLEN", "h"}, {"HEXISTS", "h", "f2"}, {"HDEL", "h", "f1", "no"}, {"HINCRBY", "h", "c", "5"},
	{"HINCRBY", "h", "f2", "1"}, {"HINCRBYFLOAT", "h", "fl", "0.5"}, {"HSETNX", "h", "c", "9"}, {"HSTRLEN", "h", "f2"}, {"HGETALL", "h"},
	{"SADD", "set", "1", "2", "3"}, {"SADD", "set", "3"}, {"SCARD", "set"}, {"SISMEMBER", "set", "2"}, {"SMISMEMBER", "set", "1", "9"},
	{"SREM", "set", "1", "9"}, {"SCARD", "set"}, {"SMOVE", "set", "set2", "2"}, {"SCARD", "set2"},
	{"ZADD", "z", "1", "a", "2", "b", "3", "c"}, {"ZADD", "z", "1.5", "a"}, {"ZADD", "z", "NX", "XX", "1", "a"}, {"ZADD", "z", "nan", "a"},
	{"ZADD", "z", "INCR", "1", "a", "2", "b"}, {"ZADD", "z", "CH", "GT", "0", "c", "10", "b"}, {"ZSCORE", "z", "a"}, {"ZSCORE", "z", "nope"},
	{"ZRANGE", "z", "0", "-1", "WITHSCORES"}, {"ZRANGE", "z", "(1", "+inf", "BYSCORE", "LIMIT", "1", "1"}, {"ZRANGE", "z", "+inf", "-inf", "BYSCORE", "REV"},
	{"ZRANGEBYSCORE", "z", "-inf", "(3"}, {"ZREVRANGEBYSCORE", "z", "+inf", "-inf", "WITHSCORES"}, {"ZREVRANGE", "z", "0", "0"},
	{"ZRANK", "z", "b"}, {"ZREVRANK", "z", "b"}, {"ZCARD", "z"}, {"ZCOUNT", "z", "-inf", "+inf"}, {"ZCOUNT", "z", "x", "1"},
	{"ZINCRBY", "z", "2.5", "c"}, {"ZMSCORE", "z", "a", "zz"}, {"ZREM", "z", "a", "zz"}, {"ZPOPMIN", "z"}, {"ZPOPMAX", "z", "5"},
	{"ZADD", "lex", "0", "a", "0", "b", "0", "c", "0", "d"}, {"ZRANGEBYLEX", "lex", "[b", "(d"}, {"ZRANGEBYLEX", "lex", "-", "+", "LIMIT", "1", "2"},
	{"ZREVRANGEBYLEX", "lex", "+", "[b"}, {"ZRANGEBYLEX", "lex", "b", "d"}, {"ZRANGE", "lex", "[a", "[c", "BYLEX"},
	{"MULTI"}, {"SET", "t", "1"}, {"INCR", "t"}, {"LPUSH", "t", "x"}, {"GET", "t"}, {"EXEC"},
	{"MULTI"}, {"SET", "t"}, {"EXEC"}, {"EXEC"}, {"DISCARD"}, {"MULTI"}, {"MULTI"}, {"DISCARD"},
	{"NOSUCHCOMMAND", "a"}, {"PING"}, {"PING", "hi"}, {"ECHO", "x"}, {"DBSIZE"}, {"SELECT", "99"},
	{"SCRIPT", "LOAD", "return 1"}, {"EVALSHA", "0000000000000000000000000000000000000000", "0"},
	{"SCRIPT", "LOAD", redsyncRelease}, {"SET", "lock", "tok", "PX", "60000"},
	{"EVALSHA", "e950836ed1e694540c503ef9972b8de518044d3b", "1", "lock", "other"},
	{"EVALSHA", "d75bb8b5bd13532ddedd17762e772346e39b321e", "1", "lock", "tok", "90000"},
	{"EVALSHA", "b6b55c439e02c6f52ffb8be7ec8c0d0ac816ea79", "1", "lock2", "tok", "90000"},
	{"EVALSHA", "e950836ed1e694540c503ef9972b8de518044d3b", "1", "lock", "tok"},
	{"EVALSHA", "e950836ed1e694540c503ef9972b8de518044d3b", "1", "lock", "tok"},
	{"EVAL", redsyncRelease, "1", "lock2", "tok"}, {"EXISTS", "lock2"},
	// Redisson: take, re-enter, refused to another thread, renew, unlock
	// twice (the latch answers a repeated request), force unlock.
	{"SCRIPT", "LOAD", redissonLock}, {"SCRIPT", "LOAD", redissonUnlock}, {"SCRIPT", "LOAD", redissonForceUnlock}, {"SCRIPT", "LOAD", redissonRenew},
	{"EVAL", redissonLock, "1", "rl", "30000", "c1:1"}, {"EVAL", redissonLock, "1", "rl", "30000", "c1:1"}, {"HGET", "rl", "c1:1"},
	{"PERSIST", "rl"}, {"EVALSHA", "149c5a8bf18676fd99e9e6e24923bd64d9b62f94", "1", "rl", "30000", "c2:7"}, // (PTTL -1: no clock in the reply)
	{"EVALSHA", "6a3d31570dc6f4b0bd32bcdc8e75667747c6f635", "2", "rl", "nolock", "60000", "c1:1", "c1:1"},
	{"EVALSHA", "6a3d31570dc6f4b0bd32bcdc8e75667747c6f635", "1", "rl", "60000"},
	{"EVALSHA", "6866459238a13a701d42f4971f12d9f3a50e2442", "3", "rl", "redisson_lock__channel:{rl}", "redisson_unlock_latch:{rl}:r1", "0", "30000", "c2:7", "publish", "5000"},
	{"EVALSHA", "6866459238a13a701d42f4971f12d9f3a50e2442", "3", "rl", "redisson_lock__channel:{rl}", "redisson_unlock_latch:{rl}:r1", "0", "30000", "c1:1", "publish", "5000"},
	{"EVALSHA", "6866459238a13a701d42f4971f12d9f3a50e2442", "3", "rl", "redisson_lock__channel:{rl}", "redisson_unlock_latch:{rl}:r1", "0", "30000", "c1:1", "publish", "5000"},
	{"HGET", "rl", "c1:1"},
	{"EVALSHA", "6866459238a13a701d42f4971f12d9f3a50e2442", "3", "rl", "redisson_lock__channel:{rl}", "redisson_unlock_latch:{rl}:r2", "0", "30000", "c1:1", "publish", "5000"},
	{"EXISTS", "rl"}, {"GET", "redisson_unlock_latch:{rl}:r2"},
	{"EVAL", redissonLock, "1", "rl", "30000", "c3:1"}, {"EVAL", redissonForceUnlock, "2", "rl", "redisson_lock__channel:{rl}", "0", "publish"},
	{"EVAL", redissonForceUnlock, "2", "rl", "redisson_lock__channel:{rl}", "0", "publish"}, {"EXISTS", "rl"},
	{"SET", "rs", "str"}, {"EVAL", redissonLock, "1", "rs", "30000", "c1:1"},
	{"HSET", "rlatch", "f", "v"}, {"EVAL", redissonUnlock, "3", "rl", "ch", "rlatch", "0", "30000", "c1:1", "publish", "5000"},
	{"COPY", "h", "hcopy"}, {"HGETALL", "hcopy"}, {"OBJECTX"}, {"GETEX", "t", "PERSIST"}, {"GETEX", "set2", "EX", "10"},
}

// Redisson 4.x's lock scripts (RedissonLock's tryLockInnerAsync,
// unlockInnerAsync and forceUnlockAsync, and the renewal task's batch
// renew), the Java string concatenations joined byte for byte.
const (
	redissonLock = "if ((redis.call('exists', KEYS[1]) == 0) or (redis.call('hexists', KEYS[1], ARGV[2]) == 1)) then " +
		"redis.call('hincrby', KEYS[1], ARGV[2], 1); redis.call('pexpire', KEYS[1], ARGV[1]); return nil; end; " +
		"return redis.call('pttl', KEYS[1]);"
	redissonUnlock = "local val = redis.call('get', KEYS[3]); if val ~= false then return tonumber(val);end; " +
		"if (redis.call('hexists', KEYS[1], ARGV[3]) == 0) then return nil;end; " +
		"local counter = redis.call('hincrby', KEYS[1], ARGV[3], -1); if (counter > 0) then " +
		"redis.call('pexpire', KEYS[1], ARGV[2]); redis.call('set', KEYS[3], 0, 'px', ARGV[5]); return 0; else " +
		"redis.call('del', KEYS[1]); redis.call(ARGV[4], KEYS[2], ARGV[1]); redis.call('set', KEYS[3], 1, 'px', ARGV[5]); return 1; end; "
	redissonForceUnlock = "if (redis.call('del', KEYS[1]) == 1) then redis.call(ARGV[2], KEYS[2], ARGV[1]); return 1 else return 0 end"
	redissonRenew       = "local result = {} for i = 1, #KEYS, 1 do if (redis.call('hexists', KEYS[i], ARGV[i + 1]) == 1) then " +
		"redis.call('pexpire', KEYS[i], ARGV[1]); table.insert(result, 1); else table.insert(result, 0); end; end; return result;"
)

// redsyncRelease is redsync v4's release script, byte for byte: Redis
// runs it, kv recognises its SHA1 and runs its native version. (The extend
// scripts are loaded on Redis below by the test.)
const redsyncRelease = `
	local val = redis.call("GET", KEYS[1])
	if val == ARGV[1] then
		return redis.call("DEL", KEYS[1])
	elseif val == false then
		return -1
	else
		return 0
	end
`

const redsyncTouch = `
	if redis.call("GET", KEYS[1]) == ARGV[1] then
		return redis.call("PEXPIRE", KEYS[1], ARGV[2])
	else
		return 0
	end
`

const redsyncTouchNX = `
	if redis.call("GET", KEYS[1]) == ARGV[1] then
		return redis.call("PEXPIRE", KEYS[1], ARGV[2])
	elseif redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2], "NX") then
		return 1
	else
		return 0
	end
`

// readReply reads one whole RESP reply and returns its bytes.
func readReply(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), line...)
	switch line[0] {
	case '$':
		n, _ := strconv.Atoi(string(bytes.TrimSpace(line[1:])))
		if n >= 0 {
			b := make([]byte, n+2)
			if _, err := io.ReadFull(br, b); err != nil {
				return nil, err
			}
			out = append(out, b...)
		}
	case '=':
		n, _ := strconv.Atoi(string(bytes.TrimSpace(line[1:])))
		b := make([]byte, n+2)
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, err
		}
		out = append(out, b...)
	case '*', '>', '~', '%':
		n, _ := strconv.Atoi(string(bytes.TrimSpace(line[1:])))
		if line[0] == '%' {
			n *= 2
		}
		for i := 0; i < n; i++ {
			r, err := readReply(br)
			if err != nil {
				return nil, err
			}
			out = append(out, r...)
		}
	}
	return out, nil
}

func runScript(t *testing.T, addr string, db int, script [][]string) [][]byte {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("%s: %v", addr, err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	do := func(args ...string) []byte {
		var bs [][]byte
		for _, a := range args {
			bs = append(bs, []byte(a))
		}
		if _, err := conn.Write(resp.AppendCommand(nil, bs...)); err != nil {
			t.Fatal(err)
		}
		r, err := readReply(br)
		if err != nil {
			t.Fatalf("%s %q: %v", addr, args, err)
		}
		return r
	}
	do("SELECT", strconv.Itoa(db))
	do("FLUSHDB")
	do("SCRIPT", "LOAD", redsyncTouch)
	do("SCRIPT", "LOAD", redsyncTouchNX)
	var out [][]byte
	for _, c := range script {
		out = append(out, do(c...))
	}
	do("FLUSHDB")
	return out
}

// TestCompatibleWithRedis runs the same script against real Redis
// (TANGRAM_TEST_REDIS, default 127.0.0.1:6379, its database 13) and kv.
func TestCompatibleWithRedis(t *testing.T) {
	raddr := os.Getenv("TANGRAM_TEST_REDIS")
	if raddr == "" {
		raddr = "127.0.0.1:6379"
	}
	if c, err := net.Dial("tcp", raddr); err != nil {
		t.Fatalf("Redis at %s is not reachable (%v); start it with scripts/services.sh or set TANGRAM_TEST_REDIS", raddr, err)
	} else {
		c.Close()
	}
	compareWithRedis(t, raddr, compatScript)
}

// compareWithRedis runs script on Redis (its database 13) and on kv and
// fails on every reply that differs.
func compareWithRedis(t *testing.T, raddr string, script [][]string) {
	t.Helper()
	s, _ := start(t, nil)
	want := runScript(t, raddr, 13, script)
	got := runScript(t, s.Addr(), 13, script)
	bad := 0
	for i := range want {
		if !bytes.Equal(want[i], got[i]) {
			bad++
			t.Errorf("%q:\n redis: %q\n    kv: %q", script[i], want[i], got[i])
		}
	}
	if len(want) != len(script) || len(got) != len(want) {
		t.Fatalf("%d and %d replies for %d commands", len(want), len(got), len(script))
	}
	t.Logf("%d of %d replies differ; e.g. %q → %s", bad, len(want), script[len(script)-10], fmt.Sprintf("%q", got[len(got)-10]))
}
