package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/connblob"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
)

// connectionsPollInterval bounds how long a changed connections blob takes
// to reach a running instance: a poll that finds nothing changed is one
// conditional GET answered 304 (connblob.Store.Read). A variable so that
// tests need not wait 30 s.
var connectionsPollInterval = 30 * time.Second

// connectionsReadTimeout bounds one read of the blob at each poll.
const connectionsReadTimeout = 30 * time.Second

// connectionsWatch applies changes of the connections blob to the broker.
type connectionsWatch struct {
	mu  sync.Mutex // one Check at a time: a Watcher is not safe for concurrent use
	w   *connblob.Watcher
	b   *broker.Broker
	log *slog.Logger
	loc string
}

// check reads the blob if it changed and applies an accepted change. A
// refused change is logged once per version, at ERROR (it alerts: an
// operator's edit did not take effect); the running set stays.
func (cw *connectionsWatch) check(ctx context.Context) {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	read, cancel := context.WithTimeout(ctx, connectionsReadTimeout)
	defer cancel()
	ch, err := cw.w.Check(read)
	switch {
	case err != nil:
		// Not when the handler is stopping: that is no trouble of the blob.
		if ctx.Err() == nil {
			cw.log.Warn("could not read the connections blob; the running set stays", "event", "connections.read_failed", "blob", cw.loc, "error", err.Error())
		}
	case ch.Refused != nil:
		cw.log.Error("connections blob refused; the running set stays", "event", "connections.refused", "blob", cw.loc, "etag", string(ch.ETag), "problems", ch.Refused.Error())
	case ch.Conns != nil:
		if err := cw.b.SetConnections(ch.Conns); err != nil {
			cw.log.Error("connections blob refused; the running set stays", "event", "connections.refused", "blob", cw.loc, "etag", string(ch.ETag), "problems", err.Error())
			return
		}
		names := make([]string, len(ch.Conns))
		for i, c := range ch.Conns {
			names[i] = c.Name
		}
		cw.log.Info("connections changed", "event", "connections.changed", "blob", cw.loc, "etag", string(ch.ETag), "connections", names)
	}
}

// run checks every interval until ctx ends.
func (cw *connectionsWatch) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cw.check(ctx)
		}
	}
}

// The token route answers a token in memory before it prepares to wait only
// when the broker it serves offers the hit path (functions.Peeker): both
// brokers Run may serve must.
var (
	_ functions.Peeker = (*broker.Broker)(nil)
	_ functions.Peeker = sweepingBroker{}
)

// sweepingBroker checks the connections blob before each sweep, so the
// timer's sweep works on the newest accepted set.
type sweepingBroker struct {
	*broker.Broker
	watch *connectionsWatch
}

// Sweep checks the blob, then sweeps.
func (b sweepingBroker) Sweep(ctx context.Context, horizon time.Duration) []broker.SweepResult {
	b.watch.check(ctx)
	return b.Broker.Sweep(ctx, horizon)
}
