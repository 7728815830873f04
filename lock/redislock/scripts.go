package redislock

import "github.com/redis/go-redis/v9"

// The scripts. Tangram's kv runs no Lua: it has a native version of each,
// recognised by the SHA1 of its text (kv/server/natives_lock.go), and a
// test there runs every script on Redis and on kv and compares the
// replies. Changing a script's text changes its SHA1: change kv's native
// with it.
//
// A mutex is a hash at KEYS[1] — o: owner, n: holds, f: fencing token —
// with the lease as its expiry; the token comes from a counter at KEYS[2]
// that never expires, so it keeps growing across acquisitions. Replies of
// the acquire scripts: {1, token} when acquired (a first hold or one more),
// {0, pttl} when not.
const (
	scriptAcquire = `local o = redis.call('hget', KEYS[1], 'o')
if o == false then
  local f = redis.call('incr', KEYS[2])
  redis.call('hset', KEYS[1], 'o', ARGV[1], 'n', 1, 'f', f)
  redis.call('pexpire', KEYS[1], ARGV[2])
  return {1, f}
end
if o == ARGV[1] then
  redis.call('hincrby', KEYS[1], 'n', 1)
  redis.call('pexpire', KEYS[1], ARGV[2])
  return {1, tonumber(redis.call('hget', KEYS[1], 'f'))}
end
return {0, redis.call('pttl', KEYS[1])}`

	// Release one hold: -1 when ARGV[1] does not hold the lock, the holds
	// left (lease renewed to ARGV[2]) or 0 when released — then ARGV[1]
	// is published on channel ARGV[3].
	scriptRelease = `if redis.call('hget', KEYS[1], 'o') ~= ARGV[1] then return -1 end
local n = redis.call('hincrby', KEYS[1], 'n', -1)
if n > 0 then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return n
end
redis.call('del', KEYS[1])
redis.call('publish', ARGV[3], ARGV[1])
return 0`

	// Renew the lease when ARGV[1] holds the lock (a mutex's o or a
	// read-write lock's writer w or reader r:<owner>): 1, else 0.
	scriptExtend = `if redis.call('hget', KEYS[1], 'o') == ARGV[1] or redis.call('hget', KEYS[1], 'w') == ARGV[1] or redis.call('hexists', KEYS[1], 'r:' .. ARGV[1]) == 1 then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 1
end
return 0`

	// The fair mutex: as scriptAcquire, but a free lock goes only to the
	// head of the FIFO queue KEYS[3] (a list of owners, with each waiter's
	// deadline in the sorted set KEYS[4]); a refused owner joins the queue
	// or renews its place there until ARGV[3] ms from now. Waiters whose
	// deadline passed are dropped from the head.
	scriptFairAcquire = `local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
while true do
  local h = redis.call('lindex', KEYS[3], 0)
  if h == false then break end
  local d = redis.call('zscore', KEYS[4], h)
  if d ~= false and tonumber(d) >= now then break end
  redis.call('lpop', KEYS[3])
  redis.call('zrem', KEYS[4], h)
end
local o = redis.call('hget', KEYS[1], 'o')
if o == ARGV[1] then
  redis.call('hincrby', KEYS[1], 'n', 1)
  redis.call('pexpire', KEYS[1], ARGV[2])
  return {1, tonumber(redis.call('hget', KEYS[1], 'f'))}
end
if o == false then
  local h = redis.call('lindex', KEYS[3], 0)
  if h == false or h == ARGV[1] then
    if h ~= false then
      redis.call('lpop', KEYS[3])
      redis.call('zrem', KEYS[4], h)
    end
    local f = redis.call('incr', KEYS[2])
    redis.call('hset', KEYS[1], 'o', ARGV[1], 'n', 1, 'f', f)
    redis.call('pexpire', KEYS[1], ARGV[2])
    return {1, f}
  end
end
if redis.call('zadd', KEYS[4], now + tonumber(ARGV[3]), ARGV[1]) == 1 then
  redis.call('rpush', KEYS[3], ARGV[1])
end
redis.call('pexpire', KEYS[3], 2 * tonumber(ARGV[3]))
redis.call('pexpire', KEYS[4], 2 * tonumber(ARGV[3]))
local p = redis.call('pttl', KEYS[1])
if p < 0 then p = 0 end
return {0, p}`

	// Leave the fair queue (a waiter that gave up): 1 if it was queued.
	scriptFairLeave = `redis.call('lrem', KEYS[3], 0, ARGV[1])
return redis.call('zrem', KEYS[4], ARGV[1])`

	// A read-write lock is a hash at KEYS[1]: mode (read|write); the
	// writer w, its holds wn and token f; each reader's holds at
	// r:<owner> and the number of readers at rc. Read: granted in read
	// mode, or to the writer itself; the reply's token is the last
	// writer's (the counter KEYS[2]).
	scriptReadAcquire = `local mode = redis.call('hget', KEYS[1], 'mode')
if mode == false or mode == 'read' or redis.call('hget', KEYS[1], 'w') == ARGV[1] then
  if mode == false then redis.call('hset', KEYS[1], 'mode', 'read') end
  local n = redis.call('hincrby', KEYS[1], 'r:' .. ARGV[1], 1)
  if n == 1 then redis.call('hincrby', KEYS[1], 'rc', 1) end
  if redis.call('pttl', KEYS[1]) < tonumber(ARGV[2]) then redis.call('pexpire', KEYS[1], ARGV[2]) end
  return {1, tonumber(redis.call('get', KEYS[2]) or '0')}
end
return {0, redis.call('pttl', KEYS[1])}`

	scriptWriteAcquire = `local mode = redis.call('hget', KEYS[1], 'mode')
if mode == false then
  local f = redis.call('incr', KEYS[2])
  redis.call('hset', KEYS[1], 'mode', 'write', 'w', ARGV[1], 'wn', 1, 'f', f)
  redis.call('pexpire', KEYS[1], ARGV[2])
  return {1, f}
end
if mode == 'write' and redis.call('hget', KEYS[1], 'w') == ARGV[1] then
  redis.call('hincrby', KEYS[1], 'wn', 1)
  redis.call('pexpire', KEYS[1], ARGV[2])
  return {1, tonumber(redis.call('hget', KEYS[1], 'f'))}
end
return {0, redis.call('pttl', KEYS[1])}`

	// Release one read hold: -1 when not held; the holds left; 0 when this
	// reader is out — the lock deleted and ARGV[1] published on ARGV[3]
	// when no reader and no writer remain.
	scriptReadRelease = `local r = 'r:' .. ARGV[1]
if redis.call('hexists', KEYS[1], r) == 0 then return -1 end
local n = redis.call('hincrby', KEYS[1], r, -1)
if n > 0 then return n end
redis.call('hdel', KEYS[1], r)
local rc = redis.call('hincrby', KEYS[1], 'rc', -1)
if rc <= 0 and redis.call('hget', KEYS[1], 'mode') == 'read' then
  redis.call('del', KEYS[1])
  redis.call('publish', ARGV[3], ARGV[1])
end
return 0`

	// Release one write hold: -1 when not the writer; the holds left; 0
	// when released — the lock goes back to read mode when the writer
	// also holds reads, else it is deleted and ARGV[1] published.
	scriptWriteRelease = `if redis.call('hget', KEYS[1], 'w') ~= ARGV[1] then return -1 end
local n = redis.call('hincrby', KEYS[1], 'wn', -1)
if n > 0 then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return n
end
if tonumber(redis.call('hget', KEYS[1], 'rc') or '0') > 0 then
  redis.call('hdel', KEYS[1], 'w', 'wn', 'f')
  redis.call('hset', KEYS[1], 'mode', 'read')
else
  redis.call('del', KEYS[1])
end
redis.call('publish', ARGV[3], ARGV[1])
return 0`
)

var (
	luaAcquire      = redis.NewScript(scriptAcquire)
	luaRelease      = redis.NewScript(scriptRelease)
	luaExtend       = redis.NewScript(scriptExtend)
	luaFairAcquire  = redis.NewScript(scriptFairAcquire)
	luaFairLeave    = redis.NewScript(scriptFairLeave)
	luaReadAcquire  = redis.NewScript(scriptReadAcquire)
	luaWriteAcquire = redis.NewScript(scriptWriteAcquire)
	luaReadRelease  = redis.NewScript(scriptReadRelease)
	luaWriteRelease = redis.NewScript(scriptWriteRelease)
)

// Scripts returns every script's text by name; kv's tests run them on
// Redis and on kv and compare.
func Scripts() map[string]string {
	return map[string]string{
		"acquire": scriptAcquire, "release": scriptRelease, "extend": scriptExtend,
		"fair-acquire": scriptFairAcquire, "fair-leave": scriptFairLeave,
		"read-acquire": scriptReadAcquire, "write-acquire": scriptWriteAcquire,
		"read-release": scriptReadRelease, "write-release": scriptWriteRelease,
	}
}
