package broker_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// TestTimerSweepStopsAtItsPeriod: a timer invocation (a sweep with the
// host's 29-minute deadline) with 40 connections due, a provider that
// takes a minute a request and 4 refreshes at a time: 10 minutes of work
// for a 5-minute period (the timer's horizon of 10 minutes, halved). The
// sweep stops starting refreshes when its period is over, returns within
// the period plus one RefreshTimeout, and defers the connections due last;
// the next sweep, started at once as the host starts it after an
// invocation that overran its tick, refreshes those first. The
// connections are configured in the reverse of their expiry, so taking
// them in configuration order fails the test. Before the sweep stopped at
// its period it ran all 10 minutes. Time is synctest's: nothing waits.
func TestTimerSweepStopsAtItsPeriod(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			n               = 40
			took            = time.Minute
			refreshTimeout  = 2 * time.Minute
			horizon         = 10 * time.Minute
			period          = horizon / 2
			functionTimeout = 29 * time.Minute
		)
		t0 := time.Now()
		g := newSlowGrant(took)
		conns := make([]broker.Connection, n)
		byDue := make([]string, n)
		for i := range conns {
			conns[i] = sweepConn(fmt.Sprintf("c%02d", i))
			byDue[n-1-i] = conns[i].Name
		}
		b, store := sweepWorld(t, g, conns, refreshTimeout)
		defer b.Close(context.Background())
		seedExpiries(t, store, conns, func(i int) time.Time { return t0.Add(6*time.Minute + time.Duration(n-1-i)*5*time.Second) })

		sweep := func() ([]broker.SweepResult, time.Duration) {
			ctx, cancel := context.WithTimeout(context.Background(), functionTimeout)
			defer cancel()
			start := time.Now()
			res := b.Sweep(ctx, horizon)
			return res, time.Since(start)
		}

		first, spent := sweep()
		if spent > period+refreshTimeout {
			t.Fatalf("the sweep ran %v; it should stop starting refreshes after its period (%v) and end within one RefreshTimeout (%v) of it",
				spent, period, refreshTimeout)
		}
		var done, deferred []string
		for _, r := range first {
			switch r.Action {
			case broker.SweepRefreshed:
				done = append(done, r.Connection)
			case broker.SweepDeferred:
				deferred = append(deferred, r.Connection)
			default:
				t.Fatalf("first sweep: %s: %s (%v)", r.Connection, r.Action, r.Err)
			}
		}
		if len(deferred) == 0 {
			t.Fatalf("the first sweep deferred nothing in %v: 10 minutes of work did not stop at its %v period", spent, period)
		}
		// What was done is the most due, what was deferred the rest.
		slices.Sort(done)
		slices.Sort(deferred)
		if want := slices.Sorted(slices.Values(byDue[:len(done)])); !slices.Equal(done, want) {
			t.Fatalf("the first sweep refreshed %v; want the most due, %v", done, want)
		}
		t.Logf("first sweep: %d refreshed, %d deferred, in %v", len(done), len(deferred), spent)

		// The next invocation starts at once and takes the deferred ones
		// before anything else (a connection the first sweep refreshed
		// may be refreshed again at its turn in the cycle, after them).
		secondAt := time.Now()
		second, spent := sweep()
		if spent > period+refreshTimeout {
			t.Fatalf("the second sweep ran %v", spent)
		}
		byName := map[string]broker.SweepResult{}
		for _, r := range second {
			byName[r.Connection] = r
		}
		var lastDeferred time.Time
		for _, name := range deferred {
			if r := byName[name]; r.Action != broker.SweepRefreshed {
				t.Fatalf("second sweep: deferred %s: %s (%v), want refreshed", name, r.Action, r.Err)
			}
			at := g.refreshedAt(name)
			if last := at[len(at)-1]; last.After(lastDeferred) {
				lastDeferred = last
			}
		}
		for _, name := range done {
			at := g.refreshedAt(name)
			if again := at[len(at)-1]; len(at) > 1 && !again.Before(secondAt) && again.Before(lastDeferred) {
				t.Errorf("second sweep refreshed %s (at its turn) at +%v, before the deferred connections (the last at +%v)",
					name, again.Sub(secondAt), lastDeferred.Sub(secondAt))
			}
		}
		if g.reused != 0 {
			t.Fatalf("%d refresh tokens redeemed twice", g.reused)
		}
	})
}

// seedExpiries stores an access token for each connection, expiring at
// expiry(i) and issued an hour before.
func seedExpiries(t *testing.T, store *local.Store, conns []broker.Connection, expiry func(int) time.Time) {
	t.Helper()
	for i, c := range conns {
		exp := expiry(i)
		if err := store.Set(context.Background(), c.Secrets.AccessToken, broker.StoredSecret{
			Value: "at-seeded", ExpiresOn: exp, UpdatedOn: exp.Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
}
