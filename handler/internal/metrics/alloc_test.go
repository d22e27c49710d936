package metrics_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/metrics"
)

// TestCacheHitAllocations: the observer runs on every cache hit, whose
// whole path is held to 8 allocations (functions.TestTokenHitAllocations);
// recording must not add any once the connection's attributes are made.
func TestCacheHitAllocations(t *testing.T) {
	m, err := metrics.New(metrics.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	m.TokenServed("xero", broker.SourceMemory, time.Minute)
	if n := testing.AllocsPerRun(1000, func() { m.TokenServed("xero", broker.SourceMemory, time.Minute) }); n > 0 {
		t.Errorf("TokenServed allocates %v times per call", n)
	}
}

// BenchmarkTokenServed is what the observer costs a cache hit: the served
// count and the age histogram (docs/performance.md, the hit path).
func BenchmarkTokenServed(b *testing.B) {
	m, err := metrics.New(metrics.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	m.TokenServed("xero", broker.SourceMemory, time.Minute)
	for _, c := range []struct {
		name string
		age  time.Duration
	}{{"count+age", time.Minute}, {"count", -1}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m.TokenServed("xero", broker.SourceMemory, c.age)
			}
		})
	}
}
