package broker

// Steps 1 to 3 of the refresh protocol: the token in memory, one flight per
// connection, and the store's access token.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/singleflight"
)

type cachedToken struct {
	token AccessToken
	// lifetime is how long the provider made the token valid; zero when
	// unknown.
	lifetime time.Duration
	// inferred: lifetime is an estimate from when the store wrote the
	// token, not what the provider issued (a token stored without its
	// lifetime). A late write makes it too short, so it may shape margins
	// but never refuse a request (refuses).
	inferred bool
	// source is where this instance got it: the store, or a refresh.
	source Source
}

// refuses reports whether w asks more than any token of this one's
// provider can give, judged by a lifetime the provider stated: an
// inferred one refreshes instead.
func (ct *cachedToken) refuses(w want) bool {
	return !ct.inferred && w.impossible(ct.lifetime)
}

// want is what a request needs of a token.
type want struct {
	minValidity time.Duration
	// upToHalfLife is set by the sweep: its horizon may exceed what the
	// provider's tokens live, and half the lifetime then serves as well.
	upToHalfLife bool
	// refreshedSince, when set, asks for a token refreshed at or after it,
	// however valid the current one: an operator's force-refresh, or the
	// sweep keeping an idle refresh token alive. A refresh by another
	// instance since then counts.
	refreshedSince time.Time
}

// of returns the minValidity that applies to a token of the given lifetime.
func (w want) of(lifetime time.Duration) time.Duration {
	if w.upToHalfLife && lifetime > 0 {
		return min(w.minValidity, lifetime/2)
	}
	return w.minValidity
}

// impossible reports whether no token of the given lifetime can satisfy w.
func (w want) impossible(lifetime time.Duration) bool {
	return !w.upToHalfLife && w.minValidity > maxMinValidityFor(lifetime)
}

func (b *Broker) token(ctx context.Context, st *connState, w want) (AccessToken, error) {
	name := st.conn.Name
	// Step 1, the fast path (fromMemory, which Peek shares).
	if ct, served, refused := b.fromMemory(st, w, b.now()); refused {
		return AccessToken{}, lifetimeError(name, w.minValidity, ct.lifetime)
	} else if served {
		return ct.token, nil
	}

	// Step 2: a flight serves everyone who asked while it ran. A caller wanting a
	// longer validity than the flight's starter may need one more flight.
	for range 2 {
		start := b.now()
		r, ok := b.join(ctx, st, st.flightKey, w)
		if !ok {
			return AccessToken{}, &Error{
				Code:        CodeUnavailable,
				Connection:  name,
				Message:     "gave up waiting for the token refresh: " + ctx.Err().Error(),
				Remediation: "Retry; a refresh already under way finishes without this caller, and the next call is likely served from cache.",
				RetryAfter:  5 * time.Second,
			}
		}
		if r.Err != nil {
			return AccessToken{}, asError(name, r.Err)
		}
		ct := r.Val.(*cachedToken)
		now := b.now()
		if ct.validFor(now, st.need(w.of(ct.lifetime), ct.lifetime)) {
			b.observeServed(name, ct, ct.source, now)
			return ct.token, nil
		}
		if ct.refuses(w) || (ct.lifetime > 0 && !ct.inferred && !ct.issuedBefore(start)) {
			// Freshly issued and still not enough: the margin plus the
			// caller's minValidity exceed what the provider grants.
			return AccessToken{}, lifetimeError(name, w.minValidity, ct.lifetime)
		}
	}
	return AccessToken{}, &Error{
		Code:        CodeUnavailable,
		Connection:  name,
		Message:     "could not obtain a token valid for the requested time",
		Remediation: "Retry, or ask for a smaller minValidity.",
		RetryAfter:  5 * time.Second,
	}
}

// fromMemory is step 1, the fast path: no allocation, no lock. served: the
// token in memory (ct) is valid for w, and was observed as served from
// memory. refused: w asks more than ct's provider gives, an error even
// when ct happens to satisfy it, so the answer does not depend on timing.
// Both are false when there is no token in memory or it is not valid long
// enough. The token is judged, and observed, at now.
func (b *Broker) fromMemory(st *connState, w want, now time.Time) (ct *cachedToken, served, refused bool) {
	ct = st.cached.Load()
	if ct == nil {
		return nil, false, false
	}
	if ct.refuses(w) {
		return ct, false, true
	}
	if !ct.validFor(now, st.need(w.of(ct.lifetime), ct.lifetime)) {
		return ct, false, false
	}
	b.observeServed(st.conn.Name, ct, SourceMemory, now)
	return ct, true, false
}

// maxMinValidityFor is the largest minValidity a token of the given
// lifetime can satisfy with room to spare: a fresh token has already lost
// the time the request and the store writes took, and a minValidity just
// under the lifetime would otherwise refresh on every call.
func maxMinValidityFor(lifetime time.Duration) time.Duration {
	if lifetime <= 0 {
		return MaxMinValidity
	}
	return lifetime - min(time.Minute, lifetime/10)
}

func lifetimeError(name string, minValidity, lifetime time.Duration) *Error {
	most := int(maxMinValidityFor(lifetime) / time.Second)
	return &Error{
		Code:       CodeBadRequest,
		Connection: name,
		Message: fmt.Sprintf("minValidity %ds is more than a token of this provider can offer: they live %ds, so at most %ds can be promised",
			int(minValidity/time.Second), int(lifetime/time.Second), most),
		Remediation: fmt.Sprintf("Ask for a minValidity of at most %d seconds.", most),
	}
}

// need is how long a token must stay valid to be served: the caller's
// minValidity, and at least the connection's refresh margin, which is
// capped at half the token's lifetime so short-lived tokens still serve
// most of their life.
func (st *connState) need(minValidity, lifetime time.Duration) time.Duration {
	margin := st.conn.RefreshBefore
	if lifetime > 0 && margin > lifetime/2 {
		margin = lifetime / 2
	}
	return max(margin, minValidity)
}

func (ct *cachedToken) validFor(now time.Time, need time.Duration) bool {
	return ct.token.Expiry.Sub(now) > need
}

func (ct *cachedToken) issuedBefore(t time.Time) bool {
	return ct.lifetime > 0 && ct.token.Expiry.Add(-ct.lifetime).Before(t)
}

// flight (step 2) starts the refresh flight named key for st, or joins the
// one under way. Once Close has begun, no new flight starts.
func (b *Broker) flight(key string, st *connState, w want) <-chan singleflight.Result {
	return b.flights.DoChan(key, func() (any, error) {
		if !b.running.enter() {
			return nil, errClosing(st.conn.Name)
		}
		defer b.running.leave()
		return b.obtain(st, w)
	})
}

// fromStore (steps 3 and 5) reads the access token from the store and
// caches it. ok is
// false when the store has none valid for w. A w that no token of this
// provider can satisfy is an error here already, before any refresh.
func (b *Broker) fromStore(ctx context.Context, st *connState, w want) (*cachedToken, bool, error) {
	s, err := b.readAccessToken(ctx, st)
	if errors.Is(err, ErrSecretNotFound) {
		return nil, false, nil
	}
	if err != nil {
		b.observe.StoreFailed(st.conn.Name, "read")
		return nil, false, b.accessReadError(st, err)
	}
	if s.Value.IsZero() || s.ExpiresOn.IsZero() {
		return nil, false, nil
	}
	ct := storedToken(s.Value, s.ExpiresOn, s.UpdatedOn)
	if s.Lifetime > 0 {
		// Recorded at issue (persist): the provider's figure, however
		// late the store wrote it.
		ct.lifetime, ct.inferred = s.Lifetime, false
	}
	st.remember(ct)
	if since := w.refreshedSince; !since.IsZero() {
		// Every refresh writes the access token, so its write time is
		// when the connection was last refreshed, by any instance. Key
		// Vault keeps whole seconds; compare at the store's precision.
		if s.UpdatedOn.Nanosecond() == 0 {
			since = since.Truncate(time.Second)
		}
		return ct, !s.UpdatedOn.IsZero() && !s.UpdatedOn.Before(since), nil
	}
	if ct.refuses(w) {
		return nil, false, lifetimeError(st.conn.Name, w.minValidity, ct.lifetime)
	}
	return ct, ct.validFor(b.now(), st.need(w.of(ct.lifetime), ct.lifetime)), nil
}

// storedToken is an access token as the store keeps it, its lifetime
// inferred from when the store wrote it. That is when it was issued only
// if the write was prompt (Key Vault records its own write time, and a
// write retried through an outage lands late), so the figure is marked
// inferred; fromStore replaces it with the lifetime recorded at issue
// when the store kept one.
func storedToken(value Secret, expires, updated time.Time) *cachedToken {
	ct := &cachedToken{token: AccessToken{Value: value, TokenType: "Bearer", Expiry: expires}, source: SourceStore}
	if !updated.IsZero() && expires.After(updated) {
		ct.lifetime, ct.inferred = expires.Sub(updated), true
	}
	return ct
}

// remember caches ct unless a token that lives longer is already cached.
func (st *connState) remember(ct *cachedToken) {
	for {
		old := st.cached.Load()
		if old != nil && !old.token.Expiry.Before(ct.token.Expiry) {
			return
		}
		if st.cached.CompareAndSwap(old, ct) {
			return
		}
	}
}
