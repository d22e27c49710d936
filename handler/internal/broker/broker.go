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
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
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
	// ForceRefreshInterval is how often ForceRefresh may run per
	// connection (DefaultForceRefreshInterval when zero).
	ForceRefreshInterval time.Duration

	// Instance names this instance in the status kept beside each lock
	// (the Functions host's WEBSITE_INSTANCE_ID, or host name and pid).
	Instance string

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
	conns    map[string]*connState
	order    []string
	store    SecretStore
	locker   Locker
	grant    Grant
	flights  singleflight.Group
	log      *slog.Logger
	now      func() time.Time
	instance string
	walKey   KeySource
	// sweeps is what sweeps remember between runs (sweep.go).
	sweeps sweepState

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

// connState is the per-instance state of one connection. The connection
// set is fixed at New, so the map holding these is never written again and
// the hot path reads it without a lock.
type connState struct {
	conn Connection

	// cached is the newest access token this instance knows.
	cached atomic.Pointer[cachedToken]

	mu          sync.Mutex
	failure     *failureRecord
	lastRefresh time.Time
	lastError   *Error
	lastErrorAt time.Time
	lastForced  time.Time
	// secretWarned is one more than the client-secret expiry threshold
	// (30, 14, 7 or 0 days) last logged, zero when none was: each
	// threshold is logged once, not on every sweep.
	secretWarned int
	refreshes    int

	// gate ties redemptions to the invocations waiting for them
	// (redemption.go).
	gate invocationGate
}

type cachedToken struct {
	token AccessToken
	// lifetime is how long the provider made the token valid; zero when
	// unknown.
	lifetime time.Duration
	// inferred: lifetime is an estimate from when the store wrote the
	// token, not what the provider issued (a token stored without its
	// lifetime). A late write makes it too short, so it may shape margins
	// but never refuse a request (refuses).
	inferred bool
}

// refuses reports whether w asks more than any token of this one's
// provider can give, judged by a lifetime the provider stated: an
// inferred one refreshes instead.
func (ct *cachedToken) refuses(w want) bool {
	return !ct.inferred && w.impossible(ct.lifetime)
}

// failureRecord remembers a permanent provider failure and which
// credentials caused it, so the same credentials are not sent again during
// the cool-down (repeated bad attempts lock accounts: AADSTS50053).
type failureRecord struct {
	err   *Error
	at    time.Time
	until time.Time
	// fingerprint is set for permanent failures: new credentials end the
	// cool-down at once. A transient one (the provider asked us to wait
	// with Retry-After) holds whatever the credentials.
	fingerprint *[32]byte
}

// New returns a Broker for the given connections.
func New(o Options) (*Broker, error) {
	if o.Store == nil || o.Locker == nil || o.Grant == nil {
		return nil, errors.New("broker: Store, Locker and Grant are required")
	}
	b := &Broker{
		conns:           make(map[string]*connState, len(o.Connections)),
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
	for _, c := range o.Connections {
		if _, dup := b.conns[c.Name]; dup {
			return nil, fmt.Errorf("broker: connection %q is configured twice", c.Name)
		}
		b.conns[c.Name] = &connState{conn: c}
		b.order = append(b.order, c.Name)
	}
	b.base, b.stop = context.WithCancel(context.Background())
	return b, nil
}

// Store returns the secret store the broker reads and writes: the consent
// flow stores a newly consented refresh token there, where the next
// refresh finds it.
func (b *Broker) Store() SecretStore { return b.store }

// Connection returns the named connection's configuration.
func (b *Broker) Connection(name string) (Connection, bool) {
	st, ok := b.conns[name]
	if !ok {
		return Connection{}, false
	}
	return st.conn, true
}

// Token returns an access token for the named connection that stays valid
// for at least minValidity, and at least the connection's refresh margin.
// Errors are *Error.
func (b *Broker) Token(ctx context.Context, name string, minValidity time.Duration) (AccessToken, error) {
	st, ok := b.conns[name]
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
	st, ok := b.conns[name]
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
	r, ok := b.join(ctx, st, st.conn.Name+"\x00force", want{refreshedSince: since})
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

// want is what a request needs of a token.
type want struct {
	minValidity time.Duration
	// upToHalfLife is set by the sweep: its horizon may exceed what the
	// provider's tokens live, and half the lifetime then serves as well.
	upToHalfLife bool
	// refreshedSince, when set, asks for a token refreshed at or after it,
	// however valid the current one: an operator's force-refresh, or the
	// sweep keeping an idle refresh token alive. A refresh by another
	// instance since then counts.
	refreshedSince time.Time
}

// of returns the minValidity that applies to a token of the given lifetime.
func (w want) of(lifetime time.Duration) time.Duration {
	if w.upToHalfLife && lifetime > 0 {
		return min(w.minValidity, lifetime/2)
	}
	return w.minValidity
}

// impossible reports whether no token of the given lifetime can satisfy w.
func (w want) impossible(lifetime time.Duration) bool {
	return !w.upToHalfLife && w.minValidity > maxMinValidityFor(lifetime)
}

func (b *Broker) token(ctx context.Context, st *connState, w want) (AccessToken, error) {
	name := st.conn.Name
	// Fast path: no allocation, no lock. An impossible minValidity is
	// refused even when the cached token happens to satisfy it, so the
	// answer does not depend on timing.
	if ct := st.cached.Load(); ct != nil {
		if ct.refuses(w) {
			return AccessToken{}, lifetimeError(name, w.minValidity, ct.lifetime)
		}
		if ct.validFor(b.now(), st.need(w.of(ct.lifetime), ct.lifetime)) {
			return ct.token, nil
		}
	}

	// A flight serves everyone who asked while it ran. A caller wanting a
	// longer validity than the flight's starter may need one more flight.
	for range 2 {
		start := b.now()
		r, ok := b.join(ctx, st, name, w)
		if !ok {
			return AccessToken{}, &Error{
				Code:        CodeUnavailable,
				Connection:  name,
				Message:     "gave up waiting for the token refresh: " + ctx.Err().Error(),
				Remediation: "Retry; a refresh already under way finishes without this caller, and the next call is likely served from cache.",
				RetryAfter:  5 * time.Second,
			}
		}
		if r.Err != nil {
			return AccessToken{}, asError(name, r.Err)
		}
		ct := r.Val.(*cachedToken)
		now := b.now()
		if ct.validFor(now, st.need(w.of(ct.lifetime), ct.lifetime)) {
			return ct.token, nil
		}
		if ct.refuses(w) || (ct.lifetime > 0 && !ct.inferred && !ct.issuedBefore(start)) {
			// Freshly issued and still not enough: the margin plus the
			// caller's minValidity exceed what the provider grants.
			return AccessToken{}, lifetimeError(name, w.minValidity, ct.lifetime)
		}
	}
	return AccessToken{}, &Error{
		Code:        CodeUnavailable,
		Connection:  name,
		Message:     "could not obtain a token valid for the requested time",
		Remediation: "Retry, or ask for a smaller minValidity.",
		RetryAfter:  5 * time.Second,
	}
}

// maxMinValidityFor is the largest minValidity a token of the given
// lifetime can satisfy with room to spare: a fresh token has already lost
// the time the request and the store writes took, and a minValidity just
// under the lifetime would otherwise refresh on every call.
func maxMinValidityFor(lifetime time.Duration) time.Duration {
	if lifetime <= 0 {
		return MaxMinValidity
	}
	return lifetime - min(time.Minute, lifetime/10)
}

func lifetimeError(name string, minValidity, lifetime time.Duration) *Error {
	most := int(maxMinValidityFor(lifetime) / time.Second)
	return &Error{
		Code:       CodeBadRequest,
		Connection: name,
		Message: fmt.Sprintf("minValidity %ds is more than a token of this provider can offer: they live %ds, so at most %ds can be promised",
			int(minValidity/time.Second), int(lifetime/time.Second), most),
		Remediation: fmt.Sprintf("Ask for a minValidity of at most %d seconds.", most),
	}
}

// need is how long a token must stay valid to be served: the caller's
// minValidity, and at least the connection's refresh margin, which is
// capped at half the token's lifetime so short-lived tokens still serve
// most of their life.
func (st *connState) need(minValidity, lifetime time.Duration) time.Duration {
	margin := st.conn.RefreshBefore
	if lifetime > 0 && margin > lifetime/2 {
		margin = lifetime / 2
	}
	return max(margin, minValidity)
}

func (ct *cachedToken) validFor(now time.Time, need time.Duration) bool {
	return ct.token.Expiry.Sub(now) > need
}

func (ct *cachedToken) issuedBefore(t time.Time) bool {
	return ct.lifetime > 0 && ct.token.Expiry.Add(-ct.lifetime).Before(t)
}

// flight starts the refresh flight named key for st, or joins the one
// under way. Once Close has begun, no new flight starts.
func (b *Broker) flight(key string, st *connState, w want) <-chan singleflight.Result {
	return b.flights.DoChan(key, func() (any, error) {
		if !b.running.enter() {
			return nil, errClosing(st.conn.Name)
		}
		defer b.running.leave()
		return b.obtain(st, w)
	})
}

// obtain runs one flight: steps 3 to 8 of the protocol. It runs detached
// from any caller's context, bounded by RefreshTimeout.
func (b *Broker) obtain(st *connState, w want) (v any, err error) {
	defer func() {
		// singleflight.DoChan re-panics in a goroutine of its own, which
		// would take the process down with every caller.
		if p := recover(); p != nil {
			err = fmt.Errorf("panic during refresh: %v", p)
		}
	}()
	// Not derived from b.base: Close waits for flights instead of
	// cancelling them.
	ctx, cancel := context.WithTimeout(context.Background(), b.refreshTimeout)
	defer cancel()
	c := &st.conn
	// Lock and store trouble shows in status too, not only provider
	// failures. Under the lock it is noted before the release (below):
	// once the lock is gone, a peer's refresh may succeed under it, and a
	// later note would cover that success with this failure.
	noted := false
	note := func() {
		if !noted {
			noted = true
			b.noteUnavailable(st, err)
		}
	}
	defer note()

	// Step 3.
	if ct, ok, err := b.fromStore(ctx, st, w); err != nil {
		return nil, err
	} else if ok {
		return ct, nil
	}
	if err := b.checkCooldown(ctx, st); err != nil {
		return nil, err
	}

	// Step 4.
	lockCtx, cancelLock := context.WithTimeout(ctx, b.lockWait)
	lock, err := b.locker.Lock(lockCtx, c.Name)
	cancelLock()
	switch {
	case errors.Is(err, ErrLockTimeout):
		// A peer held the lock all along; it has probably refreshed.
		if ct, ok, rerr := b.fromStore(ctx, st, w); rerr == nil && ok {
			return ct, nil
		}
		b.log.Warn("lock wait timed out", "event", "lock.timeout", "connection", c.Name, "waited", b.lockWait.String())
		return nil, &Error{
			Code:        CodeUnavailable,
			Connection:  c.Name,
			Message:     fmt.Sprintf("another instance has been refreshing this connection for over %s", b.lockWait),
			Remediation: "Retry in a few seconds; if this repeats, the provider is slow or an instance is stuck (see the logs for lock.timeout).",
			RetryAfter:  10 * time.Second,
			Err:         err,
		}
	case err != nil && c.Grant == GrantClientCredentials:
		// Without the lock, two instances may both fetch a token; for
		// client credentials that costs one extra call and breaks nothing.
		b.log.Warn("lock unavailable; fetching client-credentials token without it", "event", "lock.unavailable", "connection", c.Name, "error", err.Error())
		lock = nil
	case err != nil:
		return nil, &Error{
			Code:        CodeUnavailable,
			Connection:  c.Name,
			Message:     "the refresh lock could not be taken, and a rotating refresh token is never redeemed without it",
			Remediation: "Check that the lock storage (AzureWebJobsStorage, or the local state directory) is reachable; retry afterwards.",
			RetryAfter:  15 * time.Second,
			Err:         err,
		}
	}
	if lock != nil {
		defer func() {
			note()
			b.release(c.Name, lock)
		}()
	}

	// Step 5.
	if ct, ok, err := b.fromStore(ctx, st, w); err != nil {
		return nil, err
	} else if ok {
		return ct, nil
	}

	var cur current
	if cur.cred, err = b.credentials(ctx, st); err != nil {
		return nil, err
	}
	// The write-ahead record, when there is one, may hold a newer refresh
	// token than the store: read it before redeeming.
	if err := b.readCurrent(ctx, st, lock, &cur); err != nil {
		return nil, err
	}
	// A promotion of the standby interrupted before it emptied the
	// standby: finish it before the promoted token is redeemed (standby.go).
	b.finishPromotion(ctx, st, lock, cur.cred.RefreshToken)
	cred := cur.cred
	if lock != nil {
		select {
		case <-lock.Lost():
			return nil, &Error{
				Code:        CodeUnavailable,
				Connection:  c.Name,
				Message:     "the refresh lock was lost before the provider was called; nothing was redeemed",
				Remediation: "Retry; if this repeats, the lock storage is slow or unreachable.",
				RetryAfter:  5 * time.Second,
			}
		default:
		}
	}

	// Step 6, inside an invocation and under a redemption mark
	// (redemption.go).
	if c.Grant == GrantRefreshToken && lock != nil {
		if !st.gate.begin() {
			return nil, errNoCaller(c.Name)
		}
		defer st.gate.durable()
	}
	guard := b.beginRedemption(ctx, st, lock, cur)
	defer func() { guard.settle(ctx, b, c.Name, err) }()
	tok, err := b.redeem(ctx, st, lock, cred) // checks the lock is held now
	if err != nil {
		tok, cur, err = b.retryAfterRace(ctx, st, lock, cur, err)
		cred = cur.cred
	}
	if err != nil && st.conn.Standby {
		// The primary family is lost: the standby grant replaces it and
		// the caller is served (standby.go).
		tok, cur, err = b.promoteStandby(ctx, st, lock, cur, err)
		cred = cur.cred
	}
	if err != nil {
		var pe *ProviderError
		if errors.As(err, &pe) && !pe.IssuedRefreshToken.IsZero() && pe.IssuedRefreshToken != cred.RefreshToken {
			// An error that came with a new refresh token: the provider
			// rotated it all the same. Its loss is logged there.
			_, _ = b.keepRefreshToken(ctx, st, lock, cur, pe.IssuedRefreshToken, b.now())
		}
		failure := b.providerFailure(ctx, st, cred, err)
		failure = b.explainInterrupted(st, guard, err, failure)
		b.recordShared(ctx, st, lock, err)
		return nil, failure
	}

	// Step 7.
	ct, err := b.persist(ctx, st, lock, cur, tok)
	if err != nil {
		st.mu.Lock()
		st.lastError, st.lastErrorAt = asError(c.Name, err), b.now()
		st.mu.Unlock()
		b.recordShared(ctx, st, lock, err)
		return nil, err
	}
	b.recordShared(ctx, st, lock, nil)
	// Step 8 is the deferred release.
	return ct, nil
}

// fromStore reads the access token from the store and caches it. ok is
// false when the store has none valid for w. A w that no token of this
// provider can satisfy is an error here already, before any refresh.
func (b *Broker) fromStore(ctx context.Context, st *connState, w want) (*cachedToken, bool, error) {
	s, err := b.store.Get(ctx, st.conn.Secrets.AccessToken)
	if errors.Is(err, ErrSecretNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, storeError(st.conn.Name, "read", st.conn.Secrets.AccessToken, err)
	}
	if s.Value.IsZero() || s.ExpiresOn.IsZero() {
		return nil, false, nil
	}
	ct := storedToken(s.Value, s.ExpiresOn, s.UpdatedOn)
	if s.Lifetime > 0 {
		// Recorded at issue (persist): the provider's figure, however
		// late the store wrote it.
		ct.lifetime, ct.inferred = s.Lifetime, false
	}
	st.remember(ct)
	if since := w.refreshedSince; !since.IsZero() {
		// Every refresh writes the access token, so its write time is
		// when the connection was last refreshed, by any instance. Key
		// Vault keeps whole seconds; compare at the store's precision.
		if s.UpdatedOn.Nanosecond() == 0 {
			since = since.Truncate(time.Second)
		}
		return ct, !s.UpdatedOn.IsZero() && !s.UpdatedOn.Before(since), nil
	}
	if ct.refuses(w) {
		return nil, false, lifetimeError(st.conn.Name, w.minValidity, ct.lifetime)
	}
	return ct, ct.validFor(b.now(), st.need(w.of(ct.lifetime), ct.lifetime)), nil
}

// storedToken is an access token as the store keeps it, its lifetime
// inferred from when the store wrote it. That is when it was issued only
// if the write was prompt (Key Vault records its own write time, and a
// write retried through an outage lands late), so the figure is marked
// inferred; fromStore replaces it with the lifetime recorded at issue
// when the store kept one.
func storedToken(value Secret, expires, updated time.Time) *cachedToken {
	ct := &cachedToken{token: AccessToken{Value: value, TokenType: "Bearer", Expiry: expires}}
	if !updated.IsZero() && expires.After(updated) {
		ct.lifetime, ct.inferred = expires.Sub(updated), true
	}
	return ct
}

// remember caches ct unless a token that lives longer is already cached.
func (st *connState) remember(ct *cachedToken) {
	for {
		old := st.cached.Load()
		if old != nil && !old.token.Expiry.Before(ct.token.Expiry) {
			return
		}
		if st.cached.CompareAndSwap(old, ct) {
			return
		}
	}
}

// credentials reads what the grant needs from the store. Under the lock,
// readCurrent then settles whether the write-ahead record holds a newer
// refresh token.
func (b *Broker) credentials(ctx context.Context, st *connState) (Credentials, error) {
	c := &st.conn
	var cred Credentials
	cred.ClientID = c.ClientID
	if cred.ClientID == "" {
		s, err := b.readRequired(ctx, c, c.Secrets.ClientID, "client id")
		if err != nil {
			return cred, err
		}
		cred.ClientID = s.Reveal()
	}
	s, err := b.readRequired(ctx, c, c.Secrets.ClientSecret, "client secret")
	if err != nil {
		return cred, err
	}
	cred.ClientSecret = s
	if c.Grant == GrantRefreshToken {
		s, err := b.readRequired(ctx, c, c.Secrets.RefreshToken, "refresh token")
		if err != nil {
			return cred, err
		}
		cred.RefreshToken = s
	}
	return cred, nil
}

func (b *Broker) readRequired(ctx context.Context, c *Connection, secret, what string) (Secret, error) {
	s, err := b.store.Get(ctx, secret)
	if errors.Is(err, ErrSecretNotFound) || (err == nil && s.Value.IsZero()) {
		return "", &Error{
			Code:        CodeRejected,
			Connection:  c.Name,
			Message:     fmt.Sprintf("the %s is missing: secret %q does not exist or is empty", what, secret),
			Remediation: fmt.Sprintf("Store the %s in secret %q (Key Vault: az keyvault secret set --name %s; locally: handler secret set %s).", what, secret, secret, secret),
			Err:         err,
		}
	}
	if err != nil {
		return "", storeError(c.Name, "read", secret, err)
	}
	return s.Value, nil
}

// retryAfterRace handles invalid_grant on a refresh: if the store now holds
// a different refresh token than the one sent (an operator stored a new
// one, or a peer rotated it while our lock was lost), the grant is not dead;
// try once more with the current one.
func (b *Broker) retryAfterRace(ctx context.Context, st *connState, lock Lock, sent current, err error) (*Token, current, error) {
	var pe *ProviderError
	if st.conn.Grant != GrantRefreshToken || !errors.As(err, &pe) || pe.Code != "invalid_grant" {
		return nil, sent, err
	}
	if sent.fromRecord {
		// The store's token is older than the one just refused: it was
		// redeemed to obtain the record's, and sending it would be reuse.
		return nil, sent, err
	}
	s, gerr := b.store.Get(ctx, st.conn.Secrets.RefreshToken)
	if gerr != nil || s.Value.IsZero() || s.Value == sent.cred.RefreshToken {
		return nil, sent, err
	}
	b.log.Info("refresh token changed in the store after invalid_grant; retrying with the current one",
		"event", "refresh.race_recovered", "connection", st.conn.Name)
	cur := sent
	cur.cred.RefreshToken = s.Value
	cur.base = hashToken(s.Value)
	// The lock may have been lost while the first request ran: a peer
	// may be redeeming this very token.
	tok, err := b.redeem(ctx, st, lock, cur.cred)
	return tok, cur, err
}

// persist makes the new refresh token durable (keepRefreshToken), then
// writes the access token and caches the result. An error means the
// rotated refresh token could not be kept anywhere; the access token is
// then not handed out either (the caller is answered 503, and told the
// connection will need consent).
func (b *Broker) persist(ctx context.Context, st *connState, lock Lock, cur current, tok *Token) (*cachedToken, error) {
	c := &st.conn
	now := b.now()
	issued := tok.IssuedAt
	if issued.IsZero() {
		issued = now
	}
	ct := &cachedToken{
		token:    AccessToken{Value: tok.AccessToken, TokenType: tok.TokenType, Expiry: tok.Expiry},
		lifetime: tok.Expiry.Sub(issued),
	}
	if ct.token.TokenType == "" {
		ct.token.TokenType = "Bearer"
	}
	rotated := !tok.RefreshToken.IsZero() && tok.RefreshToken != cur.cred.RefreshToken
	pending := false
	switch {
	case rotated:
		var err error
		if pending, err = b.keepRefreshToken(ctx, st, lock, cur, tok.RefreshToken, issued); err != nil {
			return nil, err
		}
	case cur.fromRecord:
		// The answer did not rotate: the token just redeemed stays
		// current, and is so far only in the write-ahead record (durable
		// there). Try the store again while the lock is held.
		pending = !b.moveToStore(ctx, st, lock, lock.(WriteAheadLog), cur.cred.RefreshToken, issued)
	}
	if !pending {
		err := b.retryStore(ctx, lock, func(ctx context.Context) error {
			return b.store.Set(ctx, c.Secrets.AccessToken, StoredSecret{Value: tok.AccessToken, ExpiresOn: tok.Expiry, UpdatedOn: issued,
				IssuedOn: issued, Lifetime: ct.lifetime})
		})
		if err != nil {
			// Not fatal: this instance serves from memory; another one will
			// refresh with the persisted refresh token.
			b.log.Warn("could not persist the access token", "event", "persist.access_token_failed",
				"connection", c.Name, "secret", c.Secrets.AccessToken, "error", err.Error())
		}
	}
	st.remember(ct)
	st.mu.Lock()
	st.failure = nil
	st.lastError = nil
	st.lastRefresh = now
	st.refreshes++
	st.mu.Unlock()
	b.log.Info("token refreshed", "event", "token.refreshed", "connection", c.Name,
		"expires_on", tok.Expiry.UTC().Format(time.RFC3339), "rotated", rotated, "persist_pending", pending)
	return ct, nil
}

// recordShared writes the outcome of a refresh beside the lock, while it is
// still held, so every instance's status shows it. A failure to record is
// logged and otherwise ignored: the status is a report, not the protocol.
func (b *Broker) recordShared(ctx context.Context, st *connState, lock Lock, failure error) {
	rec, ok := lock.(StatusRecorder)
	if !ok {
		return
	}
	now := b.now()
	s := SharedStatus{Instance: b.instance, RecordedOn: now, LastRefresh: now}
	if failure != nil {
		// Failures count across instances, so read what the last holder
		// recorded; only failing refreshes pay for the read.
		var prev SharedStatus
		if r, ok := b.locker.(StatusReader); ok {
			prev, _ = r.ReadStatus(ctx, st.conn.Name)
		}
		s.LastRefresh = prev.LastRefresh
		s.Failures = prev.Failures + 1
		s.LastError = failureCategory(failure)
	}
	if err := rec.RecordStatus(ctx, s); err != nil {
		b.log.Warn("could not record the refresh status beside the lock", "event", "status.record_failed",
			"connection", st.conn.Name, "error", err.Error())
	}
}

// failureCategory names a failure in one word: its diagnosed category,
// else the provider's RFC 6749 error code, else the broker's own code.
func failureCategory(err error) string {
	var pe *ProviderError
	if errors.As(err, &pe) && pe.Category != "" {
		return pe.Category
	}
	if errors.As(err, &pe) && pe.Code != "" {
		return pe.Code
	}
	if errors.As(err, &pe) {
		return string(CodeProviderFailed)
	}
	var e *Error
	if errors.As(err, &e) {
		return string(e.Code)
	}
	return string(CodeInternal)
}

func (b *Broker) release(name string, lock Lock) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(b.base), 10*time.Second)
	defer cancel()
	if err := lock.Release(ctx); err != nil {
		// The lease expires by itself; say so rather than fail the caller.
		b.log.Warn("could not release the refresh lock; it expires by itself", "event", "lock.release_failed", "connection", name, "error", err.Error())
	}
}

// retryStore runs a store write with bounded retries and doubling delays,
// retrying only while lock (when not nil) is held: once another instance
// may hold it, a late write could replace a newer token.
func (b *Broker) retryStore(ctx context.Context, lock Lock, write func(context.Context) error) error {
	delay := b.storeRetryDelay
	var lost <-chan struct{}
	if lock != nil {
		lost = lock.Lost()
	}
	var err error
	for attempt := 0; attempt < b.storeRetries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return errors.Join(err, ctx.Err())
			case <-lost:
				return errors.Join(err, ErrLockLost)
			case <-time.After(jitter(delay)):
			}
			delay *= 2
		}
		if err = write(ctx); err == nil {
			return nil
		}
	}
	return err
}

// jitter spreads d by ±25% so instances that failed together do not retry
// together.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d*3/4 + rand.N(d/2+1) // #nosec G404 -- jitter that spreads retries and polls; nothing depends on it being unpredictable
}

// remediator is implemented by store errors that know the fix (a Key
// Vault role to grant, a deleted secret to recover).
type remediator interface{ Remediation() string }

func storeError(connection, op, secret string, err error) *Error {
	e := &Error{
		Code:        CodeUnavailable,
		Connection:  connection,
		Message:     fmt.Sprintf("could not %s secret %q in the secret store", op, secret),
		Remediation: "Check that the store (Key Vault, or the local state directory) is reachable and that this app may read and write its secrets; retry afterwards.",
		RetryAfter:  10 * time.Second,
		Err:         err,
	}
	var r remediator
	if errors.As(err, &r) && r.Remediation() != "" {
		e.Remediation = strings.TrimSuffix(r.Remediation(), ".") + "."
	}
	return e
}

// fingerprint identifies the credentials a failure was seen with, without
// keeping a second copy of them.
func fingerprint(cred Credentials) [32]byte {
	h := sha256.New()
	for _, s := range []string{cred.ClientID, cred.ClientSecret.Reveal(), cred.RefreshToken.Reveal()} {
		fmt.Fprintf(h, "%d:%s;", len(s), s)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// checkCooldown answers a recent failure from its record: a permanent one
// unless the credentials in the store changed since, a transient one until
// the provider's Retry-After has passed.
func (b *Broker) checkCooldown(ctx context.Context, st *connState) error {
	st.mu.Lock()
	rec := st.failure
	st.mu.Unlock()
	now := b.now()
	if rec == nil || !now.Before(rec.until) {
		return nil
	}
	if rec.fingerprint != nil {
		cred, err := b.credentials(ctx, st)
		if err != nil {
			return err
		}
		if fingerprint(cred) != *rec.fingerprint {
			return nil
		}
	}
	e := *rec.err
	e.Message += fmt.Sprintf(" (recorded %s ago; the provider is not called again",
		now.Sub(rec.at).Round(time.Second))
	if rec.fingerprint != nil {
		e.Message += " with the same credentials"
	}
	e.Message += " until " + rec.until.UTC().Format(time.RFC3339) + ")"
	if e.RetryAfter > 0 {
		e.RetryAfter = rec.until.Sub(now)
	}
	return &e
}

// providerFailure turns a grant failure into the caller's Error, recording
// permanent ones.
func (b *Broker) providerFailure(ctx context.Context, st *connState, cred Credentials, err error) error {
	c := &st.conn
	var pe *ProviderError
	if !errors.As(err, &pe) {
		return asError(c.Name, err)
	}
	var e *Error
	if pe.Permanent {
		e = &Error{
			Code:        CodeRejected,
			Connection:  c.Name,
			Message:     fmt.Sprintf("the provider (%s) rejected the request: %s", c.Provider, describe(pe)),
			Remediation: remediation(c, pe),
			Category:    pe.Category,
			Err:         err,
		}
		fp := fingerprint(cred)
		now := b.now()
		st.mu.Lock()
		st.failure = &failureRecord{err: e, at: now, until: now.Add(b.failureCooldown), fingerprint: &fp}
		st.mu.Unlock()
	} else {
		e = &Error{
			Code:        CodeProviderFailed,
			Connection:  c.Name,
			Message:     fmt.Sprintf("the provider (%s) failed: %s", c.Provider, describe(pe)),
			Remediation: "Retry later; this is the provider's side. If it lasts, check the provider's status page.",
			RetryAfter:  max(pe.RetryAfter, 30*time.Second),
			Category:    pe.Category,
			Err:         err,
		}
		if pe.Remediation != "" {
			e.Remediation = pe.Remediation
		}
		if pe.RetryAfter > 0 {
			now := b.now()
			st.mu.Lock()
			st.failure = &failureRecord{err: e, at: now, until: now.Add(min(pe.RetryAfter, b.failureCooldown))}
			st.mu.Unlock()
		}
	}
	st.mu.Lock()
	st.lastError = e
	st.lastErrorAt = b.now()
	st.mu.Unlock()
	b.log.Error("token refresh failed", "event", "token.refresh_failed", "connection", c.Name,
		"status", pe.StatusCode, "provider_error", pe.Code, "aadsts", pe.AADSTS, "category", pe.Category,
		"permanent", pe.Permanent, "description", pe.Description, "remediation", e.Remediation)
	return e
}

func describe(pe *ProviderError) string {
	head := ""
	if pe.StatusCode != 0 {
		head = fmt.Sprintf("HTTP %d", pe.StatusCode)
	}
	if pe.Code != "" {
		head = strings.TrimSpace(head + " " + pe.Code)
	}
	tail := pe.Description
	if tail == "" && pe.Err != nil {
		// The cause's text may carry the token URL or a body; it goes
		// to the logs, not to callers.
		tail = "no response (see the handler's logs)"
	}
	switch {
	case head != "" && tail != "":
		return head + ": " + tail
	case head+tail != "":
		return head + tail
	}
	return "no usable answer"
}

func remediation(c *Connection, pe *ProviderError) string {
	if pe.Remediation != "" {
		return pe.Remediation
	}
	switch pe.Code {
	case "invalid_grant":
		if c.Grant == GrantRefreshToken {
			return fmt.Sprintf("The refresh token is no longer valid (expired, revoked, or already used). Re-authorize the connection %q and store the new refresh token in secret %q.", c.Name, c.Secrets.RefreshToken)
		}
		return fmt.Sprintf("The provider refused the grant for %q; check the client's permissions at the provider.", c.Name)
	case "invalid_client", "unauthorized_client":
		return fmt.Sprintf("The provider does not accept the client credentials of %q: check the client id and the client secret in secret %q (it may have expired), and that clientAuth (%s) is what the provider expects.", c.Name, c.Secrets.ClientSecret, c.AuthStyle)
	case "invalid_scope":
		return fmt.Sprintf("Fix the scopes of connection %q in the connections file: the provider does not grant them.", c.Name)
	default:
		return fmt.Sprintf("Fix the configuration of connection %q (token URL, grant, params) to match what the provider expects.", c.Name)
	}
}
