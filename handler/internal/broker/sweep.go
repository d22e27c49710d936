package broker

import (
	"context"
	"time"

	"golang.org/x/sync/errgroup"
)

// SweepAction says what a sweep did for one connection.
type SweepAction string

const (
	// SweepFresh: the token stays valid beyond the horizon; nothing done.
	SweepFresh SweepAction = "fresh"
	// SweepRefreshed: the token was refreshed.
	SweepRefreshed SweepAction = "refreshed"
	// SweepFailed: the refresh failed; Err says why.
	SweepFailed SweepAction = "failed"
)

// SweepResult is the outcome of a sweep for one connection.
type SweepResult struct {
	Connection string
	Action     SweepAction
	ExpiresOn  time.Time
	Err        *Error
}

// DefaultSweepParallelism bounds how many connections one sweep refreshes at
// once, to stay well inside provider and Key Vault rate limits.
const DefaultSweepParallelism = 4

// Sweep refreshes every connection whose token expires within horizon (the
// time until the next sweep plus the refresh margin), so that callers
// between sweeps are served from cache. It goes through the same protocol
// as Token: locks, singleflight and all.
func (b *Broker) Sweep(ctx context.Context, horizon time.Duration) []SweepResult {
	results := make([]SweepResult, len(b.order))
	var g errgroup.Group
	g.SetLimit(DefaultSweepParallelism)
	for i, name := range b.order {
		g.Go(func() error {
			results[i] = b.sweepOne(ctx, b.conns[name], horizon)
			return nil
		})
	}
	_ = g.Wait()
	return results
}

func (b *Broker) sweepOne(ctx context.Context, st *connState, horizon time.Duration) SweepResult {
	r := SweepResult{Connection: st.conn.Name}
	st.mu.Lock()
	before := st.refreshes
	st.mu.Unlock()
	tok, err := b.token(ctx, st, want{minValidity: min(horizon, MaxMinValidity), upToHalfLife: true})
	if err != nil {
		r.Action = SweepFailed
		r.Err = asError(st.conn.Name, err)
		return r
	}
	r.ExpiresOn = tok.Expiry
	st.mu.Lock()
	after := st.refreshes
	st.mu.Unlock()
	if after > before {
		r.Action = SweepRefreshed
	} else {
		r.Action = SweepFresh
	}
	return r
}
