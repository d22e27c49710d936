package broker_test

// Tests that drive one interleaving each, through gates in the doubles
// below (a lock that can be lost or expire on demand and holds its
// Release, a grant and a store that call back at a chosen point), never
// through sleeps.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// gatedLocker wraps a real locker. Each lock it hands out can be lost
// (Lost closed, as a lease whose renewal was refused) or expire (Held
// false while Lost is still open, as a lease whose renewal is late to
// notice) on demand, and calls afterRelease once its real lock is
// released.
type gatedLocker struct {
	broker.Locker
	mu           sync.Mutex
	locks        []*gatedLock
	afterRelease func(n int) // n counts the locks handed out, from 1
}

type gatedLock struct {
	broker.Lock
	l       *gatedLocker
	n       int
	lost    chan struct{}
	once    sync.Once
	expired atomic.Bool
}

func (l *gatedLocker) Lock(ctx context.Context, name string) (broker.Lock, error) {
	k, err := l.Locker.Lock(ctx, name)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	g := &gatedLock{Lock: k, l: l, n: len(l.locks) + 1, lost: make(chan struct{})}
	l.locks = append(l.locks, g)
	return g, nil
}

// latest is the lock handed out last.
func (l *gatedLocker) latest() *gatedLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.locks[len(l.locks)-1]
}

func (g *gatedLock) Lost() <-chan struct{} { return g.lost }

func (g *gatedLock) Held() bool {
	select {
	case <-g.lost:
		return false
	default:
	}
	return !g.expired.Load() && g.Lock.Held()
}

func (g *gatedLock) lose()   { g.once.Do(func() { close(g.lost) }) }
func (g *gatedLock) expire() { g.expired.Store(true) }

func (g *gatedLock) Release(ctx context.Context) error {
	err := g.Lock.Release(ctx)
	if f := g.l.afterRelease; f != nil {
		f(g.n)
	}
	return err
}

// gatedGrant wraps a grant and calls after once each token request has
// been answered, before the broker sees the answer.
type gatedGrant struct {
	broker.Grant
	calls atomic.Int64
	after func(n int64)
}

func (g *gatedGrant) Token(ctx context.Context, c *broker.Connection, cred broker.Credentials) (*broker.Token, error) {
	tok, err := g.Grant.Token(ctx, c, cred)
	if n := g.calls.Add(1); g.after != nil {
		g.after(n)
	}
	return tok, err
}

// gatedStore wraps a store and calls beforeGet before each read, and
// beforeSet before each write, afterSet after it.
type gatedStore struct {
	broker.SecretStore
	beforeGet func(name string)
	beforeSet func(name string)
	afterSet  func(name string)
}

func (s *gatedStore) Set(ctx context.Context, name string, v broker.StoredSecret) error {
	if s.beforeSet != nil {
		s.beforeSet(name)
	}
	err := s.SecretStore.Set(ctx, name, v)
	if s.afterSet != nil {
		s.afterSet(name)
	}
	return err
}

func (s *gatedStore) Get(ctx context.Context, name string) (broker.StoredSecret, error) {
	if s.beforeGet != nil {
		s.beforeGet(name)
	}
	return s.SecretStore.Get(ctx, name)
}

// TestNoRedemptionWithoutTheLock (issue 15, defect 1): no refresh token is
// sent to the provider unless the lock is held at that moment, on the
// first request and on the retry after a race alike. A lease lost at the
// gate may already be another instance's, redeeming the same token.
func TestNoRedemptionWithoutTheLock(t *testing.T) {
	tests := []struct {
		name string
		// replaced: the broker first reads a refresh token an operator has
		// just replaced, so the provider answers invalid_grant and the
		// broker retries with the store's current one.
		replaced bool
		// gate runs at the named point with the flight's lock.
		atRefreshTokenRead func(*gatedLock)
		afterFirstRequest  func(*gatedLock)
		wantRequests       int64
	}{
		{name: "lease expires while the refresh token is read; Lost not yet closed",
			atRefreshTokenRead: (*gatedLock).expire, wantRequests: 0},
		{name: "lease lost while the refresh token is read",
			atRefreshTokenRead: (*gatedLock).lose, wantRequests: 0},
		{name: "lease lost during the request that met invalid_grant: no retry",
			replaced: true, afterFirstRequest: (*gatedLock).lose, wantRequests: 1},
		{name: "lease expires during the request that met invalid_grant: no retry",
			replaced: true, afterFirstRequest: (*gatedLock).expire, wantRequests: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testprovider.Config{Rotate: true})
			c := e.conn("xero", broker.GrantRefreshToken)
			e.seed(c)
			locker := &gatedLocker{Locker: e.locker}
			var armed atomic.Bool
			armed.Store(true)
			store := &gatedStore{SecretStore: e.store, beforeGet: func(name string) {
				if name == c.Secrets.RefreshToken && tt.atRefreshTokenRead != nil && armed.CompareAndSwap(true, false) {
					tt.atRefreshTokenRead(locker.latest())
				}
			}}
			var grant *gatedGrant
			b := e.broker([]broker.Connection{c}, func(o *broker.Options) {
				o.Locker, o.Store = locker, store
				grant = &gatedGrant{Grant: o.Grant, after: func(n int64) {
					if n == 1 && tt.afterFirstRequest != nil {
						tt.afterFirstRequest(locker.latest())
					}
				}}
				o.Grant = grant
			})
			if tt.replaced {
				e.store.mu.Lock()
				e.store.staleName, e.store.stale = c.Secrets.RefreshToken, "replaced-refresh-token"
				e.store.mu.Unlock()
			}
			ctx := context.Background()
			_, err := b.Token(ctx, "xero", 0)
			if code(err) != broker.CodeUnavailable {
				t.Fatalf("got %v, want unavailable: the lock was not held", err)
			}
			if got := e.provider.Stats().TokenRequests; int64(got) != tt.wantRequests {
				t.Fatalf("%d token requests, want %d: a refresh token was sent without the lock", got, tt.wantRequests)
			}
			// The next caller, under a lock held again, is served.
			if _, err := b.Token(ctx, "xero", 0); err != nil {
				t.Fatalf("the next call: %v", err)
			}
			if st := e.provider.Stats(); st.ReuseDetected != 0 {
				t.Fatalf("provider stats %+v: a refresh token was reused", st)
			}
		})
	}
}

// TestFailureIsRecordedBeforeTheLockGoes (issue 15, defect 2): a flight
// that fails under the lock records its failure before it releases the
// lock. At the gate, right after the release, an operator's forced refresh
// takes the lock and succeeds; the failure must not then land on top of
// that success.
func TestFailureIsRecordedBeforeTheLockGoes(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	locker := &gatedLocker{Locker: e.locker}
	var armed atomic.Bool
	armed.Store(true)
	store := &gatedStore{SecretStore: e.store, beforeGet: func(name string) {
		if name == c.Secrets.RefreshToken && armed.CompareAndSwap(true, false) {
			locker.latest().lose() // the first flight fails: its lease is lost
		}
	}}
	var b *broker.Broker
	var forced error
	locker.afterRelease = func(n int) {
		if n == 1 {
			_, forced = b.ForceRefresh(context.Background(), "xero")
		}
	}
	b = e.broker([]broker.Connection{c}, func(o *broker.Options) { o.Locker, o.Store = locker, store })
	ctx := context.Background()
	if _, err := b.Token(ctx, "xero", 0); code(err) != broker.CodeUnavailable {
		t.Fatalf("first flight: %v, want unavailable", err)
	}
	if forced != nil {
		t.Fatalf("the forced refresh at the gate: %v", forced)
	}
	st, _ := b.ConnectionStatus(ctx, "xero")
	if st.State != broker.StateHealthy || st.LastError != nil {
		t.Fatalf("status after a failure then a success: %s, last error %+v; want healthy: the failure was recorded after the lock went", st.State, st.LastError)
	}
}

// TestCloseWaitsForEveryRefreshItLetStart (issue 15, defect 3): Close does
// not return while a refresh it let start still writes to the store, be it
// a flight or the sweep moving a write-ahead record into the store, and a
// Close whose context ends first says how many are still under way.
func TestCloseWaitsForEveryRefreshItLetStart(t *testing.T) {
	tests := []struct {
		name string
		// start sets the world up and starts the refresh whose write to
		// secret(c) the gate holds.
		secret func(c broker.Connection) string
		start  func(t *testing.T, c broker.Connection, b *broker.Broker) (done <-chan struct{})
	}{
		{"a flight writing the access token",
			func(c broker.Connection) string { return c.Secrets.AccessToken },
			func(t *testing.T, c broker.Connection, b *broker.Broker) <-chan struct{} {
				done := make(chan struct{})
				go func() {
					defer close(done)
					if _, err := b.Token(context.Background(), c.Name, 0); err != nil {
						t.Errorf("the flight Close waited for: %v", err)
					}
				}()
				return done
			}},
		{"the sweep moving a write-ahead record into the store",
			func(c broker.Connection) string { return c.Secrets.RefreshToken },
			func(t *testing.T, c broker.Connection, b *broker.Broker) <-chan struct{} {
				done := make(chan struct{})
				go func() {
					defer close(done)
					b.Sweep(context.Background(), 0)
				}()
				return done
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testprovider.Config{Rotate: true})
			c := e.conn("xero", broker.GrantRefreshToken)
			c.KeepWarm = false
			e.seed(c)
			// A write-ahead record for the sweep to move: the store
			// refused the rotated refresh token once.
			recover := e.failRefreshTokenWrites(c)
			if _, err := e.broker([]broker.Connection{c}).Token(context.Background(), c.Name, 0); err != nil {
				t.Fatal(err)
			}
			recover()
			e.clock.Advance(2 * time.Hour)

			entered, open := make(chan struct{}), make(chan struct{})
			var written atomic.Bool
			var once sync.Once
			store := &gatedStore{SecretStore: e.store,
				beforeSet: func(name string) {
					if name == tt.secret(c) {
						once.Do(func() { close(entered); <-open })
					}
				},
				afterSet: func(name string) {
					if name == tt.secret(c) {
						written.Store(true)
					}
				}}
			b, err := broker.New(broker.Options{Store: store, Locker: e.locker, Connections: []broker.Connection{c},
				Grant: oauth.New(oauth.Options{Now: e.clock.Now}), Now: e.clock.Now, WriteAheadKey: testKey, StoreRetryDelay: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			done := tt.start(t, c, b)
			<-entered

			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			var ce *broker.CloseError
			if err := b.Close(ctx); !errors.As(err, &ce) || ce.Running != 1 || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Close with a refresh held at the gate = %v; want a *CloseError with 1 running", err)
			}
			closed := make(chan error, 1)
			go func() { closed <- b.Close(context.Background()) }()
			close(open)
			if err := <-closed; err != nil {
				t.Fatal(err)
			}
			if !written.Load() {
				t.Fatal("Close returned before the store write it let start had finished")
			}
			<-done
		})
	}
}

// writeClockStore records its own write time as UpdatedOn, as Key Vault
// does, whatever the broker passed.
type writeClockStore struct {
	broker.SecretStore
	now func() time.Time
	// strip drops what the store would keep besides (the issue time and
	// lifetime), as a token written by an older handler has none.
	strip func(*broker.StoredSecret)
}

func (s *writeClockStore) Set(ctx context.Context, name string, v broker.StoredSecret) error {
	v.UpdatedOn = s.now()
	if s.strip != nil {
		s.strip(&v)
	}
	return s.SecretStore.Set(ctx, name, v)
}

// TestLifetimeIsNeverInferredToRefuse (issue 15, defect 4): the store
// wrote the access token 40 s after the provider issued it (a write
// retried through an outage), so its write time says the token lives
// 4m20s, not 5m. A new instance must not refuse a minValidity that a
// fresh token satisfies on that figure: it judges by the lifetime stored
// with the token, and where none was stored, it refreshes.
func TestLifetimeIsNeverInferredToRefuse(t *testing.T) {
	tests := []struct {
		name        string
		strip       func(*broker.StoredSecret)
		minValidity time.Duration
		wantCode    broker.ErrorCode
		wantCalls   int
	}{
		{"lifetime stored: a request a fresh token meets is refreshed for", nil, 4*time.Minute + 25*time.Second, "", 2},
		{"lifetime stored, served from the store", nil, 4*time.Minute + 10*time.Second, "", 1},
		{"lifetime stored: a request beyond it is refused without a refresh", nil, 4*time.Minute + 40*time.Second, broker.CodeBadRequest, 1},
		{"no lifetime stored: refresh, never refuse by the write time", func(v *broker.StoredSecret) { v.IssuedOn, v.Lifetime = time.Time{}, 0 },
			4*time.Minute + 25*time.Second, "", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testprovider.Config{Rotate: true, AccessTokenLifetime: 5 * time.Minute})
			c := e.conn("sage", broker.GrantRefreshToken)
			c.RefreshBefore = time.Minute
			e.seed(c)
			var once sync.Once
			late := &gatedStore{SecretStore: &writeClockStore{SecretStore: e.store, now: e.clock.Now, strip: tt.strip},
				beforeSet: func(name string) {
					if name == c.Secrets.AccessToken {
						once.Do(func() { e.clock.Advance(40 * time.Second) }) // the write lands late
					}
				}}
			ctx := context.Background()
			if _, err := e.broker([]broker.Connection{c}, func(o *broker.Options) { o.Store = late }).Token(ctx, c.Name, 0); err != nil {
				t.Fatal(err)
			}
			fresh := e.broker([]broker.Connection{c}, func(o *broker.Options) { o.Store = late })
			_, err := fresh.Token(ctx, c.Name, tt.minValidity)
			if code(err) != tt.wantCode {
				t.Fatalf("minValidity %v: got %v, want code %q", tt.minValidity, err, tt.wantCode)
			}
			if n := e.provider.Stats().TokenRequests; n != tt.wantCalls {
				t.Fatalf("%d token requests, want %d", n, tt.wantCalls)
			}
		})
	}
}
