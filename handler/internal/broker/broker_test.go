package broker_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testclock"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

const (
	clientID     = "test-client"
	clientSecret = "test-client-secret-value"
)

func newClock() *testclock.Clock { return testclock.New(time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)) }

// countingStore wraps a real store, counts calls and fails on demand.
type countingStore struct {
	broker.SecretStore
	gets, sets atomic.Int64
	// failSets is how many Set calls still fail; with failOnly set, only
	// writes of that secret count and fail.
	failSets atomic.Int64
	failOnly atomic.Pointer[string]
	// down makes every call fail while true.
	down atomic.Bool
	// stale, when set, is returned once by the next Get of staleName.
	mu        sync.Mutex
	staleName string
	stale     broker.Secret
}

var errStoreDown = errors.New("store unreachable (injected)")

func (s *countingStore) Get(ctx context.Context, name string) (broker.StoredSecret, error) {
	s.gets.Add(1)
	if s.down.Load() {
		return broker.StoredSecret{}, errStoreDown
	}
	s.mu.Lock()
	if s.staleName == name {
		v := s.stale
		s.staleName, s.stale = "", ""
		s.mu.Unlock()
		return broker.StoredSecret{Value: v}, nil
	}
	s.mu.Unlock()
	return s.SecretStore.Get(ctx, name)
}

func (s *countingStore) Set(ctx context.Context, name string, v broker.StoredSecret) error {
	s.sets.Add(1)
	if s.down.Load() {
		return errStoreDown
	}
	if only := s.failOnly.Load(); only != nil && *only != name {
		return s.SecretStore.Set(ctx, name, v)
	}
	if s.failSets.Load() > 0 && s.failSets.Add(-1) >= 0 {
		return errStoreDown
	}
	return s.SecretStore.Set(ctx, name, v)
}

// env is one test world: a strict provider, a store and lock in a temp
// directory, and a clock.
type env struct {
	t        testing.TB
	clock    *testclock.Clock
	provider *testprovider.Provider
	url      string
	dir      string
	store    *countingStore
	locker   broker.Locker
}

func newEnv(t testing.TB, pc testprovider.Config) *env {
	t.Helper()
	e := &env{t: t, clock: newClock(), dir: t.TempDir()}
	pc.ClientID, pc.ClientSecret = clientID, clientSecret
	if pc.AuthStyle == "" {
		pc.AuthStyle = broker.AuthBasic
	}
	pc.Now = e.clock.Now
	e.provider = testprovider.New(pc)
	srv := httptest.NewServer(e.provider)
	t.Cleanup(srv.Close)
	e.url = srv.URL + "/token"
	st, err := local.NewStore(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	e.store = &countingStore{SecretStore: st}
	lk, err := local.NewLocker(e.dir, local.LockerOptions{PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.locker = lk
	return e
}

func (e *env) conn(name string, grant broker.GrantType) broker.Connection {
	return broker.Connection{
		Name:            name,
		Provider:        "test",
		Grant:           grant,
		TokenURL:        e.url,
		AuthStyle:       broker.AuthBasic,
		ClientID:        clientID,
		Secrets:         broker.DefaultSecretNames(name),
		Rotating:        grant == broker.GrantRefreshToken,
		RefreshBefore:   5 * time.Minute,
		DefaultLifetime: time.Hour,
		KeepWarm:        true,
	}
}

// seed stores the client secret and, for refresh-token connections, a
// refresh token of a new chain at the provider.
func (e *env) seed(c broker.Connection) {
	e.t.Helper()
	ctx := context.Background()
	if err := e.store.SecretStore.Set(ctx, c.Secrets.ClientSecret, broker.StoredSecret{Value: clientSecret}); err != nil {
		e.t.Fatal(err)
	}
	if c.Grant == broker.GrantRefreshToken {
		rt := e.provider.IssueRefreshToken()
		if err := e.store.SecretStore.Set(ctx, c.Secrets.RefreshToken, broker.StoredSecret{Value: broker.Secret(rt)}); err != nil {
			e.t.Fatal(err)
		}
	}
}

type brokerOption func(*broker.Options)

func (e *env) broker(conns []broker.Connection, opts ...brokerOption) *broker.Broker {
	e.t.Helper()
	o := broker.Options{
		Store:           e.store,
		Locker:          e.locker,
		Grant:           oauth.New(oauth.Options{Now: e.clock.Now, Timeout: 5 * time.Second, AttemptTimeout: 2 * time.Second}),
		Connections:     conns,
		LockWait:        2 * time.Second,
		StoreRetryDelay: time.Millisecond,
		Now:             e.clock.Now,
		WriteAheadKey:   testKey,
	}
	for _, f := range opts {
		f(&o)
	}
	b, err := broker.New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

func (e *env) storedRefreshToken(c broker.Connection) broker.Secret {
	e.t.Helper()
	s, err := e.store.SecretStore.Get(context.Background(), c.Secrets.RefreshToken)
	if err != nil {
		e.t.Fatal(err)
	}
	return s.Value
}

func code(err error) broker.ErrorCode {
	var e *broker.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func TestConcurrentCallersCauseOneRefresh(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true, AccessTokenLifetime: 30 * time.Minute})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	b := e.broker([]broker.Connection{c})

	const callers = 200
	var wg sync.WaitGroup
	tokens := make([]broker.AccessToken, callers)
	errs := make([]error, callers)
	start := make(chan struct{})
	for i := range callers {
		wg.Go(func() {
			<-start
			tokens[i], errs[i] = b.Token(context.Background(), "xero", 0)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
		if tokens[i].Value != tokens[0].Value {
			t.Fatalf("caller %d got a different token", i)
		}
	}
	if !e.provider.ValidAccessToken(tokens[0].Value.Reveal()) {
		t.Fatal("the token served is not one the provider accepts")
	}
	st := e.provider.Stats()
	if st.TokenRequests != 1 || st.Rejected != 0 {
		t.Fatalf("provider saw %d token requests (%d rejected), want exactly 1 (0)", st.TokenRequests, st.Rejected)
	}
}

func TestCacheThenStoreThenRefresh(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true, AccessTokenLifetime: 30 * time.Minute})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	b := e.broker([]broker.Connection{c})
	ctx := context.Background()
	oldRT := e.storedRefreshToken(c)

	first, err := b.Token(ctx, "xero", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.storedRefreshToken(c); got == oldRT {
		t.Fatal("the rotated refresh token was not persisted")
	}
	if s, err := e.store.SecretStore.Get(ctx, c.Secrets.AccessToken); err != nil || s.Value != first.Value || !s.ExpiresOn.Equal(first.Expiry) {
		t.Fatalf("access token not persisted with its expiry: %v", err)
	}

	gets := e.store.gets.Load()
	second, err := b.Token(ctx, "xero", 60)
	if err != nil {
		t.Fatal(err)
	}
	if second.Value != first.Value || e.store.gets.Load() != gets {
		t.Fatal("second call was not served from memory without I/O")
	}

	// A second instance reads the first one's token from the store.
	b2 := e.broker([]broker.Connection{c})
	if third, err := b2.Token(ctx, "xero", 0); err != nil || third.Value != first.Value {
		t.Fatalf("second instance: %v, same token %v", err, third.Value == first.Value)
	}

	// Past the refresh margin, the next call refreshes with the rotated RT.
	e.clock.Advance(26 * time.Minute)
	fourth, err := b.Token(ctx, "xero", 0)
	if err != nil {
		t.Fatal(err)
	}
	if fourth.Value == first.Value {
		t.Fatal("token not refreshed inside the refresh margin")
	}
	if st := e.provider.Stats(); st.TokenRequests != 2 || st.Rejected != 0 || st.ReuseDetected != 0 {
		t.Fatalf("provider stats %+v, want 2 requests and no rejection", st)
	}
}

func TestMinValidity(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true, AccessTokenLifetime: 30 * time.Minute})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	b := e.broker([]broker.Connection{c})
	ctx := context.Background()
	if _, err := b.Token(ctx, "xero", 0); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(10 * time.Minute) // 20 minutes left

	tests := []struct {
		name        string
		minValidity time.Duration
		wantCode    broker.ErrorCode
		wantCalls   int
	}{
		{"served from cache", 15 * time.Minute, "", 1},
		{"needs a refresh", 25 * time.Minute, "", 2},
		{"longer than the lifetime", 31 * time.Minute, broker.CodeBadRequest, 2},
		{"equal to the lifetime", 30 * time.Minute, broker.CodeBadRequest, 2},
		{"just under the lifetime leaves no room", 29*time.Minute + 30*time.Second, broker.CodeBadRequest, 2},
		{"negative", -time.Second, broker.CodeBadRequest, 2},
		{"over a day", 25 * time.Hour, broker.CodeBadRequest, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := b.Token(ctx, "xero", tt.minValidity)
			if code(err) != tt.wantCode {
				t.Fatalf("error %v, want code %q", err, tt.wantCode)
			}
			if err == nil && tok.Expiry.Sub(e.clock.Now()) < tt.minValidity {
				t.Fatalf("token valid for %s, asked for %s", tok.Expiry.Sub(e.clock.Now()), tt.minValidity)
			}
			if got := e.provider.Stats().TokenRequests; got != tt.wantCalls {
				t.Fatalf("%d token requests, want %d", got, tt.wantCalls)
			}
		})
	}
}

func TestFailures(t *testing.T) {
	tests := []struct {
		name      string
		fault     testprovider.FaultKind
		wantCode  broker.ErrorCode
		retryable bool
	}{
		{"invalid_grant needs reauthorization", testprovider.FaultInvalidGrant, broker.CodeRejected, false},
		{"invalid_client needs the secret fixed", testprovider.FaultInvalidClient, broker.CodeRejected, false},
		{"HTML at 200 is a provider failure", testprovider.FaultHTML, broker.CodeProviderFailed, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testprovider.Config{Rotate: true})
			c := e.conn("xero", broker.GrantRefreshToken)
			e.seed(c)
			b := e.broker([]broker.Connection{c})
			rt := e.storedRefreshToken(c)
			e.provider.InjectFault(testprovider.Fault{Kind: tt.fault})
			_, err := b.Token(context.Background(), "xero", 0)
			var be *broker.Error
			if !errors.As(err, &be) || be.Code != tt.wantCode || be.Retryable() != tt.retryable {
				t.Fatalf("got %v, want code %s retryable %v", err, tt.wantCode, tt.retryable)
			}
			if be.Message == "" || be.Remediation == "" {
				t.Fatalf("error lacks message or remediation: %+v", be)
			}
			if got := e.storedRefreshToken(c); got != rt {
				t.Fatal("a failed refresh changed the stored refresh token")
			}
		})
	}
}

func TestPermanentFailureCoolDown(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	b := e.broker([]broker.Connection{c})
	ctx := context.Background()
	e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultInvalidGrant})
	if _, err := b.Token(ctx, "xero", 0); code(err) != broker.CodeRejected {
		t.Fatalf("first call: %v", err)
	}
	// Within the cool-down, the same credentials are not sent again.
	for range 3 {
		if _, err := b.Token(ctx, "xero", 0); code(err) != broker.CodeRejected {
			t.Fatalf("during cool-down: %v", err)
		}
	}
	if got := e.provider.Stats().TokenRequests; got != 1 {
		t.Fatalf("%d token requests during the cool-down, want 1", got)
	}
	// An operator stores a new refresh token: served at once.
	rt := e.provider.IssueRefreshToken()
	if err := e.store.SecretStore.Set(ctx, c.Secrets.RefreshToken, broker.StoredSecret{Value: broker.Secret(rt)}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Token(ctx, "xero", 0); err != nil {
		t.Fatalf("after a new refresh token: %v", err)
	}
	st, _ := b.ConnectionStatus(ctx, "xero")
	if st.State != broker.StateHealthy || st.LastError != nil {
		t.Fatalf("status after recovery: %+v", st)
	}
}

func TestTransientFailureThenRecovery(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	b := e.broker([]broker.Connection{c})
	ctx := context.Background()
	// A rotating refresh token is not retried after a 503: the provider may
	// have processed it.
	e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultUnavailable})
	_, err := b.Token(ctx, "xero", 0)
	var be *broker.Error
	if !errors.As(err, &be) || be.Code != broker.CodeProviderFailed || be.RetryAfter <= 0 {
		t.Fatalf("got %v, want provider failure with Retry-After", err)
	}
	if st, _ := b.ConnectionStatus(ctx, "xero"); st.State != broker.StateFailing {
		t.Fatalf("state %q, want failing", st.State)
	}
	if _, err := b.Token(ctx, "xero", 0); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
	if st := e.provider.Stats(); st.TokenRequests != 2 || st.Rejected != 0 {
		t.Fatalf("provider stats %+v", st)
	}
}

func TestUnknownConnectionAndMissingSecrets(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	b := e.broker([]broker.Connection{c}) // nothing seeded
	ctx := context.Background()
	if _, err := b.Token(ctx, "nope", 0); code(err) != broker.CodeNotFound {
		t.Fatalf("unknown connection: %v", err)
	}
	_, err := b.Token(ctx, "xero", 0)
	var be *broker.Error
	if !errors.As(err, &be) || be.Code != broker.CodeNotConfigured {
		t.Fatalf("missing secret: %v", err)
	}
	for _, want := range []string{c.Secrets.ClientSecret, c.Secrets.RefreshToken} {
		if !strings.Contains(be.Message, want) || !strings.Contains(be.Remediation, want) {
			t.Fatalf("message and remediation must name %q: %+v", want, be)
		}
	}
	if got := e.provider.Stats().TokenRequests; got != 0 {
		t.Fatalf("%d token requests without credentials", got)
	}
}

func TestStoreWriteFailsThenSucceeds(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	b := e.broker([]broker.Connection{c})
	e.store.failSets.Store(2) // fewer than the 3 attempts
	tok, err := b.Token(context.Background(), "xero", 0)
	if err != nil {
		t.Fatal(err)
	}
	if st := e.store.sets.Load(); st != 4 { // 2 failures + refresh token + access token
		t.Fatalf("%d store writes, want 4", st)
	}
	b2 := e.broker([]broker.Connection{c})
	if tok2, err := b2.Token(context.Background(), "xero", 0); err != nil || tok2.Value != tok.Value {
		t.Fatalf("another instance did not see the persisted token: %v", err)
	}
}

func TestLockHeldElsewhereTimesOut(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	held, err := e.locker.Lock(context.Background(), "xero")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(context.Background())
	b := e.broker([]broker.Connection{c}, func(o *broker.Options) { o.LockWait = 30 * time.Millisecond })
	_, err = b.Token(context.Background(), "xero", 0)
	var be *broker.Error
	if !errors.As(err, &be) || be.Code != broker.CodeUnavailable || be.RetryAfter <= 0 {
		t.Fatalf("got %v, want unavailable with Retry-After", err)
	}
	if got := e.provider.Stats().TokenRequests; got != 0 {
		t.Fatalf("%d token requests without the lock", got)
	}
}

// lostLocker hands out locks that are already lost.
type lostLocker struct{}

type lostLock struct{ ch chan struct{} }

func (lostLocker) Lock(context.Context, string) (broker.Lock, error) {
	ch := make(chan struct{})
	close(ch)
	return lostLock{ch}, nil
}
func (l lostLock) Lost() <-chan struct{}         { return l.ch }
func (l lostLock) Held() bool                    { return false }
func (l lostLock) Release(context.Context) error { return nil }

// downLocker cannot reach its backend.
type downLocker struct{}

func (downLocker) Lock(context.Context, string) (broker.Lock, error) {
	return nil, broker.ErrLockUnavailable
}

func TestLockTrouble(t *testing.T) {
	tests := []struct {
		name      string
		locker    broker.Locker
		grant     broker.GrantType
		wantCode  broker.ErrorCode
		wantCalls int
	}{
		{"lost before the provider call: nothing redeemed", lostLocker{}, broker.GrantRefreshToken, broker.CodeUnavailable, 0},
		{"lock backend down: rotating token not redeemed", downLocker{}, broker.GrantRefreshToken, broker.CodeUnavailable, 0},
		{"lock backend down: client credentials proceed", downLocker{}, broker.GrantClientCredentials, "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testprovider.Config{Rotate: true})
			c := e.conn("conn", tt.grant)
			e.seed(c)
			b := e.broker([]broker.Connection{c}, func(o *broker.Options) { o.Locker = tt.locker })
			_, err := b.Token(context.Background(), "conn", 0)
			if code(err) != tt.wantCode {
				t.Fatalf("got %v, want code %q", err, tt.wantCode)
			}
			if got := e.provider.Stats().TokenRequests; got != tt.wantCalls {
				t.Fatalf("%d token requests, want %d", got, tt.wantCalls)
			}
		})
	}
}

func TestInvalidGrantAfterRaceUsesTheNewRefreshToken(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	b := e.broker([]broker.Connection{c})
	// The broker reads a refresh token that an operator replaced a moment
	// later: the provider rejects the old one, and the broker must notice
	// the store changed rather than declare the grant dead.
	e.store.mu.Lock()
	e.store.staleName, e.store.stale = c.Secrets.RefreshToken, "replaced-refresh-token"
	e.store.mu.Unlock()
	if _, err := b.Token(context.Background(), "xero", 0); err != nil {
		t.Fatalf("race not recovered: %v", err)
	}
	if st := e.provider.Stats(); st.TokenRequests != 2 || st.Rejected != 1 {
		t.Fatalf("provider stats %+v, want one rejected then one good request", st)
	}
}

func TestSweep(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true, AccessTokenLifetime: 30 * time.Minute})
	a := e.conn("a", broker.GrantRefreshToken)
	cc := e.conn("cc", broker.GrantClientCredentials)
	bad := e.conn("bad", broker.GrantRefreshToken)
	e.seed(a)
	e.seed(cc)
	b := e.broker([]broker.Connection{a, cc, bad})
	ctx := context.Background()

	res := b.Sweep(ctx, 10*time.Minute)
	want := map[string]broker.SweepAction{"a": broker.SweepRefreshed, "cc": broker.SweepRefreshed, "bad": broker.SweepFailed}
	for _, r := range res {
		if r.Action != want[r.Connection] {
			t.Errorf("%s: %s, want %s (%v)", r.Connection, r.Action, want[r.Connection], r.Err)
		}
	}
	res = b.Sweep(ctx, 10*time.Minute)
	for _, r := range res {
		if r.Connection != "bad" && r.Action != broker.SweepFresh {
			t.Errorf("second sweep %s: %s, want fresh", r.Connection, r.Action)
		}
	}
	e.clock.Advance(21 * time.Minute)
	for _, r := range b.Sweep(ctx, 10*time.Minute) {
		if r.Connection != "bad" && r.Action != broker.SweepRefreshed {
			t.Errorf("sweep near expiry %s: %s, want refreshed", r.Connection, r.Action)
		}
	}
	if st := e.provider.Stats(); st.TokenRequests != 4 || st.Rejected != 0 {
		t.Fatalf("provider stats %+v, want 4 requests", st)
	}
}

func TestUnusableResponseStillKeepsTheRotatedRefreshToken(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	b := e.broker([]broker.Connection{c})
	old := e.storedRefreshToken(c)
	// The provider rotates the refresh token but answers expires_in -1.
	e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultBadExpiresIn})
	if _, err := b.Token(context.Background(), "xero", 0); code(err) != broker.CodeProviderFailed {
		t.Fatalf("got %v, want a provider failure", err)
	}
	cur := e.storedRefreshToken(c)
	if live, ok := e.provider.CurrentRefreshToken(old.Reveal()); !ok || cur.Reveal() != live {
		t.Fatal("the refresh token issued with the unusable response was not persisted")
	}
	if _, err := b.Token(context.Background(), "xero", 0); err != nil {
		t.Fatalf("next call: %v", err)
	}
	if st := e.provider.Stats(); st.Rejected != 0 || st.ReuseDetected != 0 {
		t.Fatalf("provider stats %+v", st)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestRetryAfterIsHonouredAcrossCalls(t *testing.T) {
	e := newEnv(t, testprovider.Config{})
	c := e.conn("ilevel", broker.GrantClientCredentials)
	e.seed(c)
	b := e.broker([]broker.Connection{c})
	ctx := context.Background()
	// Longer than the grant's budget: it gives up at once and reports it.
	e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultRateLimited, RetryAfter: 2 * time.Minute})
	for i := range 3 {
		_, err := b.Token(ctx, "ilevel", 0)
		var be *broker.Error
		if !errors.As(err, &be) || be.Code != broker.CodeProviderFailed || be.RetryAfter <= 0 {
			t.Fatalf("call %d: %v, want a provider failure with Retry-After", i, err)
		}
	}
	if n := e.provider.Stats().TokenRequests; n != 1 {
		t.Fatalf("%d token requests inside the provider's Retry-After, want 1", n)
	}
	e.clock.Advance(2*time.Minute + time.Second)
	if _, err := b.Token(ctx, "ilevel", 0); err != nil {
		t.Fatalf("after Retry-After: %v", err)
	}
}

func TestCloseWaitsForTheRefreshUnderWay(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	b := e.broker([]broker.Connection{c})
	old := e.storedRefreshToken(c)
	e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultSlow, Delay: 300 * time.Millisecond})
	done := make(chan error, 1)
	go func() {
		_, err := b.Token(context.Background(), "xero", 0)
		done <- err
	}()
	waitFor(t, "the provider saw the request", func() bool { return e.provider.Stats().TokenRequests == 1 })
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the refresh under way failed on Close: %v", err)
	}
	if e.storedRefreshToken(c) == old {
		t.Fatal("Close returned before the rotated refresh token was stored")
	}
	e.clock.Advance(26 * time.Minute)
	if _, err := b.Token(context.Background(), "xero", 0); code(err) != broker.CodeUnavailable {
		t.Fatalf("a refresh after Close: %v, want unavailable", err)
	}
}

// A new instance knows the lifetime from the store: it neither refreshes a
// fresh token for its sweep nor spends a refresh on an impossible request.
func TestNewInstanceJudgesByTheStoredLifetime(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true, AccessTokenLifetime: 8 * time.Minute})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	ctx := context.Background()
	if _, err := e.broker([]broker.Connection{c}).Token(ctx, "xero", 0); err != nil {
		t.Fatal(err)
	}
	fresh := e.broker([]broker.Connection{c})
	if _, err := fresh.Token(ctx, "xero", 10*time.Minute); code(err) != broker.CodeBadRequest {
		t.Fatalf("got %v, want bad request", err)
	}
	if r := fresh.Sweep(ctx, 10*time.Minute); r[0].Action != broker.SweepFresh {
		t.Fatalf("sweep: %s (%v), want fresh", r[0].Action, r[0].Err)
	}
	if n := e.provider.Stats().TokenRequests; n != 1 {
		t.Fatalf("%d token requests, want 1", n)
	}
}
