package broker

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
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

// DefaultSweepParallelism is how many connections a sweep refreshes at once
// when its store paces no writes (the local store), and the least it
// refreshes at once when the store does (SweepPacer): then the pacer sets
// the write rate, and the parallelism follows it and the measured time of
// a refresh (sweepParallelism).
const DefaultSweepParallelism = 4

// MaxSweepParallelism bounds the parallelism a SweepPacer's rate can ask
// for, however slow the provider.
const MaxSweepParallelism = 64

// listReuse is how long a sweep may go by the last walk of the store's
// list and this instance's memory instead of walking it again: what else
// the walk tells (client-secret expiries, refresh-token ages for idle
// expiry) counts in days, and a token only gets fresher than the walk saw.
const listReuse = time.Hour

// SweepPacer is implemented by a SecretStore that paces its writes to a
// budget (keyvault.Pacer: Key Vault allows 300 secret writes per 10 s per
// vault). The sweep asks it for room before each refresh, so that callers'
// on-demand refreshes keep a reserve of the budget, and sizes its
// parallelism from its rate.
type SweepPacer interface {
	// AwaitSweepRoom blocks until n writes fit in the budget with the
	// callers' reserve left over, and sets them aside for the writes that
	// follow; or until ctx ends (its error).
	AwaitSweepRoom(ctx context.Context, n int) error
	// WriteRate is the writes per second the pacer allows now.
	WriteRate() float64
}

// sweepState is what sweeps remember between runs on one instance.
type sweepState struct {
	mu sync.Mutex
	// listed is the last walk of the store's list, and when it ran.
	listed   map[string]SecretInfo
	listedAt time.Time
	// walking is set while a walk runs beside a sweep.
	walking bool
	// refreshTook is a moving average of how long one sweep refresh
	// took, zero before the first.
	refreshTook time.Duration
}

// secretWarningDays are the thresholds at which a client secret's coming
// expiry is logged (once each); Warnings carry it on every sweep.
var secretWarningDays = []int{30, 14, 7, 0}

// Sweep goes over every connection, DefaultSweepParallelism at a time or,
// when the store paces its writes (SweepPacer), as many as its write rate
// and the measured refresh time call for, through the same protocol as
// Token (locks, singleflight and all):
//
//   - a connection kept warm (Connection.KeepWarm) whose token expires
//     within horizon (the time until the next sweep plus the refresh
//     margin; callers pass twice the timer's period, and the sweep takes
//     horizon/2 for the period) is refreshed, so callers between sweeps are served from
//     cache; so is one whose own point in the refresh cycle has come since
//     its token was issued (slotPassed), which spreads connections
//     refreshed together over one cycle;
//   - with a SweepPacer, each refresh first waits for room in the write
//     budget with a reserve left for callers;
//   - a refresh token unused for half its provider's idle expiry
//     (Connection.IdleExpiry: Xero 60 days, Entra 90) is redeemed to keep
//     it alive;
//   - a client secret whose recorded expiry is within 30 days is warned
//     about, at 30, 14 and 7 days and once expired.
//
// When the store is a SecretLister, one list call tells which tokens are
// fresh, how old each refresh token is and when each client secret
// expires: with Key Vault, one paged request instead of reads per
// connection. Within an hour of a walk, the sweep goes by that walk and
// the tokens in this instance's memory, and walks nothing (sweepListing).
//
// A sweep whose ctx has a deadline (a timer invocation) starts no
// refresh once it has run one timer period (horizon/2, counted from
// before the list walk): the refreshes started finish, and the
// connections not reached are answered SweepDeferred. Every invocation
// then fits its period, which a scale-in drain (it waits for running
// invocations) and a deployment (it ends them) want, at little cost in
// throughput: the host starts the next invocation at once when one ran
// past its tick (TimerListener.InvokeJobFunction sets ScheduleStatus.Next
// from the invocation's start, and GetNextTimerInterval makes a past Next
// one tick away; Azure/azure-webjobs-sdk-extensions,
// src/WebJobs.Extensions/Extensions/Timers/Listener/TimerListener.cs).
// Scale-in and deployment: a running execution gets a 60-minute grace
// period during scale-in on Flex Consumption
// (learn.microsoft.com/azure/azure-functions/functions-scale#timeout,
// "Function app timeout duration", note 2; MicrosoftDocs/azure-docs
// includes/functions-timeout-duration.md), and the default site update strategy,
// Recreate, terminates in-progress executions
// (learn.microsoft.com/azure/azure-functions/flex-consumption-site-updates).
//
// A sweep with no deadline (the standalone loop) runs to the end, in
// passes of one period at most, each most due first; one that has run
// past its period goes on with further passes while they find work, so
// the write budget does not sit idle while connections are due, and a
// connection found fresh is looked at again within a period.
//
// Inside the period, the deadline is the outer bound (for a period longer
// than functionTimeout). Connections are taken most due first (see
// sweepDue), and none is started once less than the reserve (two
// refreshes' RefreshTimeout, at most half the time the sweep had) is
// left: the ones started finish before the deadline, and the rest are
// answered SweepDeferred. The next sweep needs no cursor to carry
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
	listed, walked := b.sweepListing(ctx)
	defer walked()
	stopAt, bounded := b.sweepStop(ctx, start, horizon/2)

	// The set current now: a swap while the sweep runs takes effect at
	// the next sweep.
	conns := b.connList()
	results := make([]SweepResult, len(conns))
	// A pass lasts one period (horizon/2) at most: a connection it found
	// fresh is looked at again within a period, as the next tick's sweep
	// would, however long the sweep runs. One that has not been reached
	// when the period is over is taken first, by due, by the next pass.
	every := horizon / 2
	passEnd := func() time.Time {
		if every <= 0 {
			return time.Time{}
		}
		return b.now().Add(every)
	}
	refreshed, unreached := b.sweepPass(ctx, conns, results, horizon, listed, passEnd(), stopAt, bounded)
	// A sweep that ran past its period (one with no deadline: a timer
	// invocation stops at its period, sweepStop) goes over the
	// connections again while its passes find work: connections whose
	// turn came while it ran are refreshed now.
	for (unreached > 0 || refreshed > 0 && b.now().Sub(start) > every) && (!bounded || b.now().Before(stopAt)) {
		again := make([]SweepResult, len(conns))
		for i := range again {
			if results[i].Action == SweepFailed {
				// Failed once this sweep: the next sweep retries it.
				again[i] = results[i]
			}
		}
		refreshed, unreached = b.sweepPass(ctx, conns, again, horizon, b.sweepOverlay(), passEnd(), stopAt, bounded)
		for i, r := range again {
			if results[i].Action == "" || r.Action == SweepRefreshed || r.Action == SweepKeptAlive || (r.Action == SweepFailed && results[i].Action != SweepFailed) {
				results[i] = r
			}
		}
	}
	// One overlay for all the deferred: each is a copy of the whole walk.
	var overlay map[string]SecretInfo
	overlaid := false
	for i, r := range results {
		if r.Action == "" {
			if !overlaid {
				overlay, overlaid = b.sweepOverlay(), true
			}
			results[i] = b.deferred(ctx, conns[i], overlay)
		}
	}
	return results
}

// sweepPass goes over conns once, most due first, filling results (a
// connection whose result is already set is skipped), and returns how
// many it refreshed or kept alive. It starts no connection but its first
// after passEnd (unless zero), and leaves those unset (unreached); from
// stopAt, when bounded, it defers them.
func (b *Broker) sweepPass(ctx context.Context, conns []*connState, results []SweepResult, horizon time.Duration,
	listed map[string]SecretInfo, passEnd, stopAt time.Time, bounded bool) (acted, unreached int) {
	type item struct {
		i   int
		due time.Time
	}
	items := make([]item, 0, len(conns))
	for i, st := range conns {
		if results[i].Action == "" {
			items = append(items, item{i, b.sweepDue(ctx, st, listed)})
		}
	}
	// Stable: equally due connections keep the configuration's order.
	slices.SortStableFunc(items, func(x, y item) int { return x.due.Compare(y.due) })

	// A semaphore whose size may change while the sweep runs: it follows
	// the pacer's rate, which a 429 lowers, and the refresh time measured.
	var (
		mu      sync.Mutex
		cond    = sync.NewCond(&mu)
		running int
		wg      sync.WaitGroup
	)
	for k, it := range items {
		st := conns[it.i]
		mu.Lock()
		for running >= b.sweepParallelism() {
			cond.Wait()
		}
		running++
		mu.Unlock()
		// The check below runs when the connection would really start.
		wg.Go(func() {
			defer func() {
				mu.Lock()
				running--
				cond.Broadcast()
				mu.Unlock()
			}()
			if bounded && !b.now().Before(stopAt) {
				results[it.i] = b.deferred(ctx, st, listed)
				return
			}
			if k > 0 && !passEnd.IsZero() && !b.now().Before(passEnd) {
				return
			}
			results[it.i] = b.sweepOne(ctx, st, horizon, listed, stopAt, bounded)
			b.sweepStandby(ctx, st, listed, &results[it.i])
		})
	}
	wg.Wait()
	for _, it := range items {
		switch results[it.i].Action {
		case SweepRefreshed, SweepKeptAlive:
			acted++
		case "":
			unreached++
		}
	}
	return acted, unreached
}

func (b *Broker) deferred(ctx context.Context, st *connState, listed map[string]SecretInfo) SweepResult {
	return SweepResult{Connection: st.conn.Name, Action: SweepDeferred,
		ExpiresOn: b.secretInfo(ctx, listed, st.conn.Secrets.AccessToken).ExpiresOn,
		Reason:    "the sweep stopped starting refreshes at the end of its timer period or before its deadline; the next sweep starts with this connection"}
}

// sweepParallelism is how many refreshes the sweep runs at once: with a
// pacer, enough to keep its write rate busy while each refresh takes the
// time measured (Little's law, twice over), at least
// DefaultSweepParallelism and at most MaxSweepParallelism.
func (b *Broker) sweepParallelism() int {
	p, ok := b.store.(SweepPacer)
	if !ok {
		return DefaultSweepParallelism
	}
	b.sweeps.mu.Lock()
	took := b.sweeps.refreshTook
	b.sweeps.mu.Unlock()
	if took <= 0 {
		return DefaultSweepParallelism
	}
	// At least one write a refresh (the access token; a rotated refresh
	// token is a second), and twice the refreshes Little's law asks
	// for, so the rate, not the parallelism, is what holds the sweep.
	n := int(math.Ceil(p.WriteRate() * took.Seconds() * 2))
	return min(max(n, DefaultSweepParallelism), MaxSweepParallelism)
}

// measured adds one sweep refresh's duration to the moving average.
func (b *Broker) measured(took time.Duration) {
	b.sweeps.mu.Lock()
	defer b.sweeps.mu.Unlock()
	if b.sweeps.refreshTook == 0 {
		b.sweeps.refreshTook = took
		return
	}
	b.sweeps.refreshTook += (took - b.sweeps.refreshTook) / 8
}

// writesPerRefresh is how many store writes a refresh of c makes: the
// access token, and the refresh token when the provider rotates it.
func writesPerRefresh(c *Connection) int {
	if c.Grant == GrantRefreshToken && c.Rotating {
		return 2
	}
	return 1
}

// sweepListing describes the store's secrets for this sweep. It walks the
// store's list at most once per listReuse; in between, the last walk, with
// the newer access tokens this instance holds in memory, tells the same at
// no cost. A token that looks due there and that a peer has refreshed
// since costs one read (a refresh reads the store before anything else),
// never a write; a token never looks fresher than it is.
//
// Only the first walk holds the sweep up. Later ones run beside the sweep,
// which goes by the last walk meanwhile: Key Vault lists 25 secrets a
// page (Get Secrets, maxresults: "If not specified, the service will
// return up to 25 results", learn.microsoft.com/rest/api/keyvault/secrets/get-secrets),
// so a walk over 45,000 connections is some 3,600 pages, minutes in
// which a sweep waiting for it would leave the write budget idle. walked
// waits for such a walk; the sweep calls it before it returns.
func (b *Broker) sweepListing(ctx context.Context) (listed map[string]SecretInfo, walked func()) {
	walked = func() {}
	if _, ok := b.store.(SecretLister); !ok {
		return nil, walked
	}
	b.sweeps.mu.Lock()
	prev, at, walking := b.sweeps.listed, b.sweeps.listedAt, b.sweeps.walking
	stale := prev != nil && !walking && b.now().Sub(at) >= listReuse
	if stale {
		b.sweeps.walking = true
	}
	b.sweeps.mu.Unlock()
	switch {
	case prev == nil:
		if b.walk(ctx) == nil {
			return nil, walked
		}
	case stale:
		done := make(chan struct{})
		go func() {
			defer close(done)
			b.walk(ctx)
		}()
		walked = func() { <-done }
	}
	return b.sweepOverlay(), walked
}

// walk lists the store's secrets and keeps them for the sweeps that
// follow; nil when the listing failed.
func (b *Broker) walk(ctx context.Context) map[string]SecretInfo {
	m := b.listSecrets(ctx)
	b.sweeps.mu.Lock()
	defer b.sweeps.mu.Unlock()
	b.sweeps.walking = false
	if m != nil {
		b.sweeps.listed, b.sweeps.listedAt = m, b.now()
	}
	return m
}

// sweepOverlay is the last walk of the store's list with the newer access
// tokens this instance holds in memory laid over it; nil before any walk.
func (b *Broker) sweepOverlay() map[string]SecretInfo {
	b.sweeps.mu.Lock()
	prev := b.sweeps.listed
	b.sweeps.mu.Unlock()
	if prev == nil {
		return nil
	}
	m := make(map[string]SecretInfo, len(prev))
	for k, v := range prev {
		m[k] = v
	}
	for _, st := range b.connList() {
		ct := st.cached.Load()
		if ct == nil || ct.lifetime <= 0 {
			continue
		}
		key := strings.ToLower(st.conn.Secrets.AccessToken)
		if old := m[key]; ct.token.Expiry.After(old.ExpiresOn) {
			m[key] = SecretInfo{Name: st.conn.Secrets.AccessToken, ExpiresOn: ct.token.Expiry, UpdatedOn: ct.token.Expiry.Add(-ct.lifetime)}
		}
	}
	return m
}

// sweepStop is when a sweep that started at start (on the broker's clock)
// starts no more connections: the end of its timer period (every, when
// positive) or the reserve before ctx's deadline, whichever comes first.
// bounded is false when ctx has no deadline.
func (b *Broker) sweepStop(ctx context.Context, start time.Time, every time.Duration) (stopAt time.Time, bounded bool) {
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
	stopAt = start.Add(left - reserve)
	if every > 0 && start.Add(every).Before(stopAt) {
		stopAt = start.Add(every)
	}
	return stopAt, true
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

func (b *Broker) sweepOne(ctx context.Context, st *connState, horizon time.Duration, listed map[string]SecretInfo, stopAt time.Time, bounded bool) SweepResult {
	c := &st.conn
	r := SweepResult{Connection: c.Name, Action: SweepFresh}
	// Every client secret a connection names is warned about: during a
	// rotation the old one expiring is expected, the new one is not.
	for _, name := range c.ClientSecretNames() {
		info := b.secretInfo(ctx, listed, name)
		info.Name = name
		r.Warnings = append(r.Warnings, b.secretWarnings(st, info)...)
	}
	access := b.secretInfo(ctx, listed, c.Secrets.AccessToken)
	r.ExpiresOn = access.ExpiresOn

	if c.KeepWarm {
		due := !b.freshInListing(st, access, horizon)
		slot, turn := time.Time{}, false
		if !due {
			slot, turn = b.slotPassed(st, access, horizon)
		}
		if due || turn {
			if !b.awaitSweepRoom(ctx, c, stopAt, bounded) {
				return b.deferred(ctx, st, listed)
			}
			st.mu.Lock()
			before := st.refreshes
			st.mu.Unlock()
			started := b.now()
			var tok AccessToken
			var err error
			if due {
				tok, err = b.token(ctx, st, want{minValidity: min(horizon, MaxMinValidity), upToHalfLife: true})
			} else {
				tok, err = b.refreshNow(ctx, st, slot)
			}
			if err != nil {
				r.Action, r.Err = SweepFailed, asError(c.Name, err)
				return r
			}
			r.ExpiresOn = tok.Expiry
			st.mu.Lock()
			refreshed := st.refreshes > before
			st.mu.Unlock()
			if refreshed {
				b.measured(b.now().Sub(started))
				r.Action, r.Reason = SweepRefreshed, refreshReason(access, b.now())
				if !due {
					r.Reason = "its turn in the refresh cycle came (" + slot.UTC().Format(time.RFC3339) + ")"
				}
				return r
			}
			if due {
				// The listing did not know the token: another instance
				// refreshed it, or it is kept beside the lock, where the
				// store's list says nothing (a cold start reads every
				// one). Now it is known, its turn may have come.
				if res, ok := b.sweepTurn(ctx, st, horizon, stopAt, bounded); ok {
					res.Warnings = r.Warnings
					return res
				}
			}
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
	if !b.awaitSweepRoom(ctx, c, stopAt, bounded) {
		return b.deferred(ctx, st, listed)
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

// sweepTurn refreshes a warm connection whose token this instance holds
// in memory when its turn in the refresh cycle has come (slotPassed). ok
// is false when it did nothing.
func (b *Broker) sweepTurn(ctx context.Context, st *connState, horizon time.Duration, stopAt time.Time, bounded bool) (SweepResult, bool) {
	c := &st.conn
	ct := st.cached.Load()
	if ct == nil || ct.lifetime <= 0 {
		return SweepResult{}, false
	}
	known := SecretInfo{Name: c.Secrets.AccessToken, ExpiresOn: ct.token.Expiry, UpdatedOn: ct.token.Expiry.Add(-ct.lifetime)}
	slot, turn := b.slotPassed(st, known, horizon)
	if !turn {
		return SweepResult{}, false
	}
	if !b.awaitSweepRoom(ctx, c, stopAt, bounded) {
		return SweepResult{}, false
	}
	st.mu.Lock()
	before := st.refreshes
	st.mu.Unlock()
	started := b.now()
	tok, err := b.refreshNow(ctx, st, slot)
	if err != nil {
		return SweepResult{Connection: c.Name, Action: SweepFailed, ExpiresOn: ct.token.Expiry, Err: asError(c.Name, err)}, true
	}
	st.mu.Lock()
	refreshed := st.refreshes > before
	st.mu.Unlock()
	if !refreshed {
		return SweepResult{}, false
	}
	b.measured(b.now().Sub(started))
	return SweepResult{Connection: c.Name, Action: SweepRefreshed, ExpiresOn: tok.Expiry,
		Reason: "its turn in the refresh cycle came (" + slot.UTC().Format(time.RFC3339) + ")"}, true
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
		w = fmt.Sprintf("client secret %q expired on %s: token requests will fail until a new one is stored", secret.Name, secret.ExpiresOn.UTC().Format(time.DateOnly))
	} else {
		w = fmt.Sprintf("client secret %q expires on %s, in %d days: create a new one at the provider and store it, with its expiry date", secret.Name, secret.ExpiresOn.UTC().Format(time.DateOnly), days)
	}
	if len(c.ClientSecretNames()) > 1 {
		w += fmt.Sprintf(" (the connection tries %q in turn; a retired one can be removed from secrets.clientSecrets)", c.ClientSecretNames())
	}
	st.mu.Lock()
	if st.secretWarned == nil {
		st.secretWarned = make(map[string]int)
	}
	warned := st.secretWarned[secret.Name]
	first := warned == 0 || threshold+1 < warned
	if first {
		st.secretWarned[secret.Name] = threshold + 1
	}
	st.mu.Unlock()
	if first {
		b.log.Warn(w, "event", "secret.expiring", "connection", c.Name, "secret", secret.Name,
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

// awaitSweepRoom waits, when the store paces its writes, until the budget
// has room for one refresh of c with the callers' reserve left over. It
// reports false when the sweep reached the point where it starts nothing
// more (stopAt) first.
func (b *Broker) awaitSweepRoom(ctx context.Context, c *Connection, stopAt time.Time, bounded bool) bool {
	p, ok := b.store.(SweepPacer)
	if !ok {
		return true
	}
	if bounded {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, stopAt.Sub(b.now()))
		defer cancel()
	}
	return p.AwaitSweepRoom(ctx, b.vaultWritesPerRefresh(c)) == nil
}

// slotPassed reports whether the connection's own refresh point has come
// since its access token was issued, and which point: a connection
// refreshed together with others (a cold start, an outage) would
// otherwise come due with them in every later sweep, a burst of writes each
// cycle.
//
// Each connection refreshes once a cycle, at a phase of its own. The cycle
// is the token's lifetime (rounded to the minute) less what the sweep
// leaves before expiry (need, as freshInListing judges) less a minute: a
// token refreshed at one point is still fresh at the next, so the points
// come before the sweep would otherwise act. The phase is a hash of the
// connection's name, so the points are the same on every instance and
// after any restart, and fall evenly over the cycle. A cohort refreshed
// together is spread over one cycle: each connection refreshes early once,
// at its point, and at its points from then on. A token issued less than a
// minute before its point is left alone; a token never waits past the
// sweep's horizon for its point.
func (b *Broker) slotPassed(st *connState, access SecretInfo, horizon time.Duration) (time.Time, bool) {
	if access.ExpiresOn.IsZero() || access.UpdatedOn.IsZero() || !access.ExpiresOn.After(access.UpdatedOn) {
		return time.Time{}, false
	}
	lifetime := access.ExpiresOn.Sub(access.UpdatedOn).Round(time.Minute)
	w := want{minValidity: min(horizon, MaxMinValidity), upToHalfLife: true}
	period := (lifetime - st.need(w.of(lifetime), lifetime) - time.Minute).Truncate(time.Second)
	if period < 2*time.Minute {
		return time.Time{}, false
	}
	slot := refreshPoint(st.conn.Name, period, b.now())
	return slot, slot.After(access.UpdatedOn.Add(time.Minute))
}

// refreshPoint is the latest of name's refresh points at or before now:
// the points are period apart, at a phase from a hash of name, counted in
// whole seconds of Unix time.
func refreshPoint(name string, period time.Duration, now time.Time) time.Time {
	// SHA-256, not FNV: names that differ in a last digit (conn-001,
	// conn-002) must land far apart.
	h := sha256.Sum256([]byte(name))
	p := int64(period / time.Second)
	phase := int64(binary.BigEndian.Uint64(h[:8]) % uint64(p)) // #nosec G115 -- p is positive
	t := now.Unix()
	return time.Unix(t-((t-phase)%p+p)%p, 0)
}
