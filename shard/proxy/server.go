// Package proxy is the sharding layer as a MySQL-protocol server, the
// way ShardingSphere-Proxy is: any MySQL or MariaDB client (the mariadb
// command line, go-sql-driver/mysql, JDBC, sysbench) connects to it as
// to one database, and its statements are routed, run and merged by
// shard.Executor over the data sources the rules name.
//
// It speaks the client/server protocol 4.1: the handshake with
// mysql_native_password or caching_sha2_password (the fast path: the
// proxy holds the passwords), COM_QUERY with text result sets,
// COM_STMT_PREPARE/EXECUTE/CLOSE/RESET/SEND_LONG_DATA with binary result
// sets, COM_INIT_DB, COM_PING, COM_RESET_CONNECTION and COM_QUIT;
// multi-statements are off and TLS is not offered. Sessions hold their
// own transaction (BEGIN/COMMIT/ROLLBACK, autocommit=0), one local
// transaction per data source it touches. docs/shard.md describes it.
package proxy

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/shard"
)

// Config configures a Server.
type Config struct {
	// Users are the accounts clients log in with: name → password (at
	// least one; an empty password is allowed but must be said).
	Users map[string]string
	// Database is the schema clients see and USE (default "sharding_db").
	Database string
	// AuthPlugin is the plugin the handshake proposes: NativePassword
	// (default) or CachingSHA2Password. A client answering with the
	// other is accepted too.
	AuthPlugin string
	// MaxConns bounds the client connections (default 1024); one more
	// is refused with "Too many connections".
	MaxConns int
	// MaxPacket bounds a client's packet (default 64 MiB, MySQL's
	// max_allowed_packet).
	MaxPacket int
	// IdleTimeout closes a connection idle this long, or up to an
	// eighth longer (default 8 h,
	// MySQL's wait_timeout).
	IdleTimeout time.Duration
	// Version is the server version clients are told (default
	// "8.0.36-tangram").
	Version string
	// Executor configures the executor (MaxParallel).
	Executor shard.ExecutorConfig
	Logger   *slog.Logger
}

// Server serves the MySQL protocol over a sharded database.
type Server struct {
	cfg Config
	// ex is the executor statements start on; Update replaces it (a
	// transaction keeps the one it began on).
	ex  atomic.Pointer[shard.Executor]
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	connID atomic.Uint32

	mu     sync.Mutex
	lns    map[net.Listener]bool
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

// NewServer returns a server over rules r whose data sources are dbs
// (one per data source; the caller keeps and closes them).
func NewServer(r *shard.Rules, dbs map[string]*sql.DB, cfg Config) (*Server, error) {
	if len(cfg.Users) == 0 {
		return nil, errors.New("proxy: no users: clients must log in (give at least one user and password)")
	}
	for u := range cfg.Users {
		if u == "" {
			return nil, errors.New("proxy: a user with an empty name")
		}
	}
	switch cfg.AuthPlugin {
	case "":
		cfg.AuthPlugin = NativePassword
	case NativePassword, CachingSHA2Password:
	default:
		return nil, fmt.Errorf("proxy: auth plugin %q: want %s or %s", cfg.AuthPlugin, NativePassword, CachingSHA2Password)
	}
	if cfg.Database == "" {
		cfg.Database = "sharding_db"
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 1024
	}
	if cfg.MaxPacket <= 0 {
		cfg.MaxPacket = 64 << 20
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 8 * time.Hour
	}
	if cfg.Version == "" {
		cfg.Version = "8.0.36-tangram"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Executor.Logger == nil {
		cfg.Executor.Logger = cfg.Logger
	}
	ex, err := shard.NewExecutor(r, dbs, cfg.Executor)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "shard-proxy"),
		ctx: ctx, cancel: cancel, lns: map[net.Listener]bool{}, conns: map[net.Conn]bool{}}
	s.ex.Store(ex)
	return s, nil
}

// Executor is the executor statements start on now.
func (s *Server) Executor() *shard.Executor { return s.ex.Load() }

// Update switches to rules r over dbs (one per data source r names; the
// caller keeps and closes them): statements from now on are routed by
// r, transactions already open finish on the rules they began with.
func (s *Server) Update(r *shard.Rules, dbs map[string]*sql.DB) error {
	ex, err := shard.NewExecutor(r, dbs, s.cfg.Executor)
	if err != nil {
		return err
	}
	if old := s.ex.Swap(ex); old != nil {
		// Statements that started on the old rules end before the
		// switch counts as done (a migration's copy relies on it).
		old.Drain(10 * time.Second)
		old.Close()
	}
	return nil
}

// Database is the schema clients see.
func (s *Server) Database() string { return s.cfg.Database }

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Serve accepts connections on ln until Close; each is served on a
// goroutine of its own.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.lns[ln] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
				case <-s.ctx.Done():
				}
				continue
			}
			return fmt.Errorf("proxy: accept: %w", err)
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return ErrServerClosed
		}
		full := len(s.conns) >= s.cfg.MaxConns
		s.conns[nc] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, nc)
				s.mu.Unlock()
				nc.Close()
			}()
			if full {
				pc := newPacketConn(nc, s.cfg.MaxPacket)
				_ = pc.send(appendErr(pc.begin(), 1040, "08004", "Too many connections"))
				_ = pc.flush()
				return
			}
			s.serveConn(nc)
		}()
	}
}

// Close stops accepting, closes every connection (rolling back its
// transaction) and waits for their goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	for nc := range s.conns {
		nc.Close()
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return s.ex.Load().Close()
}

// serveConn runs one client connection: the handshake, then commands
// until the client quits or the connection fails.
func (s *Server) serveConn(nc net.Conn) {
	id := s.connID.Add(1)
	ss := &session{s: s, pc: newPacketConn(nc, s.cfg.MaxPacket), id: id, autocommit: true, stmts: map[uint32]*prepared{}}
	defer ss.close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := ss.handshake(); err != nil {
		s.log.Debug("handshake failed", "conn", id, "remote", nc.RemoteAddr().String(), "err", err)
		return
	}
	// The deadline is moved on only when fewer than IdleTimeout remain,
	// and then to IdleTimeout and an eighth: an idle connection closes
	// after IdleTimeout at the earliest and an eighth later at the latest,
	// without a timer update for every command.
	var deadline time.Time
	for {
		if now := time.Now(); deadline.Sub(now) < s.cfg.IdleTimeout {
			deadline = now.Add(s.cfg.IdleTimeout + s.cfg.IdleTimeout/8)
			_ = nc.SetDeadline(deadline)
		}
		ss.pc.seq = 0
		p, err := ss.pc.read()
		if err != nil {
			if errors.Is(err, errPacketTooLarge) {
				_ = ss.pc.send(appendErr(ss.pc.begin(), 1153, "08S01", "Got a packet bigger than 'max_allowed_packet' bytes"))
				_ = ss.pc.flush()
			}
			return
		}
		if len(p) == 0 {
			return
		}
		quit, err := ss.command(p)
		if err == nil {
			err = ss.pc.flush()
		}
		if err != nil || quit {
			if err != nil {
				s.log.Debug("connection ended", "conn", id, "err", err)
			}
			return
		}
	}
}

// handshake greets the client and checks its user and password.
func (ss *session) handshake() error {
	s := ss.s
	nonce, err := newNonce()
	if err != nil {
		return err
	}
	pc := ss.pc
	if err := pc.send(appendHandshake(pc.begin(), s.cfg.Version, ss.id, nonce, s.cfg.AuthPlugin)); err != nil {
		return err
	}
	if err := pc.flush(); err != nil {
		return err
	}
	p, err := pc.read()
	if err != nil {
		return err
	}
	h, err := parseHandshakeResponse(p)
	if err != nil {
		_ = pc.send(appendErr(pc.begin(), 1043, "08S01", err.Error()))
		_ = pc.flush()
		return err
	}
	plugin := h.plugin
	if h.caps&capPluginAuth == 0 {
		plugin = NativePassword
	}
	if plugin != NativePassword && plugin != CachingSHA2Password {
		// Ask the client to use the proxy's plugin (AuthSwitchRequest).
		plugin = s.cfg.AuthPlugin
		b := append(pc.begin(), 0xfe)
		b = appendNulStr(b, plugin)
		b = append(append(b, nonce...), 0)
		if err := pc.send(b); err != nil {
			return err
		}
		if err := pc.flush(); err != nil {
			return err
		}
		p, err := pc.read()
		if err != nil {
			return err
		}
		h.auth = append([]byte(nil), p...)
	}
	password, known := s.cfg.Users[h.user]
	if !known || !checkPassword(plugin, password, nonce, h.auth) {
		using := "NO"
		if len(h.auth) > 0 {
			using = "YES"
		}
		host, _, _ := net.SplitHostPort(pc.nc.RemoteAddr().String())
		msg := fmt.Sprintf("Access denied for user '%s'@'%s' (using password: %s)", h.user, host, using)
		_ = pc.send(appendErr(pc.begin(), 1045, "28000", msg))
		_ = pc.flush()
		return errors.New(msg)
	}
	if plugin == CachingSHA2Password {
		// AuthMoreData: fast authentication succeeded.
		if err := pc.send(append(pc.begin(), 0x01, 0x03)); err != nil {
			return err
		}
	}
	if h.db != "" {
		if !strings.EqualFold(h.db, s.cfg.Database) {
			_ = pc.send(appendErr(pc.begin(), 1049, "42000", fmt.Sprintf("Unknown database '%s'", h.db)))
			_ = pc.flush()
			return fmt.Errorf("unknown database %q", h.db)
		}
		ss.db = s.cfg.Database
	}
	ss.user = h.user
	if err := pc.send(ss.appendOK(pc.begin(), 0, 0)); err != nil {
		return err
	}
	return pc.flush()
}

// appendErr appends an ERR packet.
func appendErr(b []byte, code uint16, state, msg string) []byte {
	b = append(b, 0xff)
	b = appendU16(b, code)
	b = append(b, '#')
	b = append(b, state...)
	return append(b, msg...)
}
