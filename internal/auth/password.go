package auth

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
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
	mu sync.Mutex
	m  map[string][]time.Time
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

func (f *failureLog) blocked(remote, name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.recent(f.key(remote, name), time.Now())) >= maxFailures
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

// SetPassword changes a user's password.
func (s *Service) SetPassword(ctx context.Context, actor, user, password string) error {
	if len(password) < 8 {
		return fmt.Errorf("%w: password must be at least 8 characters", ErrBadName)
	}
	h, err := HashPassword(password)
	if err != nil {
		return err
	}
	return s.st.InTx(ctx, func(tx *store.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = ? WHERE name = ?`, h, user)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: %q", ErrUserNotFound, user)
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "auth.user.password", Resource: "user/" + user, After: "***"})
	})
}

// Failed sign-ins are limited per client address and user name: after
// maxFailures within failureWindow, sign-ins from that address for that
// name are refused until the window passes. Each attempt costs a PBKDF2
// computation, so this also bounds the CPU an attacker can spend.
const (
	maxFailures   = 5
	failureWindow = time.Minute
)
