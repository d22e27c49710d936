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
//
// When the store is a SecretLister, one list call tells which access tokens
// are fresh, and only the others are read and refreshed: with Key Vault
// that is one paged request instead of one read per connection.
func (b *Broker) Sweep(ctx context.Context, horizon time.Duration) []SweepResult {
	listed := b.listSecrets(ctx)
	results := make([]SweepResult, len(b.order))
	var g errgroup.Group
	g.SetLimit(DefaultSweepParallelism)
	for i, name := range b.order {
		g.Go(func() error {
			st := b.conns[name]
			if info, ok := listed[st.conn.Secrets.AccessToken]; ok && b.freshInListing(st, info, horizon) {
				results[i] = SweepResult{Connection: name, Action: SweepFresh, ExpiresOn: info.ExpiresOn}
				return nil
			}
			results[i] = b.sweepOne(ctx, st, horizon)
			return nil
		})
	}
	_ = g.Wait()
	return results
}

// listSecrets describes the store's secrets by name, or returns nil when
// the store cannot list or the listing failed (the sweep then reads each
// connection's token as Token does).
func (b *Broker) listSecrets(ctx context.Context) map[string]SecretInfo {
	l, ok := b.store.(SecretLister)
	if !ok {
		return nil
	}
	infos, err := l.List(ctx)
	if err != nil {
		b.log.Warn("could not list the store's secrets; reading each connection's token instead",
			"event", "sweep.list_failed", "error", err.Error())
	}
	m := make(map[string]SecretInfo, len(infos))
	for _, in := range infos {
		m[in.Name] = in
	}
	return m
}

// freshInListing reports whether the listed access token stays valid past
// the sweep's horizon, judged as sweepOne would judge the token itself.
func (b *Broker) freshInListing(st *connState, info SecretInfo, horizon time.Duration) bool {
	if info.ExpiresOn.IsZero() {
		return false
	}
	ct := &cachedToken{token: AccessToken{Expiry: info.ExpiresOn}}
	if !info.UpdatedOn.IsZero() && info.ExpiresOn.After(info.UpdatedOn) {
		ct.lifetime = info.ExpiresOn.Sub(info.UpdatedOn)
	}
	w := want{minValidity: min(horizon, MaxMinValidity), upToHalfLife: true}
	return ct.validFor(b.now(), st.need(w.of(ct.lifetime), ct.lifetime))
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
