package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// SweepAction says what a sweep did for one connection.
type SweepAction string

const (
	// SweepFresh: the token stays valid beyond the horizon, or the
	// connection is not kept warm; nothing done.
	SweepFresh SweepAction = "fresh"
	// SweepRefreshed: the token was refreshed before it expired.
	SweepRefreshed SweepAction = "refreshed"
	// SweepKeptAlive: the refresh token had been idle for half the time
	// the provider keeps unused ones, and was redeemed to keep it alive.
	SweepKeptAlive SweepAction = "kept_alive"
	// SweepFailed: the refresh failed; Err says why.
	SweepFailed SweepAction = "failed"
	// SweepDeferred: the sweep's deadline came too near to start this
	// connection; the next sweep reaches it first, as its token is due
	// before every one this sweep refreshed.
	SweepDeferred SweepAction = "deferred"
)

// SweepResult is the outcome of a sweep for one connection.
type SweepResult struct {
	Connection string
	Action     SweepAction
	ExpiresOn  time.Time
	// Reason says why the sweep acted, when it did.
	Reason string
	// Warnings are what an operator must act on soon: a client secret
	// that expires within 30 days. One line each, naming the secret.
	Warnings []string
	Err      *Error
	// Standby is what the sweep did for the connection's standby grant:
	// SweepKeptAlive, SweepFailed (StandbyErr says why), or "" for
	// nothing.
	Standby    SweepAction
	StandbyErr *Error
}

// DefaultSweepParallelism bounds how many connections one sweep refreshes at
// once, to stay well inside provider and Key Vault rate limits.
const DefaultSweepParallelism = 4

// secretWarningDays are the thresholds at which a client secret's coming
// expiry is logged (once each); Warnings carry it on every sweep.
var secretWarningDays = []int{30, 14, 7, 0}

// Sweep goes over every connection, at most DefaultSweepParallelism at a
// time, through the same protocol as Token (locks, singleflight and all):
//
//   - a connection kept warm (Connection.KeepWarm) whose token expires
//     within horizon (the time until the next sweep plus the refresh
//     margin) is refreshed, so callers between sweeps are served from
//     cache;
//   - a refresh token unused for half its provider's idle expiry
//     (Connection.IdleExpiry: Xero 60 days, Entra 90) is redeemed to keep
//     it alive;
//   - a client secret whose recorded expiry is within 30 days is warned
//     about, at 30, 14 and 7 days and once expired.
//
// When the store is a SecretLister, one list call tells which tokens are
// fresh, how old each refresh token is and when each client secret
// expires: with Key Vault, one paged request instead of reads per
// connection.
//
// A sweep ends inside ctx's deadline, when it has one. Connections are
// taken most due first (see sweepDue), and none is started once less than
// the reserve (two refreshes' RefreshTimeout, at most half the time the
// sweep had) is left: the ones started finish before the deadline, and the
// rest are answered SweepDeferred. The next sweep needs no cursor to carry
// on: what was refreshed is now due last, so the deferred connections come
// first, on whichever instance runs it, after any SIGKILL. The order is
// the store's expiry dates, which every instance reads alike.
//
// The time left is read once, from the real clock; the time spent is
// counted on the broker's clock (Options.Now), so a test can run a sweep
// of hours in no time.
func (b *Broker) Sweep(ctx context.Context, horizon time.Duration) []SweepResult {
	// First, refresh tokens the store refused, from their write-ahead
	// records into the store (writeahead.go).
	b.reconcileWriteAhead(ctx)
	start := b.now()
	listed := b.listSecrets(ctx)
	stopAt, bounded := b.sweepStop(ctx, start)

	type item struct {
		i   int
		due time.Time
	}
	items := make([]item, len(b.order))
	for i, name := range b.order {
		items[i] = item{i, b.sweepDue(ctx, b.conns[name], listed)}
	}
	// Stable: equally due connections keep the configuration's order.
	slices.SortStableFunc(items, func(x, y item) int { return x.due.Compare(y.due) })

	results := make([]SweepResult, len(b.order))
	var g errgroup.Group
	g.SetLimit(DefaultSweepParallelism)
	for _, it := range items {
		st := b.conns[b.order[it.i]]
		// Go blocks until a slot is free, so the check below runs when the
		// connection would really start.
		g.Go(func() error {
			if bounded && !b.now().Before(stopAt) {
				results[it.i] = SweepResult{Connection: st.conn.Name, Action: SweepDeferred,
					ExpiresOn: b.secretInfo(ctx, listed, st.conn.Secrets.AccessToken).ExpiresOn,
					Reason:    "the sweep stopped starting refreshes to answer before its deadline; the next sweep starts with this connection"}
				return nil
			}
			results[it.i] = b.sweepOne(ctx, st, horizon, listed)
			b.sweepStandby(ctx, st, listed, &results[it.i])
			return nil
		})
	}
	_ = g.Wait()
	return results
}

// sweepStop is when a sweep that started at start (on the broker's clock)
// starts no more connections: the reserve before ctx's deadline. bounded
// is false when ctx has no deadline.
func (b *Broker) sweepStop(ctx context.Context, start time.Time) (stopAt time.Time, bounded bool) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return time.Time{}, false
	}
	left := time.Until(deadline)
	// One connection is at most two flights (a refresh for the warm token,
	// then one that keeps an idle refresh token alive), each bounded by
	// RefreshTimeout. A short budget still starts something in its first
	// half rather than nothing at all.
	reserve := min(2*b.refreshTimeout, left/2)
	return start.Add(left - reserve), true
}

// sweepDue is when the sweep must act on a connection at the latest: the
// access token's expiry when it is kept warm (none stored: now, first of
// all), the day its refresh token has been idle for half its idle expiry,
// whichever comes first. A connection with nothing to keep comes last.
func (b *Broker) sweepDue(ctx context.Context, st *connState, listed map[string]SecretInfo) time.Time {
	c := &st.conn
	due := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	var access SecretInfo
	if c.KeepWarm || c.IdleExpiry > 0 {
		access = b.secretInfo(ctx, listed, c.Secrets.AccessToken)
	}
	if c.KeepWarm {
		due = access.ExpiresOn
	}
	if c.Grant == GrantRefreshToken && c.IdleExpiry > 0 {
		lastUsed := access.UpdatedOn
		if r := b.secretInfo(ctx, listed, c.Secrets.RefreshToken); r.UpdatedOn.After(lastUsed) {
			lastUsed = r.UpdatedOn
		}
		if idle := lastUsed.Add(c.IdleExpiry / 2); !lastUsed.IsZero() && idle.Before(due) {
			due = idle
		}
	}
	return due
}

// listSecrets describes the store's secrets by name, or returns nil when
// the store cannot list or the listing failed (the sweep then reads each
// secret it needs).
func (b *Broker) listSecrets(ctx context.Context) map[string]SecretInfo {
	l, ok := b.store.(SecretLister)
	if !ok {
		return nil
	}
	infos, err := l.List(ctx)
	if err != nil {
		b.log.Warn("could not list the store's secrets; reading each connection's secrets instead",
			"event", "sweep.list_failed", "error", err.Error())
		return nil
	}
	m := make(map[string]SecretInfo, len(infos))
	for _, in := range infos {
		// Secret names are case-insensitive in Key Vault: an operator may
		// have created Xero-Client-Secret.
		m[strings.ToLower(in.Name)] = in
	}
	return m
}

// secretInfo describes one secret: from the listing when there is one (a
// secret missing from it does not exist), else from the store.
func (b *Broker) secretInfo(ctx context.Context, listed map[string]SecretInfo, name string) SecretInfo {
	if listed != nil {
		return listed[strings.ToLower(name)]
	}
	s, err := b.store.Get(ctx, name)
	if err != nil {
		return SecretInfo{Name: name}
	}
	return SecretInfo{Name: name, ExpiresOn: s.ExpiresOn, UpdatedOn: s.UpdatedOn}
}

func (b *Broker) sweepOne(ctx context.Context, st *connState, horizon time.Duration, listed map[string]SecretInfo) SweepResult {
	c := &st.conn
	r := SweepResult{Connection: c.Name, Action: SweepFresh}
	r.Warnings = b.secretWarnings(st, b.secretInfo(ctx, listed, c.Secrets.ClientSecret))
	access := b.secretInfo(ctx, listed, c.Secrets.AccessToken)
	r.ExpiresOn = access.ExpiresOn

	if c.KeepWarm && !b.freshInListing(st, access, horizon) {
		st.mu.Lock()
		before := st.refreshes
		st.mu.Unlock()
		tok, err := b.token(ctx, st, want{minValidity: min(horizon, MaxMinValidity), upToHalfLife: true})
		if err != nil {
			r.Action, r.Err = SweepFailed, asError(c.Name, err)
			return r
		}
		r.ExpiresOn = tok.Expiry
		st.mu.Lock()
		refreshed := st.refreshes > before
		st.mu.Unlock()
		if refreshed {
			r.Action, r.Reason = SweepRefreshed, refreshReason(access, b.now())
			return r
		}
	}

	if c.Grant != GrantRefreshToken || c.IdleExpiry <= 0 {
		return r
	}
	// Every refresh writes the access token, so the later of its write
	// and the refresh token's is when the refresh token was last redeemed
	// (or stored by an operator).
	refresh := b.secretInfo(ctx, listed, c.Secrets.RefreshToken)
	lastUsed := access.UpdatedOn
	if refresh.UpdatedOn.After(lastUsed) {
		lastUsed = refresh.UpdatedOn
	}
	now := b.now()
	if lastUsed.IsZero() || now.Sub(lastUsed) < c.IdleExpiry/2 {
		return r
	}
	tok, err := b.refreshNow(ctx, st, now.Add(-c.IdleExpiry/2))
	if err != nil {
		r.Action, r.Err = SweepFailed, asError(c.Name, err)
		return r
	}
	r.Action, r.ExpiresOn = SweepKeptAlive, tok.Expiry
	r.Reason = fmt.Sprintf("the refresh token was last used %d days ago; %s drops unused ones after %d days",
		int(now.Sub(lastUsed)/(24*time.Hour)), c.Provider, int(c.IdleExpiry/(24*time.Hour)))
	b.log.Info("refresh token kept alive", "event", "sweep.kept_alive", "connection", c.Name,
		"idle_days", int(now.Sub(lastUsed)/(24*time.Hour)), "idle_expiry_days", int(c.IdleExpiry/(24*time.Hour)))
	return r
}

// secretWarnings warns when the client secret's recorded expiry is near.
// Each threshold is logged once per instance; the warning itself is
// returned on every sweep, for the timer's invocation log.
func (b *Broker) secretWarnings(st *connState, secret SecretInfo) []string {
	if secret.ExpiresOn.IsZero() {
		return nil
	}
	left := secret.ExpiresOn.Sub(b.now())
	days := int(left / (24 * time.Hour))
	threshold := -1
	for _, d := range secretWarningDays {
		if left <= time.Duration(d)*24*time.Hour {
			threshold = d
		}
	}
	if threshold < 0 {
		return nil
	}
	c := &st.conn
	var w string
	if left <= 0 {
		w = fmt.Sprintf("client secret %q expired on %s: token requests will fail until a new one is stored", c.Secrets.ClientSecret, secret.ExpiresOn.UTC().Format(time.DateOnly))
	} else {
		w = fmt.Sprintf("client secret %q expires on %s, in %d days: create a new one at the provider and store it, with its expiry date", c.Secrets.ClientSecret, secret.ExpiresOn.UTC().Format(time.DateOnly), days)
	}
	st.mu.Lock()
	first := st.secretWarned == 0 || threshold+1 < st.secretWarned
	if first {
		st.secretWarned = threshold + 1
	}
	st.mu.Unlock()
	if first {
		b.log.Warn(w, "event", "secret.expiring", "connection", c.Name, "secret", c.Secrets.ClientSecret,
			"expires_on", secret.ExpiresOn.UTC().Format(time.RFC3339), "days_left", days, "threshold_days", threshold)
	}
	return []string{w}
}

// freshInListing reports whether the listed access token stays valid past
// the sweep's horizon, judged as Token would judge the token itself.
func (b *Broker) freshInListing(st *connState, info SecretInfo, horizon time.Duration) bool {
	if info.ExpiresOn.IsZero() {
		return false
	}
	ct := storedToken("", info.ExpiresOn, info.UpdatedOn)
	w := want{minValidity: min(horizon, MaxMinValidity), upToHalfLife: true}
	return ct.validFor(b.now(), st.need(w.of(ct.lifetime), ct.lifetime))
}

// refreshReason says why the sweep refreshed a warm connection.
func refreshReason(access SecretInfo, now time.Time) string {
	switch {
	case access.ExpiresOn.IsZero():
		return "no access token was stored"
	case !access.ExpiresOn.After(now):
		return "the access token had expired"
	}
	return "the access token was about to expire"
}
