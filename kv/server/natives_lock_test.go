package server

import (
	"crypto/sha1"
	"encoding/hex"
	"net"
	"os"
	"testing"

	"github.com/tangram-dev/tangram/lock/redislock"
)

// Every script of lock/redislock has a native here (its SHA1 changes with
// its text).
func TestLockScriptsHaveNatives(t *testing.T) {
	for name, text := range redislock.Scripts() {
		h := sha1.Sum([]byte(text))
		if natives[hex.EncodeToString(h[:])] == nil {
			t.Errorf("lock script %q (sha1 %x) has no native in kv: update natives_lock.go with the script", name, h)
		}
	}
}

// The lock scripts on Redis and on kv: the same replies, byte for byte
// (leases are made persistent before a refusal, so no clock is in a reply).
func TestLockScriptsLikeRedis(t *testing.T) {
	raddr := os.Getenv("TANGRAM_TEST_REDIS")
	if raddr == "" {
		raddr = "127.0.0.1:6379"
	}
	if c, err := net.Dial("tcp", raddr); err != nil {
		t.Fatalf("Redis at %s is not reachable (%v); start it with scripts/services.sh or set TANGRAM_TEST_REDIS", raddr, err)
	} else {
		c.Close()
	}
	s := redislock.Scripts()
	acq := func(owner string) []string { return []string{"EVAL", s["acquire"], "2", "L", "F", owner, "30000"} }
	rel := func(key, owner string) []string {
		return []string{"EVAL", s["release"], "1", key, owner, "30000", "ch"}
	}
	ext := func(key, owner string) []string { return []string{"EVAL", s["extend"], "1", key, owner, "30000"} }
	fair := func(owner string) []string {
		return []string{"EVAL", s["fair-acquire"], "4", "FL", "FF", "Q", "QT", owner, "30000", "5000"}
	}
	racq := func(owner string) []string {
		return []string{"EVAL", s["read-acquire"], "2", "RW", "F2", owner, "30000"}
	}
	wacq := func(owner string) []string {
		return []string{"EVAL", s["write-acquire"], "2", "RW", "F2", owner, "30000"}
	}
	rrel := func(owner string) []string {
		return []string{"EVAL", s["read-release"], "1", "RW", owner, "30000", "ch"}
	}
	wrel := func(owner string) []string {
		return []string{"EVAL", s["write-release"], "1", "RW", owner, "30000", "ch"}
	}
	script := [][]string{
		acq("o1"), acq("o1"), {"HGET", "L", "n"}, {"PERSIST", "L"}, acq("o2"),
		ext("L", "o2"), ext("L", "o1"), {"PERSIST", "L"}, rel("L", "o2"), rel("L", "o1"), rel("L", "o1"), {"EXISTS", "L"},
		rel("L", "o1"), acq("o2"), {"HGETALL", "L"}, {"GET", "F"},
		{"SET", "S", "str"}, {"EVAL", s["acquire"], "2", "S", "F", "o1", "1000"}, {"EVAL", s["release"], "1", "S", "o1", "1", "ch"},
		fair("a"), {"PERSIST", "FL"}, fair("b"), fair("c"), {"LRANGE", "Q", "0", "-1"}, fair("b"), {"LRANGE", "Q", "0", "-1"},
		{"EVAL", s["fair-leave"], "4", "FL", "FF", "Q", "QT", "c"}, {"EVAL", s["fair-leave"], "4", "FL", "FF", "Q", "QT", "c"},
		fair("a"), {"HGET", "FL", "n"}, rel("FL", "a"), rel("FL", "a"), fair("c"), fair("b"), {"LRANGE", "Q", "0", "-1"}, {"ZCARD", "QT"},
		racq("r1"), racq("r2"), racq("r1"), {"PERSIST", "RW"}, wacq("w"), ext("RW", "r2"), ext("RW", "w"), {"PERSIST", "RW"},
		rrel("r1"), rrel("r1"), rrel("r1"), rrel("r2"), {"EXISTS", "RW"},
		wacq("w"), wacq("w"), {"PERSIST", "RW"}, racq("r1"), wacq("r1"), racq("w"), ext("RW", "w"), wrel("w"), {"HGETALL", "RW"},
		wrel("w"), {"HGETALL", "RW"}, {"PERSIST", "RW"}, wacq("x"), racq("r1"), rrel("w"), {"EXISTS", "RW"}, rrel("r1"), {"EXISTS", "RW"}, {"GET", "F2"},
		{"HSET", "RW", "mode", "write", "rc", "zz"}, rrel("nobody"), wrel("nobody"),
	}
	compareWithRedis(t, raddr, script)
}
