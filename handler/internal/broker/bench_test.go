package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// BenchmarkTokenCacheHit measures the path almost every call takes: a token
// in memory, valid long enough.
func BenchmarkTokenCacheHit(b *testing.B) {
	e := newEnv(b, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	br := e.broker([]broker.Connection{c})
	ctx := context.Background()
	if _, err := br.Token(ctx, "xero", time.Minute); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := br.Token(ctx, "xero", time.Minute); err != nil {
				b.Fatal(err)
			}
		}
	})
}
