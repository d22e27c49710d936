// Package broker hands out current access tokens for configured OAuth2
// connections, refreshing each at most once however many callers and
// instances ask at the same time.
//
// The refresh protocol (DESIGN.md) lives here:
//
//  1. A token in this instance's memory that is valid long enough is served
//     with no I/O.
//  2. One flight per connection per instance (singleflight).
//  3. The store's access token, if valid long enough, is served.
//  4. The connection's lock is taken; waiters give up at Options.LockWait.
//  5. The store is read again under the lock: another instance may have
//     refreshed.
//  6. The token endpoint is called once.
//  7. The rotated refresh token is made durable before anything else: the
//     write-ahead record beside the lock first, then the store; then the
//     access token. Nothing waits in memory for a later write: the host
//     ends workers with SIGKILL (see writeahead.go). If the store refuses,
//     the record keeps the token until the next refresh or the sweep moves
//     it into the store; if neither accepts it, the caller is answered 503.
//  8. The lock is released and the token served.
//
// The broker knows nothing of HTTP, Azure or the file system: it works
// through the SecretStore, Locker and Grant interfaces.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Defaults for Options.
const (
	DefaultLockWait        = 30 * time.Second
	DefaultFailureCooldown = 5 * time.Minute
	DefaultRefreshTimeout  = 2 * time.Minute
	// MaxMinValidity bounds what a caller may ask for: no provider issues
	// tokens that live longer, and a larger value is a units mistake.
	MaxMinValidity = 24 * time.Hour
)

// Options configure a Broker. Store, Locker and Grant are required.
type Options struct {
	Store  SecretStore
	Locker Locker
	Grant  Grant
	// Connections are the configured connections; names must be unique.
	Connections []Connection

	// LockWait is how long a refresh waits for another instance's refresh
	// before answering CodeUnavailable. It stays below ADF's 60 s Web
	// activity timeout so the pipeline sees our error, not a timeout.
	LockWait time.Duration
	// FailureCooldown is how long a permanent provider failure is answered
	// from its record instead of calling the provider again with the same
	// credentials. Changing a credential in the store ends it at once.
	FailureCooldown time.Duration
	// RefreshTimeout bounds one whole refresh (lock wait, provider call,
	// persisting). It runs detached from the caller: a caller that gives up
	// does not abort a refresh half way.
	RefreshTimeout time.Duration
	// StoreRetries is how many times a store write is tried while the
	// lock is held before a rotated refresh token is left in the
	// write-ahead record alone. Default 3.
	StoreRetries int
	// StoreRetryDelay is the first delay between store write attempts; it
	// doubles each time. Default 200ms.
	StoreRetryDelay time.Duration
	// WriteAheadKey seals write-ahead records (StoredKey in production).
	// Nil means no record is written: a rotated refresh token goes to the
	// store alone, and is lost if the store refuses it.
	WriteAheadKey KeySource
	// AccessTokensBesideLock keeps each connection's shared access token
	// beside its lock (sealed under WriteAheadKey) instead of in the
	// store: one store write per rotating refresh, none per other refresh
	// (besidelock.go). It needs a Locker that is a BesideLockReader and
	// whose locks are AccessTokenLogs, and a WriteAheadKey.
	AccessTokensBesideLock bool
	// Remember, when set, is told every secret the broker reads from
	// somewhere other than Store (an access token kept beside the lock),
	// under the secret's name, for the redactor (redact.Redactor.Remember).
	Remember func(name, value string)
	// ForceRefreshInterval is how often ForceRefresh may run per
	// connection (DefaultForceRefreshInterval when zero).
	ForceRefreshInterval time.Duration

	// Instance names this instance in the status kept beside each lock
	// (the Functions host's WEBSITE_INSTANCE_ID, or host name and pid).
	Instance string

	// Observer is told of tokens served, refreshes, token-endpoint calls,
	// lock waits and store failures, for metrics (observer.go). Nil means
	// nobody is told.
	Observer Observer

	Logger *slog.Logger
	Now    func() time.Time
}

// AccessToken is a token handed to a caller.
type AccessToken struct {
	Value     Secret
	TokenType string
	Expiry    time.Time
}

// Broker hands out access tokens. It is safe for concurrent use.
type Broker struct {
	// conns is the current connection set, swapped whole by
	// SetConnections; the hot path loads it without a lock.
	conns atomic.Pointer[connSet]
	// setMu serialises SetConnections, so that two swaps do not both
	// build on the same old set.
	setMu    sync.Mutex
	store    SecretStore
	locker   Locker
	grant    Grant
	flights  singleflight.Group
	log      *slog.Logger
	now      func() time.Time
	instance string
	walKey   KeySource
	observe  Observer
	// besideLock and rememberSecret are Options.AccessTokensBesideLock and
	// Options.Remember.
	besideLock     bool
	rememberSecret func(name, value string)
	// sweeps is what sweeps remember between runs (sweep.go).
	sweeps sweepState
	// creds holds client secrets and ids read from the store (credcache.go).
	creds credCache

	lockWait        time.Duration
	failureCooldown time.Duration
	refreshTimeout  time.Duration
	storeRetries    int
	storeRetryDelay time.Duration
	forceInterval   time.Duration

	// base is cancelled by Close after every flight has finished.
	base    context.Context
	stop    context.CancelFunc
	running running // what Close waits for (close.go)
}

// connSet is one version of the connection set. It is never written after
// it is published: SetConnections publishes a new one.
type connSet struct {
	byName map[string]*connState
	// list is the configuration's order.
	list []*connState
}

// flightSeq numbers connStates, so that each has flight keys of its own.
var flightSeq atomic.Uint64

// connState is the per-instance state of one connection. It lives as long
// as the connection is configured unchanged, and after that as long as a
// flight of it runs.
type connState struct {
	conn Connection
	// flightKey names this state's refresh flight: the connection's name
	// and a sequence number, so that after SetConnections changed the
	// connection its callers never join a flight of the old configuration.
	flightKey string

	// cached is the newest access token this instance knows.
	cached atomic.Pointer[cachedToken]

	mu          sync.Mutex
	failure     *failureRecord
	lastRefresh time.Time
	// lastRefreshTook is how long the refresh of lastRefresh took.
	lastRefreshTook time.Duration
	lastError       *Error
	lastErrorAt     time.Time
	lastForced      time.Time
	// secretWarned is, per client secret name, one more than the expiry
	// threshold (30, 14, 7 or 0 days) last logged, zero when none was:
	// each threshold is logged once per secret, not on every sweep.
	secretWarned map[string]int
	refreshes    int
	// workingSecret names the client secret the provider last accepted,
	// tried first (clientsecrets.go); per process.
	workingSecret string

	// gate ties redemptions to the invocations waiting for them
	// (redemption.go).
	gate invocationGate
}

// New returns a Broker for the given connections.
func New(o Options) (*Broker, error) {
	if o.Store == nil || o.Locker == nil || o.Grant == nil {
		return nil, errors.New("broker: Store, Locker and Grant are required")
	}
	if o.AccessTokensBesideLock {
		if _, ok := o.Locker.(BesideLockReader); !ok || o.WriteAheadKey == nil {
			return nil, fmt.Errorf("broker: access tokens kept beside the lock need a locker that keeps records beside its locks (the blob lease) and a write-ahead key; %T is not one", o.Locker)
		}
	}
	b := &Broker{
		store:           o.Store,
		locker:          o.Locker,
		grant:           o.Grant,
		log:             o.Logger,
		now:             o.Now,
		instance:        o.Instance,
		walKey:          o.WriteAheadKey,
		lockWait:        o.LockWait,
		failureCooldown: o.FailureCooldown,
		refreshTimeout:  o.RefreshTimeout,
		storeRetries:    o.StoreRetries,
		storeRetryDelay: o.StoreRetryDelay,
		forceInterval:   o.ForceRefreshInterval,
		observe:         o.Observer,
		besideLock:      o.AccessTokensBesideLock,
		rememberSecret:  o.Remember,
	}
	if b.observe == nil {
		b.observe = noObserver{}
	}
	if b.forceInterval <= 0 {
		b.forceInterval = DefaultForceRefreshInterval
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.lockWait <= 0 {
		b.lockWait = DefaultLockWait
	}
	if b.failureCooldown <= 0 {
		b.failureCooldown = DefaultFailureCooldown
	}
	if b.refreshTimeout <= 0 {
		b.refreshTimeout = DefaultRefreshTimeout
	}
	if b.storeRetries <= 0 {
		b.storeRetries = 3
	}
	if b.storeRetryDelay <= 0 {
		b.storeRetryDelay = 200 * time.Millisecond
	}
	set, err := newConnSet(o.Connections, nil)
	if err != nil {
		return nil, err
	}
	b.conns.Store(set)
	b.base, b.stop = context.WithCancel(context.Background())
	return b, nil
}

// newConnSet builds the set of conns. A connection that old holds with the
// same configuration keeps its state there (cached token, failure record,
// standby, counters); any other gets a fresh one.
func newConnSet(conns []Connection, old *connSet) (*connSet, error) {
	set := &connSet{byName: make(map[string]*connState, len(conns)), list: make([]*connState, 0, len(conns))}
	for _, c := range conns {
		if _, dup := set.byName[c.Name]; dup {
			return nil, fmt.Errorf("broker: connection %q is configured twice", c.Name)
		}
		st := old.unchanged(c)
		if st == nil {
			st = &connState{conn: c, flightKey: c.Name + "\x00" + strconv.FormatUint(flightSeq.Add(1), 10)}
		}
		set.byName[c.Name] = st
		set.list = append(set.list, st)
	}
	return set, nil
}

// unchanged returns the state of c in s if s holds c with the same
// configuration, nil otherwise (and for a nil s).
func (s *connSet) unchanged(c Connection) *connState {
	if s == nil {
		return nil
	}
	st, ok := s.byName[c.Name]
	if !ok || !reflect.DeepEqual(st.conn, c) {
		return nil
	}
	return st
}

// SetConnections replaces the connection set, as a changed connections
// file asks. A connection configured as before keeps its state: its cached
// token, failure record, standby and counters. A changed one starts afresh,
// as at New. A removed one is answered CodeNotFound from now on; a refresh
// of it already under way finishes (its flight holds its state) and its
// callers get that answer. The sweep and the status use the set current
// when they start. Names must be unique; on an error nothing changes.
func (b *Broker) SetConnections(conns []Connection) error {
	b.setMu.Lock()
	defer b.setMu.Unlock()
	set, err := newConnSet(conns, b.conns.Load())
	if err != nil {
		return err
	}
	b.conns.Store(set)
	return nil
}

// lookup returns the named connection's state in the current set.
func (b *Broker) lookup(name string) (*connState, bool) {
	st, ok := b.conns.Load().byName[name]
	return st, ok
}

// connList returns the current set's states in configuration order; the
// caller must not change the slice.
func (b *Broker) connList() []*connState { return b.conns.Load().list }

// Store returns the secret store the broker reads and writes: the consent
// flow stores a newly consented refresh token there, where the next
// refresh finds it.
func (b *Broker) Store() SecretStore { return b.store }

// Connection returns the named connection's configuration.
func (b *Broker) Connection(name string) (Connection, bool) {
	st, ok := b.lookup(name)
	if !ok {
		return Connection{}, false
	}
	return st.conn, true
}

// AllowedCallers returns the named connection's allowedCallers, and whether
// the connection is configured: what the token route checks on every call,
// without the copy of the whole Connection (440 bytes) that Connection
// makes.
func (b *Broker) AllowedCallers(name string) ([]string, bool) {
	st, ok := b.lookup(name)
	if !ok {
		return nil, false
	}
	return st.conn.AllowedCallers, true
}

// Token returns an access token for the named connection that stays valid
// for at least minValidity, and at least the connection's refresh margin.
// Errors are *Error.
func (b *Broker) Token(ctx context.Context, name string, minValidity time.Duration) (AccessToken, error) {
	st, ok := b.lookup(name)
	if !ok {
		return AccessToken{}, &Error{
			Code:        CodeNotFound,
			Connection:  name,
			Message:     fmt.Sprintf("no connection is named %q", name),
			Remediation: "Check the connection name in the pipeline's URL against the connections file (GET /api/connections lists them).",
		}
	}
	if minValidity < 0 || minValidity > MaxMinValidity {
		return AccessToken{}, &Error{
			Code:        CodeBadRequest,
			Connection:  name,
			Message:     fmt.Sprintf("minValidity must be between 0 and %d seconds", int(MaxMinValidity/time.Second)),
			Remediation: "Pass minValidity in seconds, e.g. ?minValidity=600 for a token valid ten more minutes.",
		}
	}
	return b.token(ctx, st, want{minValidity: minValidity})
}

// DefaultForceRefreshInterval is how often an operator may force a
// connection's refresh: often enough to retry after fixing a credential,
// rarely enough that a script in a loop cannot lock the account at the
// provider (AADSTS50053).
const DefaultForceRefreshInterval = time.Minute

// ForceRefresh refreshes the named connection now, however valid its token,
// after clearing any recorded failure: what an operator does after storing
// a new refresh token or client secret. It is rate-limited per connection
// (CodeTooManyRequests). It returns the connection's status afterwards.
func (b *Broker) ForceRefresh(ctx context.Context, name string) (ConnectionStatus, error) {
	st, ok := b.lookup(name)
	if !ok {
		return ConnectionStatus{}, &Error{Code: CodeNotFound, Connection: name, Message: fmt.Sprintf("no connection is named %q", name),
			Remediation: "GET /api/connections lists the configured connections."}
	}
	now := b.now()
	st.mu.Lock()
	if wait := st.lastForced.Add(b.forceInterval).Sub(now); !st.lastForced.IsZero() && wait > 0 {
		st.mu.Unlock()
		return ConnectionStatus{}, &Error{Code: CodeTooManyRequests, Connection: name, RetryAfter: wait,
			Message:     fmt.Sprintf("a refresh of %q was forced less than %s ago", name, b.forceInterval),
			Remediation: fmt.Sprintf("Wait %d seconds; repeated attempts with bad credentials can lock the account at the provider.", int(wait.Seconds()+0.999))}
	}
	st.lastForced = now
	st.failure = nil
	st.mu.Unlock()
	b.log.Info("refresh forced by an operator", "event", "token.force_refresh", "connection", name)
	_, err := b.refreshNow(ctx, st, now)
	cs := b.status(ctx, st)
	if err != nil {
		return cs, asError(name, err)
	}
	return cs, nil
}

// refreshNow runs a flight that refreshes st unless some instance has
// refreshed it at or after since.
func (b *Broker) refreshNow(ctx context.Context, st *connState, since time.Time) (AccessToken, error) {
	r, ok := b.join(ctx, st, st.flightKey+"\x00force", want{refreshedSince: since})
	if !ok {
		return AccessToken{}, &Error{Code: CodeUnavailable, Connection: st.conn.Name, RetryAfter: 5 * time.Second,
			Message:     "gave up waiting for the refresh: " + ctx.Err().Error(),
			Remediation: "The refresh goes on; check the connection's status in a minute."}
	}
	if r.Err != nil {
		return AccessToken{}, asError(st.conn.Name, r.Err)
	}
	return r.Val.(*cachedToken).token, nil
}
