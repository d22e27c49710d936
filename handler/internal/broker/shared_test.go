package broker_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// statusLocker wraps a real locker and keeps a SharedStatus per lock, as
// the blob lease keeps it in the lock blob's metadata.
type statusLocker struct {
	broker.Locker
	mu     sync.Mutex
	status map[string]broker.SharedStatus
}

type statusLock struct {
	broker.Lock
	l    *statusLocker
	name string
}

func (l *statusLocker) Lock(ctx context.Context, name string) (broker.Lock, error) {
	k, err := l.Locker.Lock(ctx, name)
	if err != nil {
		return nil, err
	}
	return &statusLock{Lock: k, l: l, name: name}, nil
}

func (l *statusLocker) ReadStatus(_ context.Context, name string) (broker.SharedStatus, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status[name], nil
}

func (k *statusLock) RecordStatus(_ context.Context, s broker.SharedStatus) error {
	k.l.mu.Lock()
	defer k.l.mu.Unlock()
	k.l.status[k.name] = s
	return nil
}

// peersSharingStatus returns two brokers over c, instance-a and
// instance-b, whose lockers share one status per lock (statusLocker).
func (e *env) peersSharingStatus(c broker.Connection) (a, b *broker.Broker) {
	sl := &statusLocker{Locker: e.locker, status: map[string]broker.SharedStatus{}}
	withInstance := func(name string) brokerOption {
		return func(o *broker.Options) { o.Locker = sl; o.Instance = name }
	}
	a = e.broker([]broker.Connection{c}, withInstance("instance-a"))
	b = e.broker([]broker.Connection{c}, withInstance("instance-b"))
	return a, b
}

// TestStatusIsSharedThroughTheLock: an instance that never refreshed
// reports its peer's refresh and, later, its peer's failures.
func TestStatusIsSharedThroughTheLock(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	a, b := e.peersSharingStatus(c)
	ctx := context.Background()

	if _, err := a.Token(ctx, "xero", 0); err != nil {
		t.Fatal(err)
	}
	st, _ := b.ConnectionStatus(ctx, "xero")
	if st.State != broker.StateHealthy || st.LastRefreshBy != "instance-a" || !st.LastRefresh.Equal(e.clock.Now()) || st.Failures != 0 {
		t.Fatalf("b's view after a's refresh: %+v", st)
	}

	// Two failures on a, recorded beside the lock and counted.
	e.clock.Advance(2 * time.Hour)
	for range 2 {
		// A rotating refresh token is never re-sent after a 5xx, so one
		// fault fails one call.
		e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultServerError})
		if _, err := a.Token(ctx, "xero", 0); code(err) != broker.CodeProviderFailed {
			t.Fatalf("got %v, want provider_unavailable", err)
		}
	}
	st, _ = b.ConnectionStatus(ctx, "xero")
	if st.State != broker.StateFailing || st.Failures != 2 || st.LastError == nil || st.LastError.Code != broker.CodeProviderFailed {
		t.Fatalf("b's view after two failures on a: %+v", st)
	}

	// b refreshes successfully: the failure count resets for everyone.
	if _, err := b.Token(ctx, "xero", 0); err != nil {
		t.Fatal(err)
	}
	st, _ = a.ConnectionStatus(ctx, "xero")
	if st.State != broker.StateHealthy || st.Failures != 0 || st.LastRefreshBy != "instance-b" || st.LastError != nil {
		t.Fatalf("a's view after b's refresh: %+v", st)
	}
}

// listingStore exposes the local store's List and counts calls.
type listingStore struct {
	*countingStore
	list  *local.Store
	lists atomic.Int64
}

func (s *listingStore) List(ctx context.Context) ([]broker.SecretInfo, error) {
	s.lists.Add(1)
	return s.list.List(ctx)
}

// TestSweepListsOnceAndReadsOnlyStaleTokens: with a listing store, a new
// instance's sweep makes one list call and reads no fresh token.
func TestSweepListsOnceAndReadsOnlyStaleTokens(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true, AccessTokenLifetime: time.Hour})
	var conns []broker.Connection
	for _, n := range []string{"a", "b", "c", "d"} {
		c := e.conn(n, broker.GrantRefreshToken)
		e.seed(c)
		conns = append(conns, c)
	}
	ctx := context.Background()
	first := e.broker(conns)
	for _, c := range conns[:3] {
		if _, err := first.Token(ctx, c.Name, 0); err != nil {
			t.Fatal(err)
		}
	}
	ls, err := local.NewStore(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	store := &listingStore{countingStore: e.store, list: ls}
	fresh := e.broker(conns, func(o *broker.Options) { o.Store = store })
	gets, calls := e.store.gets.Load(), e.provider.Stats().TokenRequests

	res := fresh.Sweep(ctx, 10*time.Minute)
	want := map[string]broker.SweepAction{"a": broker.SweepFresh, "b": broker.SweepFresh, "c": broker.SweepFresh, "d": broker.SweepRefreshed}
	for _, r := range res {
		if r.Action != want[r.Connection] {
			t.Errorf("%s: %s, want %s (%v)", r.Connection, r.Action, want[r.Connection], r.Err)
		}
	}
	if n := store.lists.Load(); n != 1 {
		t.Errorf("%d list calls, want 1", n)
	}
	// Only d was read: its access token (twice: before and under the
	// lock), its client secret and its refresh token.
	if n := e.store.gets.Load() - gets; n != 4 {
		t.Errorf("%d reads during the sweep, want 4 (all for the stale connection)", n)
	}
	if n := e.provider.Stats().TokenRequests - calls; n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
}

// TestSweepWalksTheListOncePerHour: later sweeps within the hour go by
// the first one's walk of the list and the tokens in memory: once every
// token is fresh and known, they list and read nothing.
func TestSweepWalksTheListOncePerHour(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true, AccessTokenLifetime: 2 * time.Hour})
	var conns []broker.Connection
	for _, n := range []string{"a", "b"} {
		c := e.conn(n, broker.GrantRefreshToken)
		e.seed(c)
		conns = append(conns, c)
	}
	ls, err := local.NewStore(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	store := &listingStore{countingStore: e.store, list: ls}
	b := e.broker(conns, func(o *broker.Options) { o.Store = store })
	ctx := context.Background()
	for i := range 3 {
		gets := e.store.gets.Load()
		for _, r := range b.Sweep(ctx, 10*time.Minute) {
			if r.Err != nil {
				t.Fatalf("sweep %d: %s: %v", i, r.Connection, r.Err)
			}
		}
		if n := store.lists.Load(); n != 1 {
			t.Errorf("after sweep %d: %d list walks, want 1", i, n)
		}
		if n := e.store.gets.Load() - gets; i > 0 && n != 0 {
			t.Errorf("sweep %d read %d secrets; every token was fresh and known", i, n)
		}
	}
}

// upperLister lists names in another case, as Key Vault returns a secret
// an operator created as Xero-Client-Secret.
type upperLister struct{ *listingStore }

func (s upperLister) List(ctx context.Context) ([]broker.SecretInfo, error) {
	infos, err := s.listingStore.List(ctx)
	for i := range infos {
		infos[i].Name = strings.ToUpper(infos[i].Name)
	}
	return infos, err
}

// TestListingIsCaseInsensitive: the listing's names are matched to the
// connection's secret names without regard to case.
func TestListingIsCaseInsensitive(t *testing.T) {
	e := newEnv(t, testprovider.Config{})
	c := e.conn("ilevel", broker.GrantClientCredentials)
	e.seed(c)
	ctx := context.Background()
	expires := e.clock.Now().Add(10 * 24 * time.Hour)
	if err := e.store.SecretStore.Set(ctx, c.Secrets.ClientSecret, broker.StoredSecret{Value: clientSecret, ExpiresOn: expires}); err != nil {
		t.Fatal(err)
	}
	ls, err := local.NewStore(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	b := e.broker([]broker.Connection{c}, func(o *broker.Options) { o.Store = upperLister{&listingStore{countingStore: e.store, list: ls}} })
	st := b.Status(ctx)[0]
	if !st.ClientSecretExpiresOn.Equal(expires) {
		t.Fatalf("clientSecretExpiresOn %v, want %v from the listing", st.ClientSecretExpiresOn, expires)
	}
	if r := b.Sweep(ctx, 10*time.Minute)[0]; len(r.Warnings) != 1 {
		t.Fatalf("sweep warnings %q, want the client secret's", r.Warnings)
	}
}
