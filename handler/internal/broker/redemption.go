package broker

// The loss window, and what narrows it, reports it and keeps kills out of it.
//
// A rotating provider commits the rotation before it answers: from that
// instant the refresh token we sent is spent and the new one exists only in
// the answer on its way to us. A process killed before the write-ahead
// record holds the new token (writeahead.go) loses the chain. No ordering on
// our side closes that window; this file does the three things that can be
// done about it:
//
//   - The redemption mark. Before the provider is called, the holder leaves
//     a mark beside the lock (the lock blob's metadata; the local lock
//     file): a hash prefix of the refresh token it sends, its instance, the
//     time. The write-ahead record supersedes it; a definite answer clears
//     it. A holder that finds an unfinished mark for the very token it is
//     about to send knows the previous redemption may have committed. It
//     sends the token all the same (the provider may never have seen it, and
//     a provider with a reuse grace accepts it anyway), once, and if the
//     provider answers invalid_grant it says precisely what happened: "the
//     refresh at T on instance X was interrupted after the provider may have
//     rotated the token", in the 424, in status and in an ERROR line.
//
//   - The invocation gate. The Functions host drains a worker at scale-in:
//     it stops sending new invocations and waits for the outstanding ones
//     before it kills the process (README, "Kills and the loss window"). A
//     refresh the host does not know about gets no such grace. So a flight
//     redeems a refresh token only while some caller (an HTTP invocation, or
//     the timer's sweep) is still waiting for it, and a caller that gives up
//     while a redemption is under way keeps its invocation open until the
//     new refresh token is durable. The rest of the flight (the store, the
//     access token) may go on detached: nothing in it can lose the chain.
//
//   - The write-ahead record is the first write after the answer, and the
//     key that seals it is fetched before the provider is called, so the
//     window holds one durable write and nothing else.

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Redemption is the mark a holder leaves beside the lock before it sends a
// refresh token to the provider. It never holds the token.
type Redemption struct {
	// Token is a hash prefix of the refresh token sent (hex, 16 digits):
	// enough to tell tokens apart, nothing to recover one from.
	Token string
	// Instance names the instance that sent it.
	Instance string
	// At is when it was sent.
	At time.Time
}

// RedemptionMarker is implemented by a Lock whose backend can keep a
// Redemption beside the lock, written and cleared by the lock's holder
// only: the lock blob's metadata (bloblease), the lock file (local).
// WriteAheadLog.WriteAhead may clear the mark as part of its write.
type RedemptionMarker interface {
	// MarkRedemption records r and returns once it is durable.
	MarkRedemption(ctx context.Context, r Redemption) error
	// PendingRedemption returns the mark a previous holder left
	// unfinished; ok is false when there is none.
	PendingRedemption(ctx context.Context) (r Redemption, ok bool, err error)
	// ClearRedemption removes the mark. It need not be durable: a mark
	// left over names a token that is no longer current, and is ignored.
	ClearRedemption(ctx context.Context) error
}

func redemptionToken(s Secret) string {
	h := hashToken(s)
	return hex.EncodeToString(h[:])
}

// InterruptedMessage is how the broker reports a refresh token lost in the
// window: the provider refuses the token an interrupted redemption sent.
func InterruptedMessage(r Redemption) string {
	inst := r.Instance
	if inst == "" {
		inst = "(unnamed)"
	}
	return fmt.Sprintf("the refresh at %s on instance %s was interrupted after the provider may have rotated the token",
		r.At.UTC().Format(time.RFC3339), inst)
}

// redemptionGuard is one flight's dealing with the mark.
type redemptionGuard struct {
	marker RedemptionMarker
	// prev is an unfinished mark of the token about to be sent, left by
	// a holder that was interrupted.
	prev *Redemption
	// marked: this flight's mark is in place and not yet settled.
	marked bool
}

// beginRedemption runs just before the provider is called with cur's
// refresh token, under the lock: it fetches the write-ahead key (so that
// the window after the answer holds no read), reads any unfinished mark of
// the same token, and leaves this flight's. A mark that cannot be read or
// written is logged and the refresh goes on: the mark explains a loss, it
// does not prevent one.
func (b *Broker) beginRedemption(ctx context.Context, st *connState, lock Lock, cur current) *redemptionGuard {
	g := &redemptionGuard{}
	c := &st.conn
	if c.Grant != GrantRefreshToken || lock == nil {
		return g
	}
	if _, ok := lock.(WriteAheadLog); ok {
		_ = b.key(ctx)
	}
	m, ok := lock.(RedemptionMarker)
	if !ok {
		return g
	}
	g.marker = m
	sent := redemptionToken(cur.cred.RefreshToken)
	prev, found, err := m.PendingRedemption(ctx)
	switch {
	case err != nil:
		b.log.Warn("could not read the redemption mark beside the lock", "event", "refresh.mark_failed", "connection", c.Name, "error", err.Error())
	case found && prev.Token == sent:
		g.prev = &prev
		b.log.Warn("the previous refresh of this refresh token did not finish; sending it once more, as the provider may never have received it",
			"event", "refresh.interrupted_found", "connection", c.Name, "interrupted_at", prev.At.UTC().Format(time.RFC3339),
			"interrupted_instance", prev.Instance, "reuse_grace", c.ReuseGrace.String())
	}
	if err := m.MarkRedemption(ctx, Redemption{Token: sent, Instance: b.instance, At: b.now()}); err != nil {
		b.log.Warn("could not mark the redemption beside the lock; refreshing without it", "event", "refresh.mark_failed", "connection", c.Name, "error", err.Error())
		return g
	}
	g.marked = true
	return g
}

// settle clears this flight's mark once the redemption's outcome is known:
// a token (the write-ahead record, or the store, has what matters), or an
// answer in which the provider refused (nothing rotated). After a lost
// answer, a 5xx or a lost refresh token the mark stays, for the next
// holder to find.
func (g *redemptionGuard) settle(ctx context.Context, b *Broker, name string, err error) {
	if !g.marked {
		return
	}
	if err != nil {
		var pe *ProviderError
		if !errors.As(err, &pe) || pe.StatusCode < 400 || pe.StatusCode >= 500 || pe.Code == "" || !pe.IssuedRefreshToken.IsZero() {
			return
		}
	}
	if cerr := g.marker.ClearRedemption(context.WithoutCancel(ctx)); cerr != nil {
		b.log.Warn("could not clear the redemption mark; the next holder ignores it, as it names a spent token", "event", "refresh.mark_failed", "connection", name, "error", cerr.Error())
	}
}

// explainInterrupted rewrites the provider's refusal of a token whose
// previous redemption was interrupted: not a generic "re-authorize", but
// what happened, when and where. failure is the *Error providerFailure
// returned (also what status and the cool-down record hold).
func (b *Broker) explainInterrupted(st *connState, g *redemptionGuard, cause, failure error) error {
	var pe *ProviderError
	var e *Error
	if g == nil || g.prev == nil || !errors.As(cause, &pe) || pe.Code != "invalid_grant" || !errors.As(failure, &e) {
		return failure
	}
	c := &st.conn
	msg := InterruptedMessage(*g.prev)
	st.mu.Lock()
	e.Message = msg + "; the provider now refuses the previous refresh token (" + describe(pe) + ")"
	e.Remediation = fmt.Sprintf("The new refresh token was lost with the process that received it. Re-authorize connection %q (handler connect %s, or the consent link) and the new refresh token is stored in secret %q.",
		c.Name, c.Name, c.Secrets.RefreshToken)
	st.mu.Unlock()
	b.log.Error(msg, "event", "refresh.interrupted_lost", "connection", c.Name,
		"interrupted_at", g.prev.At.UTC().Format(time.RFC3339), "interrupted_instance", g.prev.Instance,
		"secret", c.Secrets.RefreshToken, "remediation", e.Remediation)
	return failure
}

// invocationGate ties a connection's redemptions to the invocations
// waiting for them (see the top of this file).
type invocationGate struct {
	mu sync.Mutex
	// waiting counts callers waiting on a flight of this connection.
	waiting int
	// redeeming is non-nil from the moment a flight may send the refresh
	// token until the token it got back is durable (or it got none); it
	// is closed then. The connection's lock lets one flight at a time
	// redeem.
	redeeming chan struct{}
}

// begin is called by a flight about to redeem. It reports false when no
// caller is waiting any more: no invocation would then cover the
// redemption, and the flight must not start it.
func (g *invocationGate) begin() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.waiting == 0 {
		return false
	}
	g.redeeming = make(chan struct{})
	return true
}

// durable is called once the refresh token the provider answered with is
// durable, or when the redemption ended without one. Calling it again, or
// without begin, does nothing.
func (g *invocationGate) durable() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.redeeming != nil {
		close(g.redeeming)
		g.redeeming = nil
	}
}

// join runs (or joins) the flight named key for st and waits for its
// result as one caller. ok is false when ctx ended first; join then
// returns only once any redemption under way has made its refresh token
// durable, so the caller's invocation covers it.
func (b *Broker) join(ctx context.Context, st *connState, key string, w want) (singleflight.Result, bool) {
	g := &st.gate
	g.mu.Lock()
	g.waiting++
	g.mu.Unlock()
	ch := b.flight(key, st, w)
	select {
	case r := <-ch:
		g.mu.Lock()
		g.waiting--
		g.mu.Unlock()
		return r, true
	case <-ctx.Done():
	}
	g.mu.Lock()
	g.waiting--
	redeeming := g.redeeming
	g.mu.Unlock()
	if redeeming != nil {
		// Bounded by the flight's RefreshTimeout: its deferred end
		// closes the channel whatever happens.
		select {
		case <-redeeming:
		case r := <-ch:
			return r, true
		}
	}
	return singleflight.Result{}, false
}

// errNoCaller is a flight's answer when every caller gave up before the
// provider was called.
func errNoCaller(name string) *Error {
	return &Error{Code: CodeUnavailable, Connection: name, RetryAfter: 5 * time.Second,
		Message:     "every caller gave up before the provider was called; nothing was redeemed",
		Remediation: "Retry: a refresh runs only while a caller (or the timer's sweep) waits for it, so that the host does not end the process in the middle of one."}
}
