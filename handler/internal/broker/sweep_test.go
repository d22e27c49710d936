package broker_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// slowGrant is a provider in memory that takes took to answer each token
// request and rotates refresh tokens strictly: a refresh token redeemed
// twice is refused. Inside a synctest bubble took passes on the bubble's
// clock, so parallel requests end together, as they would in real time,
// and nothing waits. It records when each connection was refreshed.
type slowGrant struct {
	took time.Duration

	mu      sync.Mutex
	current map[string]broker.Secret
	calls   map[string][]time.Time
	reused  int
}

func newSlowGrant(took time.Duration) *slowGrant {
	return &slowGrant{took: took, current: map[string]broker.Secret{}, calls: map[string][]time.Time{}}
}

// issue starts a refresh-token chain for a connection.
func (g *slowGrant) issue(name string) broker.Secret {
	g.mu.Lock()
	defer g.mu.Unlock()
	rt := broker.Secret(fmt.Sprintf("rt-%s-0", name))
	g.current[name] = rt
	return rt
}

func (g *slowGrant) Token(ctx context.Context, c *broker.Connection, cred broker.Credentials) (*broker.Token, error) {
	start := time.Now()
	select {
	case <-time.After(g.took):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if cred.RefreshToken != g.current[c.Name] {
		g.reused++
		return nil, &broker.ProviderError{StatusCode: 400, Code: "invalid_grant", Description: "refresh token reused", Permanent: true}
	}
	n := len(g.calls[c.Name]) + 1
	g.calls[c.Name] = append(g.calls[c.Name], start)
	g.current[c.Name] = broker.Secret(fmt.Sprintf("rt-%s-%d", c.Name, n))
	now := time.Now()
	return &broker.Token{AccessToken: broker.Secret(fmt.Sprintf("at-%s-%d", c.Name, n)), TokenType: "Bearer",
		RefreshToken: g.current[c.Name], Expiry: now.Add(time.Hour), IssuedAt: now}, nil
}

func (g *slowGrant) refreshedAt(name string) []time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.calls[name])
}

// sweepWorld is a broker over conns in a fresh local store and lock, with
// each connection's client secret and refresh token stored.
func sweepWorld(t *testing.T, g *slowGrant, conns []broker.Connection, refreshTimeout time.Duration) (*broker.Broker, *local.Store) {
	t.Helper()
	store, locker := localBackends(t)
	for _, c := range conns {
		for name, v := range map[string]broker.Secret{c.Secrets.ClientSecret: clientSecret, c.Secrets.RefreshToken: g.issue(c.Name)} {
			if err := store.Set(context.Background(), name, broker.StoredSecret{Value: v}); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, err := broker.New(broker.Options{Store: store, Locker: locker, Grant: g, Connections: conns,
		LockWait: time.Second, StoreRetryDelay: time.Millisecond, RefreshTimeout: refreshTimeout})
	if err != nil {
		t.Fatal(err)
	}
	return b, store
}

// localBackends is a fresh local store and locker in one directory.
func localBackends(t *testing.T) (*local.Store, *local.Locker) {
	t.Helper()
	dir := t.TempDir()
	store, err := local.NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	locker, err := local.NewLocker(dir, local.LockerOptions{PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return store, locker
}

func sweepConn(name string) broker.Connection {
	return broker.Connection{Name: name, Provider: "test", Grant: broker.GrantRefreshToken, TokenURL: "https://provider.invalid/token",
		AuthStyle: broker.AuthBasic, ClientID: clientID, Secrets: broker.DefaultSecretNames(name), Rotating: true,
		RefreshBefore: 5 * time.Minute, DefaultLifetime: time.Hour, KeepWarm: true}
}

// TestSweepEndsInsideItsDeadlineAndTheNextResumes: 28 connections due
// within the horizon, a provider that takes 30 s a request, and sweeps with
// 3 minutes each (the work takes 3.5 minutes at 4 at a time, so it cannot
// fit). Each sweep stops starting refreshes a reserve before its deadline
// (two RefreshTimeouts, 90 s), ends inside it, and defers the connections
// due last; the next ticks refresh exactly those, most due first, and every
// connection is refreshed once, before its token expires. The connections
// are configured in the reverse of their expiry, so taking them in
// configuration order fails the test. Time is synctest's: nothing waits.
func TestSweepEndsInsideItsDeadlineAndTheNextResumes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			n       = 28
			took    = 30 * time.Second
			budget  = 3 * time.Minute
			horizon = 30 * time.Minute
			period  = 5 * time.Minute
		)
		t0 := time.Now()
		g := newSlowGrant(took)
		var conns []broker.Connection
		var byExpiry []string
		for i := range n {
			conns = append(conns, sweepConn(fmt.Sprintf("c%02d", i)))
			byExpiry = append([]string{conns[i].Name}, byExpiry...)
		}
		b, store := sweepWorld(t, g, conns, 45*time.Second)
		defer b.Close(context.Background())
		expiry := map[string]time.Time{}
		for i, c := range conns {
			// c27 expires first, c00 last; all within the horizon.
			expiry[c.Name] = t0.Add(25*time.Minute + time.Duration(n-1-i)*10*time.Second)
			if err := store.Set(context.Background(), c.Secrets.AccessToken, broker.StoredSecret{
				Value: "at-seeded", ExpiresOn: expiry[c.Name], UpdatedOn: expiry[c.Name].Add(-time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}

		refreshed := map[string]bool{}
		ticks := 0
		for ; ticks < 6 && len(refreshed) < n; ticks++ {
			time.Sleep(time.Until(t0.Add(time.Duration(ticks) * period)))
			ctx, cancel := context.WithTimeout(context.Background(), budget)
			start := time.Now()
			res := b.Sweep(ctx, horizon)
			spent := time.Since(start)
			cancel()
			if spent > budget {
				t.Fatalf("tick %d took %v; its deadline was %v away", ticks, spent, budget)
			}
			var now []string
			deferred, turns := 0, 0
			for _, r := range res {
				switch {
				case r.Action == broker.SweepDeferred:
					deferred++
				case r.Action == broker.SweepRefreshed && !refreshed[r.Connection]:
					now = append(now, r.Connection)
				case r.Action == broker.SweepFresh && refreshed[r.Connection]:
				case r.Action == broker.SweepRefreshed && refreshed[r.Connection] && strings.HasPrefix(r.Reason, "its turn in the refresh cycle"):
					// Its own point in the cycle came (slotPassed): the
					// cohort these ticks refreshed spreads out.
					turns++
				default:
					t.Fatalf("tick %d: %s: %s (%v); refreshed before: %t", ticks, r.Connection, r.Action, r.Err, refreshed[r.Connection])
				}
			}
			// This tick's refreshes are the next ones due.
			want := slices.Sorted(slices.Values(byExpiry[len(refreshed) : len(refreshed)+len(now)]))
			if slices.Sort(now); !slices.Equal(now, want) {
				t.Fatalf("tick %d refreshed %v; want the next due, %v", ticks, now, want)
			}
			for _, name := range now {
				refreshed[name] = true
			}
			t.Logf("tick %d: %d refreshed, %d at their turn, %d deferred, in %v", ticks, len(now), turns, deferred, spent)
			if ticks == 0 && deferred == 0 {
				t.Fatalf("the first sweep deferred nothing: it ran %v, past the point where it should stop starting refreshes", spent)
			}
		}
		if len(refreshed) < n {
			t.Fatalf("%d of %d connections refreshed after %d ticks", len(refreshed), n, ticks)
		}

		// Each connection was refreshed for its expiry once, before its
		// token expired (later refreshes are its turns in the cycle), and
		// no refresh token was redeemed twice.
		for _, c := range conns {
			at := g.refreshedAt(c.Name)
			if len(at) == 0 {
				t.Errorf("%s never refreshed", c.Name)
				continue
			}
			if !at[0].Before(expiry[c.Name]) {
				t.Errorf("%s refreshed at t0+%v, after its token expired at t0+%v", c.Name, at[0].Sub(t0), expiry[c.Name].Sub(t0))
			}
		}
		if g.reused != 0 {
			t.Fatalf("%d refresh tokens redeemed twice", g.reused)
		}
	})
}

// TestSweepWithoutDeadlineDefersNothing: a sweep whose context has no
// deadline (standalone mode) goes over every connection, however long.
func TestSweepWithoutDeadlineDefersNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newSlowGrant(5 * time.Minute)
		var conns []broker.Connection
		for i := range 8 {
			conns = append(conns, sweepConn(fmt.Sprintf("c%d", i)))
		}
		b, _ := sweepWorld(t, g, conns, 10*time.Minute)
		defer b.Close(context.Background())
		for _, r := range b.Sweep(context.Background(), 10*time.Minute) {
			if r.Action != broker.SweepRefreshed {
				t.Errorf("%s: %s (%v), want refreshed", r.Connection, r.Action, r.Err)
			}
		}
	})
}

// TestCohortSpreadsOverOneCycle: 200 connections refreshed together at
// t=0 (a cold start) come due together again at 50 and 100 minutes unless
// each has its own point in the cycle. Sweeps every 5 minutes with the
// timer's 10-minute horizon, for three cycles: in cycles 2 and 3 no sweep
// refreshes more than twice an even share (200 over the 49-minute cycle's
// ten sweeps), no token is ever found expired, and no connection is
// refreshed more than once a cycle after its first, early, turn.
func TestCohortSpreadsOverOneCycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			n       = 200
			period  = 5 * time.Minute
			horizon = 2 * period
			cycle   = 49 * time.Minute
		)
		g := newSlowGrant(time.Second)
		var conns []broker.Connection
		for i := range n {
			conns = append(conns, sweepConn(fmt.Sprintf("conn-%03d", i)))
		}
		b, store := sweepWorld(t, g, conns, time.Minute)
		defer b.Close(context.Background())
		t0 := time.Now()
		perSweep := map[time.Duration]int{}
		for tick := 0; t0.Add(time.Duration(tick) * period).Before(t0.Add(3*cycle + 2*period)); tick++ {
			at := t0.Add(time.Duration(tick) * period)
			time.Sleep(time.Until(at))
			if tick > 0 {
				for _, c := range conns {
					s, err := store.Get(context.Background(), c.Secrets.AccessToken)
					if err != nil || !s.ExpiresOn.After(time.Now()) {
						t.Fatalf("t0+%v: %s's access token expired unrefreshed (expires %v, err %v)", at.Sub(t0), c.Name, s.ExpiresOn.Sub(t0), err)
					}
				}
			}
			for _, r := range b.Sweep(context.Background(), horizon) {
				switch r.Action {
				case broker.SweepRefreshed:
					perSweep[at.Sub(t0)]++
				case broker.SweepFresh:
				default:
					t.Fatalf("t0+%v: %s: %s (%v)", at.Sub(t0), r.Connection, r.Action, r.Err)
				}
			}
		}
		if perSweep[0] != n {
			t.Fatalf("the first sweep refreshed %d, want the whole cohort of %d", perSweep[0], n)
		}
		largest, at := 0, time.Duration(0)
		for d, k := range perSweep {
			if d >= cycle && k > largest {
				largest, at = k, d
			}
		}
		even := n * int(period) / int(cycle)
		t.Logf("largest batch in cycles 2-3: %d at t0+%v (even share %d); per sweep: %v", largest, at, even, perSweep)
		if largest > 2*even {
			t.Errorf("a sweep in cycles 2-3 refreshed %d connections at t0+%v; the cohort of %d should spread over the cycle, about %d a sweep", largest, at, n, even)
		}
		for _, c := range conns {
			if k := len(g.refreshedAt(c.Name)); k > 5 {
				t.Errorf("%s refreshed %d times in three cycles", c.Name, k)
			}
		}
		if g.reused != 0 {
			t.Fatalf("%d refresh tokens redeemed twice", g.reused)
		}
	})
}
