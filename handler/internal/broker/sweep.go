package broker

import (
	"context"
	"fmt"
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
func (b *Broker) Sweep(ctx context.Context, horizon time.Duration) []SweepResult {
	// First, refresh tokens the store refused, from their write-ahead
	// records into the store (writeahead.go).
	b.reconcileWriteAhead(ctx)
	listed := b.listSecrets(ctx)
	results := make([]SweepResult, len(b.order))
	var g errgroup.Group
	g.SetLimit(DefaultSweepParallelism)
	for i, name := range b.order {
		g.Go(func() error {
			results[i] = b.sweepOne(ctx, b.conns[name], horizon, listed)
			return nil
		})
	}
	_ = g.Wait()
	return results
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
