package broker_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// TestLockPollerWaitsAJitteredInterval: each wait lasts between half and
// one and a half intervals, and a done context ends it with its error.
func TestLockPollerWaitsAJitteredInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const every = 100 * time.Millisecond
		p := broker.NewLockPoller(every)
		defer p.Stop()
		for range 50 {
			start := time.Now()
			if err := p.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d < every/2 || d >= every*3/2 {
				t.Fatalf("waited %v; want [%v, %v)", d, every/2, every*3/2)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := p.Wait(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait with a done context: %v; want context.Canceled", err)
		}
	})
}
