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
// count and the age histogram (docs/performance.md, the hit path). A busy
// connection's hits fall mostly in a second of age already recorded
// ("count+age, same second"); "count+age, each recorded" is the first hit
// of each second, or a connection answered less than once a second.
func BenchmarkTokenServed(b *testing.B) {
	m, err := metrics.New(metrics.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	m.TokenServed("xero", broker.SourceMemory, time.Minute)
	for _, c := range []struct {
		name string
		ages []time.Duration // taken in turn
	}{
		{"count+age, same second", []time.Duration{time.Minute}},
		{"count+age, each recorded", []time.Duration{time.Minute, time.Minute + time.Second}},
		{"count", []time.Duration{-1}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				m.TokenServed("xero", broker.SourceMemory, c.ages[i%len(c.ages)])
				i++
			}
		})
	}
}
