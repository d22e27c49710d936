package broker_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// recorder is an Observer that keeps every call as a line.
type recorder struct {
	mu    sync.Mutex
	lines []string
	ages  []time.Duration
}

func (r *recorder) add(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, fmt.Sprintf(format, a...))
}

func (r *recorder) TokenServed(c string, s broker.Source, age time.Duration) {
	r.add("served %s %s", c, s)
	r.mu.Lock()
	r.ages = append(r.ages, age)
	r.mu.Unlock()
}
func (r *recorder) Refreshed(c string, o broker.Outcome, _ time.Duration) {
	r.add("refreshed %s %s", c, o)
}
func (r *recorder) TokenEndpoint(c string, o broker.Outcome, _ time.Duration) {
	r.add("endpoint %s %s", c, o)
}
func (r *recorder) LockWaited(c, o string, _ time.Duration) { r.add("lock %s %s", c, o) }
func (r *recorder) StoreFailed(c, op string)                { r.add("store %s %s", c, op) }

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.lines
	r.lines = nil
	return out
}

// TestObserverSeesEachStep: the broker tells its observer of every token
// it serves and where from, each refresh and token-endpoint call with its
// outcome, each lock wait and each store failure.
func TestObserverSeesEachStep(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true, AccessTokenLifetime: 30 * time.Minute})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	rec := &recorder{}
	b := e.broker([]broker.Connection{c}, func(o *broker.Options) { o.Observer = rec })
	ctx := context.Background()

	steps := []struct {
		name string
		do   func()
		want []string
	}{
		{"refresh", func() { _, _ = b.Token(ctx, "xero", 0) },
			[]string{"lock xero acquired", "endpoint xero success", "refreshed xero success", "served xero refresh"}},
		{"cache hit", func() { e.clock.Advance(time.Minute); _, _ = b.Token(ctx, "xero", 0) },
			[]string{"served xero memory"}},
		{"store hit", func() {
			b2 := e.broker([]broker.Connection{c}, func(o *broker.Options) { o.Observer = rec })
			_, _ = b2.Token(ctx, "xero", 0)
		}, []string{"served xero store"}},
		{"provider failure", func() {
			e.clock.Advance(26 * time.Minute)
			e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultUnavailable})
			_, _ = b.Token(ctx, "xero", 0)
		}, []string{"lock xero acquired", "endpoint xero provider_unavailable", "refreshed xero provider_unavailable"}},
		{"store failure", func() {
			e.store.down.Store(true)
			defer e.store.down.Store(false)
			_, _ = b.Token(ctx, "xero", 0)
		}, []string{"store xero read"}},
	}
	for _, s := range steps {
		s.do()
		if got := rec.take(); !slices.Equal(got, s.want) {
			t.Errorf("%s: observer heard %q, want %q", s.name, got, s.want)
		}
	}
	// The age of the token at the cache hit is the minute that passed.
	if len(rec.ages) < 2 || rec.ages[0] != 0 || rec.ages[1] != time.Minute {
		t.Errorf("ages %v, want 0 at the refresh and 1m at the cache hit", rec.ages)
	}
}
