package broker_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// TestOverrunSweepEndsBeforeATick: more work than one Functions timer
// invocation can do (250 connections without a token, a provider that
// takes 30 s, 4 at a time: 31 minutes), a sweep started on a tick of a
// 5-minute timer (horizon 10 minutes) with 29 minutes to run. The host
// runs one invocation at a time and skips the ticks that come while it
// runs, so the sweep must end before a tick, not just after one: the
// reserve before its deadline (two RefreshTimeouts of a minute) would stop
// it at 27 minutes, past the tick at 25, leaving the budget idle until the
// tick at 30. It stops starting refreshes a margin before the tick at 25
// and the ones started end by then; what is left is deferred.
func TestOverrunSweepEndsBeforeATick(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			n       = 250
			period  = 5 * time.Minute
			horizon = 2 * period
		)
		if time.Now().Truncate(period) != time.Now() {
			t.Fatalf("synctest's clock starts at %v, not on a tick", time.Now())
		}
		g := newSlowGrant(30 * time.Second)
		var conns []broker.Connection
		for i := range n {
			conns = append(conns, sweepConn(fmt.Sprintf("c%03d", i)))
		}
		b, _ := sweepWorld(t, g, conns, time.Minute)
		defer b.Close(context.Background())
		ctx, cancel := context.WithTimeout(context.Background(), 29*time.Minute)
		defer cancel()
		start := time.Now()
		res := b.Sweep(ctx, horizon)
		took := time.Since(start)
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
		if took > 5*period {
			t.Errorf("the sweep took %v: it ended after the tick at %v, and the next sweep waits for the one at %v", took, 5*period, 6*period)
		}
		// 4 at a time, 30 s each, for 24.5 minutes.
		if refreshed < 190 || deferred == 0 || refreshed+deferred != n {
			t.Errorf("%d refreshed, %d deferred; want about 196 refreshed and the rest deferred", refreshed, deferred)
		}
	})
}
