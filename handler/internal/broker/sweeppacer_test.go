package broker_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// pacedStore is a local store behind a SweepPacer with room for a number
// of writes; past them AwaitSweepRoom waits until its context ends.
type pacedStore struct {
	*local.Store
	mu    sync.Mutex
	room  int
	asked []int // n of each AwaitSweepRoom
}

func (s *pacedStore) AwaitSweepRoom(ctx context.Context, n int) error {
	s.mu.Lock()
	s.asked = append(s.asked, n)
	if n <= s.room {
		s.room -= n
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

func (s *pacedStore) WriteRate() float64 { return 15 }

func (s *pacedStore) askedFor() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(slices.Values(s.asked))
}

// TestSweepWaitsForThePacer: with a store that paces its writes, the sweep
// asks for room before each refresh, two writes for a rotating refresh
// token and one otherwise; when no room comes before the point where it
// starts nothing more, the rest are deferred to the next sweep and the
// sweep still ends inside its deadline. Time is synctest's.
func TestSweepWaitsForThePacer(t *testing.T) {
	tests := []struct {
		name         string
		room         int
		wantRefresh  int
		wantDeferred int
	}{
		{"room for all", 7, 4, 0},
		{"room for two refreshes", 4, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const budget = 3 * time.Minute
				t0 := time.Now()
				g := newSlowGrant(10 * time.Second)
				conns := []broker.Connection{sweepConn("a"), sweepConn("b"), sweepConn("c"), sweepConn("d")}
				conns[3].Rotating = false
				ls, locker := localBackends(t)
				ctx := context.Background()
				for _, c := range conns {
					for name, v := range map[string]broker.StoredSecret{
						c.Secrets.ClientSecret: {Value: clientSecret},
						c.Secrets.RefreshToken: {Value: g.issue(c.Name)},
						c.Secrets.AccessToken:  {Value: "at-seeded", ExpiresOn: t0.Add(20 * time.Minute), UpdatedOn: t0.Add(-40 * time.Minute)},
					} {
						if err := ls.Set(ctx, name, v); err != nil {
							t.Fatal(err)
						}
					}
				}
				store := &pacedStore{Store: ls, room: tt.room}
				b, err := broker.New(broker.Options{Store: store, Locker: locker, Grant: g, Connections: conns,
					LockWait: time.Second, StoreRetryDelay: time.Millisecond, RefreshTimeout: 30 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				defer b.Close(ctx)

				sctx, cancel := context.WithTimeout(ctx, budget)
				defer cancel()
				start := time.Now()
				res := b.Sweep(sctx, 30*time.Minute)
				if spent := time.Since(start); spent >= budget {
					t.Fatalf("the sweep took %v; its deadline was %v away", spent, budget)
				}
				refreshed, deferred := 0, 0
				for _, r := range res {
					switch r.Action {
					case broker.SweepRefreshed:
						refreshed++
					case broker.SweepDeferred:
						deferred++
					default:
						t.Errorf("%s: %s (%v)", r.Connection, r.Action, r.Err)
					}
				}
				if refreshed != tt.wantRefresh || deferred != tt.wantDeferred {
					t.Errorf("%d refreshed, %d deferred; want %d and %d", refreshed, deferred, tt.wantRefresh, tt.wantDeferred)
				}
				asked := store.askedFor()
				if tt.wantDeferred == 0 && !slices.Equal(asked, []int{1, 2, 2, 2}) {
					t.Errorf("room asked for %v writes; want 2 for each rotating refresh and 1 for the other", asked)
				}
				if len(asked) < tt.wantRefresh || slices.ContainsFunc(asked, func(n int) bool { return n != 1 && n != 2 }) {
					t.Errorf("room asked for %v writes", asked)
				}

				// A second sweep, with the refresh time measured, still
				// asks before each refresh.
				store.mu.Lock()
				store.room, store.asked = 100, nil
				store.mu.Unlock()
				b.Sweep(ctx, 24*time.Hour)
				if n := len(store.askedFor()); n == 0 && tt.wantDeferred > 0 {
					t.Error("the next sweep refreshed the deferred connections without asking the pacer")
				}
			})
		})
	}
}
