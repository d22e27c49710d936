package broker

// The write-ahead record: where a rotated refresh token is made durable
// first, before the store and before any access token from its response is
// answered.
//
// The Functions host ends a worker with Process.Kill() (SIGKILL: no signal
// a process can catch, no grace), at every scale-in, deployment, restart
// and host recycle (azure-functions-host,
// src/WebJobs.Script/Workers/ProcessManagement/WorkerProcess.cs, Dispose).
// So a refresh token may never live only in this process's memory: the
// provider has spent the previous one, and a kill would lose the chain.
//
// Each rotation therefore goes:
//
//  1. the write-ahead record, beside the connection's lock and written
//     under it (the lock blob's content under the lease; locally one
//     fsync'd append to a journal file): the fastest durable write there
//     is;
//  2. the store (Key Vault, or the local store), retried while the lock is
//     held;
//  3. once the store has it, the record is cleared.
//
// If the store refuses, the record stays: the next refresh of the
// connection (which reads the record under the lock before redeeming) and
// the sweep move it into the store and clear it. Only when neither the
// record nor the store accepts the token is the caller answered 503, with
// an ERROR line saying the connection will need consent.
//
// A record names the store value it overrides (base): a hash prefix of the
// refresh token the store held when the record was written. Reading it
// under the lock:
//
//   - the store holds the record's token: the store caught up; the record
//     is cleared;
//   - the store holds the base: the record is the current refresh token;
//   - the store holds something else: someone stored a newer token (a
//     consent); the record is stale and cleared.
//
// Records are sealed with AES-256-GCM under a key from Options.
// WriteAheadKey (StoredKey: a secret in the store, so reading a record
// needs both the lock storage and the secret store, where a platform
// encryption at rest needs only the first). The header (magic, key id,
// base) is in the clear and authenticated; the refresh token is not.

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// WriteAheadLog is implemented by a Lock whose backend keeps one durable
// record beside the lock, which only the lock's holder writes and clears:
// the lock blob's content, written under the lease (bloblease), or a
// journal file beside the lock file (local). The broker uses it when the
// held lock implements it.
type WriteAheadLog interface {
	// WriteAhead replaces the record with rec and returns once rec is
	// durable: a later ReadWriteAhead, by any holder in any process,
	// returns it. It fails rather than write when the backend can tell
	// that the lock is no longer held.
	WriteAhead(ctx context.Context, rec []byte) error
	// ReadWriteAhead returns the record, or nil when there is none.
	ReadWriteAhead(ctx context.Context) ([]byte, error)
	// ClearWriteAhead removes the record; ReadWriteAhead returns nil
	// afterwards.
	ClearWriteAhead(ctx context.Context) error
}

// WriteAheadChecker is implemented by a Locker that can tell, without
// taking the lock, whether the named lock has a write-ahead record. The
// sweep uses it to find records to reconcile, status to report them.
type WriteAheadChecker interface {
	HasWriteAhead(ctx context.Context, name string) (bool, error)
}

// KeySource returns the AES-256 key (32 bytes) that seals write-ahead
// records. It is called before each redemption and must cache.
type KeySource func(ctx context.Context) ([]byte, error)

// WriteAheadKeySecret is the store secret StoredKey keeps the key in.
const WriteAheadKeySecret = "tokenrefresher-write-ahead-key"

// StoredKey is a KeySource on the secret store: it reads the key from
// WriteAheadKeySecret (a base64 string) the first time it is needed, and
// caches it for the life of the process. When the secret does not exist
// it creates a random key, under a lock of the same name so that two
// instances starting together do not each create their own (the loser's
// records would be sealed with a key nobody has). A failure is not
// cached: the next call tries again.
//
// Deleting or replacing the secret makes existing records unreadable; a
// connection whose current refresh token is in such a record answers 503
// until the key is restored (Key Vault keeps deleted secrets for the
// soft-delete period) or the connection is re-authorized.
func StoredKey(store SecretStore, locker Locker) KeySource {
	var mu sync.Mutex
	var key []byte
	return func(ctx context.Context) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		if key != nil {
			return key, nil
		}
		k, err := readKey(ctx, store)
		if errors.Is(err, ErrSecretNotFound) {
			k, err = createKey(ctx, store, locker)
		}
		if err != nil {
			return nil, err
		}
		key = k
		return k, nil
	}
}

func createKey(ctx context.Context, store SecretStore, locker Locker) ([]byte, error) {
	lock, err := locker.Lock(ctx, WriteAheadKeySecret)
	if err != nil {
		return nil, fmt.Errorf("write-ahead key: taking the lock to create it: %w", err)
	}
	defer func() { _ = lock.Release(context.WithoutCancel(ctx)) }()
	k, err := readKey(ctx, store)
	if !errors.Is(err, ErrSecretNotFound) {
		return k, err
	}
	k = make([]byte, 32)
	_, _ = rand.Read(k) // never fails (crypto/rand)
	if err := store.Set(ctx, WriteAheadKeySecret, StoredSecret{Value: Secret(base64.StdEncoding.EncodeToString(k)), UpdatedOn: time.Now()}); err != nil {
		return nil, fmt.Errorf("write-ahead key: creating secret %q: %w", WriteAheadKeySecret, err)
	}
	// Read back what the store holds, not what was sent: what every
	// other instance will read.
	return readKey(ctx, store)
}

func readKey(ctx context.Context, store SecretStore) ([]byte, error) {
	s, err := store.Get(ctx, WriteAheadKeySecret)
	if err != nil {
		return nil, fmt.Errorf("write-ahead key: reading secret %q: %w", WriteAheadKeySecret, err)
	}
	k, err := base64.StdEncoding.DecodeString(s.Value.Reveal())
	if err != nil || len(k) != 32 {
		return nil, fmt.Errorf("write-ahead key: secret %q is not 32 bytes in base64", WriteAheadKeySecret)
	}
	return k, nil
}

// Sealed record layout: magic | key id (8) | base (8) | nonce (12) |
// AES-GCM ciphertext and tag. The additional data is everything before the
// nonce plus the connection's name, so a record cannot be moved to another
// connection's lock.
var recordMagic = []byte("TRWAL1")

const (
	hashLen   = 8
	headerLen = 6 + 2*hashLen
)

// tokenHash is a prefix of a refresh token's SHA-256: enough to tell
// tokens apart, nothing to recover one from. The empty token hashes to
// zero.
type tokenHash [hashLen]byte

func hashToken(s Secret) tokenHash {
	var h tokenHash
	if s.IsZero() {
		return h
	}
	sum := sha256.Sum256([]byte(s.Reveal()))
	copy(h[:], sum[:])
	return h
}

// writeAheadRecord is the sealed part of a record.
type writeAheadRecord struct {
	RefreshToken string    `json:"refreshToken"`
	IssuedAt     time.Time `json:"issuedAt,omitzero"`
	Instance     string    `json:"instance,omitempty"`
	// Access is the access token of the same answer, when access tokens
	// are kept beside the lock (besidelock.go): readers serve it while the
	// record is pending, and settling the record keeps it.
	Access *accessRecord `json:"access,omitempty"`
}

// RecordError reports a write-ahead record that could not be opened. It
// never carries the record's content.
type RecordError struct {
	Connection string
	// Reason says what is wrong: "malformed", "sealed with another key",
	// "failed authentication", "no key".
	Reason string
	Err    error
}

func (e *RecordError) Error() string {
	s := fmt.Sprintf("write-ahead record of %q: %s", e.Connection, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *RecordError) Unwrap() error { return e.Err }

func keyID(key []byte) [hashLen]byte {
	var id [hashLen]byte
	sum := sha256.Sum256(append([]byte("tokenrefresher write-ahead key id\x00"), key...))
	copy(id[:], sum[:])
	return id
}

func sealRecord(key []byte, connection string, base tokenHash, rec writeAheadRecord) ([]byte, error) {
	plain, err := json.Marshal(rec) // #nosec G117 -- sealed with AES-GCM just below: the one place the token is meant to go
	if err != nil {
		return nil, err
	}
	return seal(key, recordMagic, connection, base, plain)
}

// seal is the sealed layout of both records kept beside a lock (this
// file's write-ahead record, besidelock.go's access-token record): magic,
// key id and base in the clear and authenticated, with the connection's
// name, as additional data; plain encrypted.
func seal(key, magic []byte, connection string, base tokenHash, plain []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	id := keyID(key)
	out := make([]byte, 0, headerLen+aead.NonceSize()+len(plain)+aead.Overhead())
	out = append(out, magic...)
	out = append(out, id[:]...)
	out = append(out, base[:]...)
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	ad := append(append([]byte{}, out...), connection...)
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plain, ad), nil
}

// recordBase reads the base from a record's clear header; ok is false for
// a record too malformed to have one.
func recordBase(raw []byte) (tokenHash, bool) {
	var h tokenHash
	if len(raw) < headerLen || !bytes.HasPrefix(raw, recordMagic) {
		return h, false
	}
	copy(h[:], raw[len(recordMagic)+hashLen:headerLen])
	return h, true
}

func openRecord(key []byte, connection string, raw []byte) (writeAheadRecord, error) {
	var rec writeAheadRecord
	plain, err := openSealed(key, recordMagic, connection, raw)
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(plain, &rec); err != nil || rec.RefreshToken == "" {
		return rec, &RecordError{Connection: connection, Reason: "malformed"}
	}
	return rec, nil
}

// openSealed checks and decrypts what seal made with magic; its errors
// are *RecordError.
func openSealed(key, magic []byte, connection string, raw []byte) ([]byte, error) {
	if len(raw) < headerLen || !bytes.HasPrefix(raw, magic) {
		return nil, &RecordError{Connection: connection, Reason: "malformed"}
	}
	if key == nil {
		return nil, &RecordError{Connection: connection, Reason: "no key"}
	}
	if id := keyID(key); !bytes.Equal(raw[len(magic):len(magic)+hashLen], id[:]) {
		return nil, &RecordError{Connection: connection, Reason: fmt.Sprintf("sealed with another key than the one in secret %q", WriteAheadKeySecret)}
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if len(raw) < headerLen+aead.NonceSize() {
		return nil, &RecordError{Connection: connection, Reason: "malformed"}
	}
	nonce := raw[headerLen : headerLen+aead.NonceSize()]
	ad := append(append([]byte{}, raw[:headerLen]...), connection...)
	plain, err := aead.Open(nil, nonce, raw[headerLen+aead.NonceSize():], ad)
	if err != nil {
		return nil, &RecordError{Connection: connection, Reason: "failed authentication (altered, or moved from another connection)"}
	}
	return plain, nil
}

// current is a connection's refresh token as read under its lock.
type current struct {
	cred Credentials
	// base is the hash of the refresh token the store holds: what a new
	// write-ahead record overrides.
	base tokenHash
	// fromRecord: cred.RefreshToken is the write-ahead record's and not
	// yet in the store.
	fromRecord bool
}

// key returns the write-ahead key, or nil (logged) when there is none:
// records are then neither written nor readable, and rotated tokens go to
// the store alone.
func (b *Broker) key(ctx context.Context) []byte {
	if b.walKey == nil {
		return nil
	}
	k, err := b.walKey(ctx)
	if err != nil {
		b.log.Warn("the write-ahead key is unavailable; a rotated refresh token goes to the store alone until it is", "event", "persist.key_unavailable",
			"secret", WriteAheadKeySecret, "error", err.Error())
		return nil
	}
	return k
}

// readCurrent settles which refresh token is current, under the lock:
// the store's, or the write-ahead record's. A current record is moved into
// the store on the way when the store takes it. cur holds what the store
// gave (cred.RefreshToken is the store's token).
func (b *Broker) readCurrent(ctx context.Context, st *connState, lock Lock, cur *current) error {
	c := &st.conn
	cur.base = hashToken(cur.cred.RefreshToken)
	wal, ok := lock.(WriteAheadLog)
	if !ok || c.Grant != GrantRefreshToken {
		return nil
	}
	raw, err := wal.ReadWriteAhead(ctx)
	if err != nil {
		return failureError(CategoryLockUnavailable, c,
			"the write-ahead record beside the lock could not be read, and it may hold the current refresh token; nothing was redeemed", err)
	}
	if raw == nil || isAccessRecord(raw) {
		// Nothing, or the access token kept beside the lock
		// (besidelock.go): no refresh token is waiting.
		return nil
	}
	base, wellFormed := recordBase(raw)
	rec, oerr := openRecord(b.key(ctx), c.Name, raw)
	switch {
	case oerr == nil && Secret(rec.RefreshToken) == cur.cred.RefreshToken:
		// The store caught up; only the clearing was missing.
		b.settleRecord(ctx, c, lock, wal, rec.Access)
		return nil
	case !wellFormed || base != cur.base:
		// Malformed, or written over a store value that has since been
		// replaced (a consent stored a new refresh token): stale.
		b.log.Warn("discarding a stale write-ahead record: the store's refresh token changed after it was written", "event", "persist.record_stale",
			"connection", c.Name)
		b.clearRecord(ctx, c, wal)
		return nil
	case oerr != nil:
		b.log.Error("the write-ahead record holds this connection's current refresh token but cannot be opened; the connection needs the key restored or consent again",
			"event", "persist.record_unreadable", "connection", c.Name, "secret", WriteAheadKeySecret, "error", oerr.Error())
		return &Error{Code: CodeUnavailable, Connection: c.Name, RetryAfter: time.Minute,
			Message:     "the current refresh token is in the write-ahead record beside the lock, which cannot be opened: " + oerr.Error(),
			Remediation: fmt.Sprintf("Restore secret %q as it was (Key Vault: recover the deleted secret or its previous version), or re-authorize connection %q.", WriteAheadKeySecret, c.Name),
			Err:         oerr}
	}
	// The record is the current refresh token.
	cur.cred.RefreshToken = Secret(rec.RefreshToken)
	cur.fromRecord = true
	if b.moveToStore(ctx, st, lock, wal, cur.cred.RefreshToken, rec.IssuedAt, rec.Access) {
		cur.base = hashToken(cur.cred.RefreshToken)
		cur.fromRecord = false
	}
	return nil
}

// moveToStore writes a refresh token that is in the write-ahead record into
// the store and settles the record (settleRecord: access, the record's
// access token, is kept beside the lock in its place when access tokens
// are kept there). It reports whether the store took it.
func (b *Broker) moveToStore(ctx context.Context, st *connState, lock Lock, wal WriteAheadLog, rt Secret, issued time.Time, access *accessRecord) bool {
	c := &st.conn
	err := b.retryStore(ctx, lock, func(ctx context.Context) error {
		return b.store.Set(ctx, c.Secrets.RefreshToken, StoredSecret{Value: rt, UpdatedOn: issued})
	})
	if err != nil {
		b.log.Warn("the store still refuses the refresh token held in the write-ahead record; it stays there", "event", "persist.pending",
			"connection", c.Name, "secret", c.Secrets.RefreshToken, "error", err.Error())
		return false
	}
	b.settleRecord(ctx, c, lock, wal, access)
	b.log.Info("refresh token moved from the write-ahead record into the store", "event", "persist.recovered", "connection", c.Name)
	return true
}

func (b *Broker) clearRecord(ctx context.Context, c *Connection, wal WriteAheadLog) {
	if err := wal.ClearWriteAhead(ctx); err != nil {
		// Harmless: the next holder finds the store holding the record's
		// token and clears it then.
		b.log.Warn("could not clear the write-ahead record", "event", "persist.clear_failed", "connection", c.Name, "error", err.Error())
	}
}

// keepRefreshToken makes rt, just issued in exchange for the token cur
// names, durable: the write-ahead record first, then the store. The
// record is the first thing done with the answer: the window in which a
// kill loses the chain ends when it returns (redemption.go). pending
// reports that only the record has it. An error means neither accepted
// it: the refresh token is lost with this process, and the error is what
// the caller is answered.
func (b *Broker) keepRefreshToken(ctx context.Context, st *connState, lock Lock, cur current, rt Secret, issued time.Time) (pending bool, err error) {
	pending, _, err = b.keepRotated(ctx, st, lock, cur, rt, issued, nil)
	return pending, err
}

// keepRotated is keepRefreshToken, with access (when access tokens are
// kept beside the lock) in the record too: settling the record keeps it
// there (accessKept), with no store write for it.
func (b *Broker) keepRotated(ctx context.Context, st *connState, lock Lock, cur current, rt Secret, issued time.Time, access *accessRecord) (pending, accessKept bool, err error) {
	c := &st.conn
	wal, _ := lock.(WriteAheadLog)
	inRecord := false
	if wal != nil {
		if key := b.key(ctx); key != nil {
			var raw []byte
			raw, err = sealRecord(key, c.Name, cur.base, writeAheadRecord{RefreshToken: rt.Reveal(), IssuedAt: issued, Instance: b.instance, Access: access})
			if err == nil {
				err = wal.WriteAhead(ctx, raw)
			}
			if err != nil {
				b.log.Warn("could not write the write-ahead record; writing the rotated refresh token to the store alone", "event", "persist.record_failed",
					"connection", c.Name, "error", err.Error())
			}
			inRecord = err == nil
		}
	}
	if inRecord {
		// Durable: an invocation that waited for this may end now.
		st.gate.durable()
	}
	serr := b.retryStore(ctx, lock, func(ctx context.Context) error {
		return b.store.Set(ctx, c.Secrets.RefreshToken, StoredSecret{Value: rt, UpdatedOn: issued})
	})
	if serr != nil {
		b.observe.StoreFailed(c.Name, "write")
	}
	switch {
	case serr == nil:
		if inRecord {
			// One request either way: the record is replaced by the
			// access token, or emptied.
			accessKept = b.settleRecord(ctx, c, lock, wal, access)
		}
		return false, accessKept, nil
	case inRecord:
		b.log.Warn("the store refused the rotated refresh token; it is kept in the write-ahead record beside the lock until the next refresh or sweep moves it into the store",
			"event", "persist.pending", "connection", c.Name, "secret", c.Secrets.RefreshToken, "error", serr.Error())
		return true, access != nil, nil
	}
	b.log.Error("the rotated refresh token could not be kept: neither the store nor the write-ahead record accepted it; the connection needs consent again unless the provider still accepts the previous refresh token",
		"event", "persist.lost", "connection", c.Name, "secret", c.Secrets.RefreshToken, "error", serr.Error())
	e := storeError(c.Name, "write", c.Secrets.RefreshToken, serr)
	e.Message = "the provider issued a new refresh token, but neither the secret store nor the write-ahead record beside the lock accepted it; it is lost"
	e.Remediation = fmt.Sprintf("Restore the secret store's and the lock storage's reachability, then re-authorize connection %q (or store a new refresh token in secret %q); a provider with a reuse grace may still accept the previous one. %s",
		c.Name, c.Secrets.RefreshToken, e.Remediation)
	e.RetryAfter = time.Minute
	return false, false, e
}

// reconcileWriteAhead moves every refresh token left in a write-ahead
// record into the store, for connections no caller has refreshed since the
// store refused it. The sweep calls it first.
func (b *Broker) reconcileWriteAhead(ctx context.Context) {
	chk, ok := b.locker.(WriteAheadChecker)
	if !ok {
		return
	}
	for _, st := range b.connList() {
		name := st.conn.Name
		if st.conn.Grant != GrantRefreshToken {
			continue
		}
		has, err := chk.HasWriteAhead(ctx, name)
		if err != nil {
			b.log.Warn("could not check for a write-ahead record", "event", "sweep.record_check_failed", "connection", name, "error", err.Error())
			continue
		}
		if has {
			b.reconcileOne(ctx, st)
		}
	}
}

func (b *Broker) reconcileOne(ctx context.Context, st *connState) {
	if !b.running.enter() {
		return // closing: the next sweep, on any instance, does it
	}
	defer b.running.leave()
	c := &st.conn
	lockCtx, cancel := context.WithTimeout(ctx, b.lockWait)
	lock, err := b.locker.Lock(lockCtx, c.Name)
	cancel()
	if err != nil {
		// A peer holds the lock: its refresh reads the record itself.
		return
	}
	defer b.release(c.Name, lock)
	var cur current
	s, err := b.store.Get(ctx, c.Secrets.RefreshToken)
	if err != nil && !errors.Is(err, ErrSecretNotFound) {
		b.log.Warn("could not read the store to reconcile a write-ahead record", "event", "persist.pending", "connection", c.Name, "error", err.Error())
		return
	}
	cur.cred.RefreshToken = s.Value
	if err := b.readCurrent(ctx, st, lock, &cur); err != nil {
		b.log.Warn("could not reconcile the write-ahead record", "event", "persist.pending", "connection", c.Name, "error", err.Error())
	}
}
