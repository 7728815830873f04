package server

import "sync"

// appCacheSize bounds each of the app cache's two generations.
const appCacheSize = 1 << 16

// appCache remembers which app each transaction belongs to, for the
// permission check of every call after Begin (Register, Submit, Abort…)
// without a read of the store each time. An entry never goes stale: a
// transaction's app is set when it is created and never changes, and a
// transaction is never deleted (its XID is never reused). Two
// generations: when the current one is full it becomes the old one, and
// an entry read from the old one moves back to the current one.
type appCache struct {
	mu       sync.Mutex
	cur, old map[string]string
}

func (c *appCache) get(xid string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if app, ok := c.cur[xid]; ok {
		return app, true
	}
	app, ok := c.old[xid]
	if ok {
		c.putLocked(xid, app)
	}
	return app, ok
}

func (c *appCache) put(xid, app string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(xid, app)
}

func (c *appCache) putLocked(xid, app string) {
	if c.cur == nil || len(c.cur) >= appCacheSize {
		c.old, c.cur = c.cur, make(map[string]string, 1024)
	}
	c.cur[xid] = app
}
