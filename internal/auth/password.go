package auth

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/store"
)

// dummyHash is checked against when a sign-in names no user, so that such a
// sign-in costs as long as one with a wrong password. It is made on first
// use: 210,000 PBKDF2 rounds at program start would slow every command and
// every program that links this package.
var dummyHash = sync.OnceValue(func() string {
	h, _ := HashPassword("tangram-no-such-user")
	return h
})

type failureLog struct {
	mu     sync.Mutex
	m      map[string][]time.Time
	locked map[string]time.Time // when a key's current lock-out was first refused
}

func (f *failureLog) key(remote, name string) string { return remote + "\x00" + name }

func (f *failureLog) recent(k string, now time.Time) []time.Time {
	ts := f.m[k]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) > failureWindow {
		i++
	}
	return ts[i:]
}

// blocked reports whether sign-ins for the key are refused now, and
// whether this is the first refusal of this lock-out.
func (f *failureLog) blocked(remote, name string) (blocked, first bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, now := f.key(remote, name), time.Now()
	if len(f.recent(k, now)) < maxFailures {
		return false, false
	}
	if f.locked == nil || len(f.locked) > 100_000 {
		f.locked = map[string]time.Time{}
	}
	if at, ok := f.locked[k]; ok && now.Sub(at) <= failureWindow {
		return true, false
	}
	f.locked[k] = now
	return true, true
}

func (f *failureLog) fail(remote, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil || len(f.m) > 100_000 {
		f.m = map[string][]time.Time{}
	}
	k, now := f.key(remote, name), time.Now()
	f.m[k] = append(f.recent(k, now), now)
}

func (f *failureLog) reset(remote, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, f.key(remote, name))
	delete(f.locked, f.key(remote, name))
}

const pbkdf2Iter = 210_000

// HashPassword returns the stored form of a password.
func HashPassword(pw string) (string, error) {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	key, err := pbkdf2.Key(sha256.New, pw, salt, pbkdf2Iter, 32)
	if err != nil {
		return "", fmt.Errorf("auth: hash password: %w", err)
	}
	return fmt.Sprintf("pbkdf2-sha256$%d$%s$%s", pbkdf2Iter, base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// CheckPassword compares pw with a stored hash in constant time.
func CheckPassword(stored, pw string) bool {
	parts := strings.Split(stored, "$")
	if len(parts) != 4 || parts[0] != "pbkdf2-sha256" {
		return false
	}
	iter, err := strconv.Atoi(parts[1])
	if err != nil || iter < 1 {
		return false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[2])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[3])
	if err1 != nil || err2 != nil {
		return false
	}
	got, err := pbkdf2.Key(sha256.New, pw, salt, iter, len(want))
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(got, want) == 1
}

// checkNewPassword refuses passwords too short to be one.
func checkNewPassword(pw string) error {
	if len(pw) < 8 {
		return fmt.Errorf("%w: a password must be at least 8 characters", ErrBadPassword)
	}
	if len(pw) > 1024 {
		return fmt.Errorf("%w: a password must be at most 1024 bytes", ErrBadPassword)
	}
	return nil
}

// SetPassword changes a user's password as an administrator would:
// without asking for the current one. Callers decide who may; the HTTP
// API allows it only to an unrestricted admin acting on another user (see
// ChangePassword). Every console session of the user ends except keep
// (a session id, or "").
func (s *Service) SetPassword(ctx context.Context, actor, user, password, keep string) error {
	if err := checkNewPassword(password); err != nil {
		return err
	}
	h, err := HashPassword(password)
	if err != nil {
		return err
	}
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		var id int64
		if err := tx.QueryRowContext(ctx, `SELECT id FROM users WHERE name = ?`, user).Scan(&id); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("%w: %q", ErrUserNotFound, user)
			}
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = ? WHERE id = ?`, h, id); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = ? AND hash <> ?`, id, HashToken(keep))
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "auth.user.password", Resource: "user/" + user,
			After: fmt.Sprintf("*** (%d other session(s) ended)", n)})
	})
	if err != nil {
		return fmt.Errorf("auth: set password of %q: %w", user, err)
	}
	return nil
}

// ChangePassword changes user's password on behalf of p. An unrestricted
// admin may set another user's password outright. Anyone else — and an
// admin changing their own — must prove the current secret: the password,
// or for a user without one an unrestricted API token of theirs (what the
// console's sign-in accepts). So a credential limited to an environment
// can never become a session without that limit. Wrong guesses count
// against the sign-in limit. Every other session of the user ends.
func (s *Service) ChangePassword(ctx context.Context, p *Principal, user, current, password, remote string) error {
	if p == nil {
		return ErrUnauthenticated
	}
	keep := ""
	if p.Session && p.Name == user {
		keep = p.sessionID
	}
	if p.Name != user {
		if !p.IsAdmin() {
			return fmt.Errorf("%w: only an unrestricted admin sets another user's password", ErrForbidden)
		}
		return s.SetPassword(ctx, p.Name, user, password, keep)
	}
	if err := checkNewPassword(password); err != nil {
		return err
	}
	if blocked, _ := s.failures.blocked(remote, user); blocked {
		return ErrTooManyAttempts
	}
	if !s.proves(ctx, p.UserID, current) {
		s.failures.fail(remote, user)
		_ = audit.Record(ctx, s.st, audit.Entry{Actor: p.Name, Action: "auth.user.password.failed", Resource: "user/" + user, Remote: remote, After: "wrong current password"})
		return ErrWrongPassword
	}
	s.failures.reset(remote, user)
	return s.SetPassword(ctx, p.Name, user, password, keep)
}

// proves reports whether secret is the user's password or, for a user
// without one, one of their unrestricted API tokens. It costs one PBKDF2
// check either way.
func (s *Service) proves(ctx context.Context, userID int64, secret string) bool {
	var stored string
	if err := s.st.QueryRowContext(ctx, `SELECT password_hash FROM users WHERE id = ?`, userID).Scan(&stored); err != nil {
		CheckPassword(dummyHash(), secret)
		return false
	}
	if stored != "" {
		return CheckPassword(stored, secret)
	}
	CheckPassword(dummyHash(), secret)
	if !strings.HasPrefix(secret, TokenPrefix) {
		return false
	}
	tp, err := s.AuthenticateToken(ctx, secret)
	return err == nil && tp.UserID == userID && tp.TokenEnv == ""
}

// Failed sign-ins are limited per client address and user name: after
// maxFailures within failureWindow, sign-ins from that address for that
// name are refused until the window passes. Each attempt costs a PBKDF2
// computation, so this also bounds the CPU an attacker can spend.
const (
	maxFailures   = 5
	failureWindow = time.Minute
)
