package broker

// Access tokens kept beside the lock (Options.AccessTokensBesideLock,
// the ACCESS_TOKEN_STORE=blob setting): a departure from DESIGN's "Key
// Vault holds every token" that one vault's write budget asks for at
// scale.
//
// Key Vault allows 300 secret writes per 10 seconds per vault
// (learn.microsoft.com/azure/key-vault/general/service-limits). A
// rotating refresh that writes both the refresh token and the access
// token there keeps at most about 44,000 connections warm per 49-minute
// cycle with the whole vault to itself; one that writes only the refresh
// token, twice as many. So the access token, which any instance can get
// again from the provider and which is worth nothing once it expires,
// goes beside the connection's lock instead: the lock blob's content,
// sealed under the write-ahead key like the write-ahead record. On a
// rotating refresh it costs no request more than before: the write-ahead
// record already carries it, and the request that used to empty the
// record after the store took the refresh token now replaces it with the
// access-token record. Readers on other instances (steps 3 and 5) read
// the lock blob without the lease (one Get Blob), and serve a pending
// write-ahead record's access token too.
//
// Refresh tokens, client secrets and the write-ahead key stay in the
// store. Anything reading <name>-access-token from the store directly
// stops seeing new tokens.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// AccessTokenLog is implemented by a held Lock whose backend can keep a
// sealed access-token record beside the lock, in the place of the
// write-ahead record (bloblease: the lock blob's content).
type AccessTokenLog interface {
	// KeepAccessToken replaces what is kept beside the lock (a
	// write-ahead record, an older access-token record, nothing) with
	// rec, under the lock, and returns once it is durable. Afterwards the
	// locker's WriteAheadChecker reports no write-ahead record.
	KeepAccessToken(ctx context.Context, rec []byte) error
}

// BesideLockReader is implemented by a Locker that can read what is kept
// beside a lock without taking it: the access-token record or a pending
// write-ahead record. nil, nil when there is nothing.
type BesideLockReader interface {
	ReadBesideLock(ctx context.Context, name string) ([]byte, error)
}

// accessMagic starts a sealed access-token record; it has the length of
// recordMagic, so both share seal's layout (base is zero here).
var accessMagic = []byte("TRACC1")

// isAccessRecord reports whether raw is an access-token record, not a
// write-ahead record.
func isAccessRecord(raw []byte) bool { return bytes.HasPrefix(raw, accessMagic) }

// accessRecord is the sealed part of an access-token record, and of a
// write-ahead record's Access.
type accessRecord struct {
	AccessToken string        `json:"accessToken"`
	TokenType   string        `json:"tokenType,omitempty"`
	ExpiresOn   time.Time     `json:"expiresOn"`
	IssuedOn    time.Time     `json:"issuedOn,omitzero"`
	Lifetime    time.Duration `json:"lifetime,omitempty"`
}

// accessBesideLock returns the record of tok when access tokens are kept
// beside the lock, nil when they go to the store.
func (b *Broker) accessBesideLock(tok *Token, issued time.Time, lifetime time.Duration) *accessRecord {
	if !b.besideLock {
		return nil
	}
	return &accessRecord{AccessToken: tok.AccessToken.Reveal(), TokenType: tok.TokenType, ExpiresOn: tok.Expiry, IssuedOn: issued, Lifetime: lifetime}
}

// settleRecord ends a write-ahead record whose refresh token the store
// now holds: with access (kept beside the lock) it is replaced by the
// access-token record, else emptied. Either is one request. It reports
// whether access was kept.
func (b *Broker) settleRecord(ctx context.Context, c *Connection, lock Lock, wal WriteAheadLog, access *accessRecord) bool {
	if access != nil && access.ExpiresOn.After(b.now()) {
		if raw, ok := b.sealAccess(ctx, c, lock, access); ok {
			if err := raw.log.KeepAccessToken(ctx, raw.rec); err == nil {
				return true
			}
		}
	}
	b.clearRecord(ctx, c, wal)
	return false
}

type sealedAccess struct {
	log AccessTokenLog
	rec []byte
}

// sealAccess seals access for c's lock; ok is false (logged) when the lock
// cannot keep it or there is no key.
func (b *Broker) sealAccess(ctx context.Context, c *Connection, lock Lock, access *accessRecord) (sealedAccess, bool) {
	log, ok := lock.(AccessTokenLog)
	if !ok {
		// A client-credentials refresh that went on without the lock:
		// this instance serves from memory, others fetch their own.
		b.log.Debug("the access token is not kept beside the lock: the lock is not held", "event", "persist.access_token_skipped", "connection", c.Name)
		return sealedAccess{}, false
	}
	key := b.key(ctx)
	if key == nil {
		return sealedAccess{}, false
	}
	plain, err := json.Marshal(access) // #nosec G117 -- sealed with AES-GCM just below
	if err == nil {
		var raw []byte
		if raw, err = seal(key, accessMagic, c.Name, tokenHash{}, plain); err == nil {
			return sealedAccess{log: log, rec: raw}, true
		}
	}
	b.log.Warn("could not seal the access token", "event", "persist.access_token_failed", "connection", c.Name, "error", err.Error())
	return sealedAccess{}, false
}

// keepAccessBeside writes the access-token record beside the held lock,
// retried like a store write; a failure is not fatal (storeAccessToken).
func (b *Broker) keepAccessBeside(ctx context.Context, c *Connection, lock Lock, access *accessRecord) {
	sealed, ok := b.sealAccess(ctx, c, lock, access)
	if !ok {
		return
	}
	err := b.retryStore(ctx, lock, func(ctx context.Context) error { return sealed.log.KeepAccessToken(ctx, sealed.rec) })
	if err != nil {
		b.log.Warn("could not keep the access token beside the lock", "event", "persist.access_token_failed",
			"connection", c.Name, "error", err.Error())
	}
}

// readAccessToken is the shared access token as steps 3 and 5 read it:
// from the store, or, when access tokens are kept beside the lock, from
// the access-token record or a pending write-ahead record there. An error
// wraps ErrSecretNotFound when there is none, or none this instance can
// open (another key: the next refresh writes one it can).
func (b *Broker) readAccessToken(ctx context.Context, st *connState) (StoredSecret, error) {
	c := &st.conn
	if !b.besideLock {
		return b.store.Get(ctx, c.Secrets.AccessToken)
	}
	raw, err := b.locker.(BesideLockReader).ReadBesideLock(ctx, c.Name)
	if err != nil {
		return StoredSecret{}, &besideLockError{Connection: c.Name, Err: err}
	}
	if raw == nil {
		return StoredSecret{}, fmt.Errorf("access token of %q beside its lock: %w", c.Name, ErrSecretNotFound)
	}
	a, err := b.openAccess(ctx, c.Name, raw)
	if err != nil {
		b.log.Warn("the access token kept beside the lock cannot be opened; refreshing instead", "event", "persist.access_token_unreadable",
			"connection", c.Name, "secret", WriteAheadKeySecret, "error", err.Error())
		return StoredSecret{}, fmt.Errorf("access token of %q beside its lock: %w", c.Name, ErrSecretNotFound)
	}
	if a == nil || a.AccessToken == "" {
		return StoredSecret{}, fmt.Errorf("access token of %q beside its lock: %w", c.Name, ErrSecretNotFound)
	}
	// Registered as the store would have (redact.Store) under the
	// secret's name: a newer token supersedes the old one.
	b.remember(c.Secrets.AccessToken, a.AccessToken)
	return StoredSecret{Value: Secret(a.AccessToken), ExpiresOn: a.ExpiresOn, UpdatedOn: a.IssuedOn, IssuedOn: a.IssuedOn, Lifetime: a.Lifetime}, nil
}

// besideLockStatus is what the status reads beside c's lock when access
// tokens are kept there: the access token's expiry and issue time (zero
// when there is none this instance can open), and whether the content is
// a pending write-ahead record, from one Get Blob, the request
// WriteAheadChecker's check would have made. The token itself is not
// kept, nor registered: the status never shows it.
func (b *Broker) besideLockStatus(ctx context.Context, st *connState) (access SecretInfo, pending bool, err error) {
	c := &st.conn
	raw, err := b.locker.(BesideLockReader).ReadBesideLock(ctx, c.Name)
	if err != nil {
		return SecretInfo{}, false, &besideLockError{Connection: c.Name, Err: err}
	}
	access.Name = c.Secrets.AccessToken
	if raw == nil {
		return access, false, nil
	}
	pending = !isAccessRecord(raw)
	if a, err := b.openAccess(ctx, c.Name, raw); err == nil && a != nil && a.AccessToken != "" {
		access.ExpiresOn, access.UpdatedOn = a.ExpiresOn, a.IssuedOn
	}
	return access, pending, nil
}

// openAccess opens what is kept beside a lock (openAccessRecord) with
// this broker's key.
func (b *Broker) openAccess(ctx context.Context, connection string, raw []byte) (*accessRecord, error) {
	return openAccessRecord(b.key(ctx), connection, raw)
}

// openAccessRecord opens an access-token record, or the access token a
// write-ahead record carries (nil when it has none).
func openAccessRecord(key []byte, connection string, raw []byte) (*accessRecord, error) {
	if !isAccessRecord(raw) {
		rec, err := openRecord(key, connection, raw)
		return rec.Access, err
	}
	plain, err := openSealed(key, accessMagic, connection, raw)
	if err != nil {
		return nil, err
	}
	var a accessRecord
	if err := json.Unmarshal(plain, &a); err != nil {
		return nil, &RecordError{Connection: connection, Reason: "malformed"}
	}
	return &a, nil
}

// besideLockError is a failure to read what is kept beside a lock.
type besideLockError struct {
	Connection string
	Err        error
}

func (e *besideLockError) Error() string {
	return fmt.Sprintf("reading the access token kept beside the lock of %q: %v", e.Connection, e.Err)
}

func (e *besideLockError) Unwrap() error { return e.Err }

// accessReadError is how step 3 reports a failed read of the shared
// access token.
func (b *Broker) accessReadError(st *connState, err error) *Error {
	var be *besideLockError
	if errors.As(err, &be) {
		return failureError(CategoryLockUnavailable, &st.conn,
			"the access token kept beside the lock could not be read", err)
	}
	return storeError(st.conn.Name, "read", st.conn.Secrets.AccessToken, err)
}

// remember registers a secret read outside the store with the redactor
// (Options.Remember).
func (b *Broker) remember(name, value string) {
	if b.rememberSecret != nil {
		b.rememberSecret(name, value)
	}
}

// vaultWritesPerRefresh is how many store writes the sweep holds budget
// for before it refreshes c: writesPerRefresh, less the access token when
// it is kept beside the lock. With access tokens beside the lock the
// store's list says nothing of their expiry, so a connection whose token
// this instance has not read yet (a cold start) looks due; the flight
// reads the lock blob first and usually finds the token fresh. The sweep
// holds no budget for such a connection: a refresh that does follow still
// waits for the pacer's bucket at its write (keyvault.Pacer.Set), and the
// cohort of a cold start is not held back by writes it never makes.
func (b *Broker) vaultWritesPerRefresh(c *Connection) int {
	n := writesPerRefresh(c)
	if !b.besideLock {
		return n
	}
	if st, ok := b.conns.Load().byName[c.Name]; ok && st.cached.Load() == nil {
		return 0
	}
	return n - 1
}

// SealAccessToken seals an access-token record of connection as the
// broker keeps it beside the lock (Options.AccessTokensBesideLock), under
// key (the write-ahead key). For tools and simulations that seed or
// inspect a lock store; the broker itself seals in persist.
func SealAccessToken(key []byte, connection string, at AccessToken, issued time.Time) ([]byte, error) {
	plain, err := json.Marshal(accessRecord{AccessToken: at.Value.Reveal(), TokenType: at.TokenType, ExpiresOn: at.Expiry, IssuedOn: issued,
		Lifetime: at.Expiry.Sub(issued)}) // #nosec G117 -- sealed with AES-GCM just below
	if err != nil {
		return nil, err
	}
	return seal(key, accessMagic, connection, tokenHash{}, plain)
}

// OpenAccessToken opens what the broker keeps beside connection's lock:
// an access-token record, or the access token a pending write-ahead
// record carries. ok is false when raw holds none (a write-ahead record
// without one); errors are *RecordError.
func OpenAccessToken(key []byte, connection string, raw []byte) (at AccessToken, ok bool, err error) {
	a, err := openAccessRecord(key, connection, raw)
	if err != nil || a == nil || a.AccessToken == "" {
		return at, false, err
	}
	return AccessToken{Value: Secret(a.AccessToken), TokenType: a.TokenType, Expiry: a.ExpiresOn}, true, nil
}
