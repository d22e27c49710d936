package broker

// The standby grant: a second, independent authorization of the same user
// and client (Connection.Standby), obtained by a second consent and kept in
// Secrets.StandbyRefreshToken.
//
// A kill between the provider's commit of a rotation and our first durable
// write loses the new refresh token; the next holder redeems the old one,
// the provider's reuse detection revokes the whole family, and without a
// standby every caller gets 424 until a person consents again. Providers
// that allow several active grants per user and client (Google, Entra,
// Salesforce, Zoho, Ory Hydra: see the preset table) revoke only the
// reused family, so a second family survives it.
//
//   - Callers never use the standby: it is redeemed only by the sweep,
//     against its idle expiry (keepStandbyAlive), each rotation made durable
//     through the same write-ahead path as the primary's, beside a lock of
//     its own (StandbyLockName).
//   - When a refresh of the primary gets invalid_grant that no race
//     explains, the broker promotes the standby under the connection's lock
//     (promoteStandby): its refresh token becomes the primary's, durably
//     (write-ahead record, then store), the standby secret is emptied, the
//     promoted token is redeemed and the caller served. An ERROR line
//     (standby.promoted) and the status (standby_used) ask a person to
//     consent to a new standby, at leisure.
//
// Locks are always taken in one order, the connection's then the standby's,
// so the sweep and a promotion never wait on each other in a circle.
//
// A promotion interrupted between writing the primary and emptying the
// standby leaves both holding the same token. Every later refresh of the
// primary and every keep-alive of the standby compare the two under the
// lock before redeeming anything, and finish the promotion
// (finishPromotion): the standby is never redeemed as a second copy of the
// primary, which would be reuse.

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// StandbyLockName is the name of the lock, and of the write-ahead record
// beside it, that guards a connection's standby grant.
func StandbyLockName(connection string) string { return connection + "-standby" }

// StandbyState says what a connection's standby grant is.
type StandbyState string

const (
	// StandbyReady: a standby refresh token is stored.
	StandbyReady StandbyState = "ready"
	// StandbyUsed: the standby was promoted (or found dead) and its secret
	// emptied; a person should consent to a new one.
	StandbyUsed StandbyState = "used"
	// StandbyMissing: the connection has a standby grant configured but
	// none was ever stored.
	StandbyMissing StandbyState = "missing"
)

// standbyView is the standby grant seen as a connection of its own, so the
// write-ahead functions (readCurrent, keepRefreshToken) work on it
// unchanged: its name is its lock's, its refresh token secret the
// standby's.
func standbyView(st *connState) *connState {
	c := st.conn
	c.Name = StandbyLockName(st.conn.Name)
	c.Secrets = SecretNames{RefreshToken: st.conn.Secrets.StandbyRefreshToken}
	c.Standby = false
	return &connState{conn: c}
}

// isInvalidGrant reports whether err is the provider refusing the refresh
// token itself.
func isInvalidGrant(err error) bool {
	var pe *ProviderError
	return errors.As(err, &pe) && pe.Code == "invalid_grant"
}

// standbyConsentHint says how to mint a new standby grant.
func standbyConsentHint(c *Connection) string {
	return fmt.Sprintf("Consent to a new standby grant for %q: a consent link (`handler consent-link %s`) asks for the second authorization, of the same user and client, after the first and stores it in secret %q.",
		c.Name, c.Name, c.Secrets.StandbyRefreshToken)
}

// lockStandby takes the standby's lock, waiting at most the lock wait.
func (b *Broker) lockStandby(ctx context.Context, st *connState) (Lock, error) {
	lockCtx, cancel := context.WithTimeout(ctx, b.lockWait)
	defer cancel()
	return b.locker.Lock(lockCtx, StandbyLockName(st.conn.Name))
}

// readStandby reads the standby's current refresh token under its lock:
// the store's, or its write-ahead record's. The token is empty when there
// is none.
func (b *Broker) readStandby(ctx context.Context, sv *connState, slock Lock, base Credentials) (current, error) {
	var cur current
	cur.cred = base
	cur.cred.RefreshToken = ""
	s, err := b.store.Get(ctx, sv.conn.Secrets.RefreshToken)
	if err != nil && !errors.Is(err, ErrSecretNotFound) {
		return cur, storeError(sv.conn.Name, "read", sv.conn.Secrets.RefreshToken, err)
	}
	cur.cred.RefreshToken = s.Value
	if err := b.readCurrent(ctx, sv, slock, &cur); err != nil {
		return cur, err
	}
	return cur, nil
}

// emptyStandby marks the standby used: its secret holds the empty value
// (which every reader treats as no token).
func (b *Broker) emptyStandby(ctx context.Context, st *connState, lock Lock) error {
	c := &st.conn
	return b.retryStore(ctx, lock, func(ctx context.Context) error {
		return b.store.Set(ctx, c.Secrets.StandbyRefreshToken, StoredSecret{UpdatedOn: b.now()})
	})
}

// finishPromotion empties the standby when it holds primary, the
// connection's current refresh token: a promotion was interrupted before
// it emptied the standby. It runs under the connection's lock, before the
// primary is redeemed.
func (b *Broker) finishPromotion(ctx context.Context, st *connState, lock Lock, primary Secret) {
	c := &st.conn
	if !c.Standby || primary.IsZero() {
		return
	}
	s, err := b.store.Get(ctx, c.Secrets.StandbyRefreshToken)
	if err != nil || s.Value != primary {
		return
	}
	if err := b.emptyStandby(ctx, st, lock); err != nil {
		b.log.Warn("could not empty the standby grant after its interrupted promotion; retried before the next refresh", "event", "standby.empty_failed",
			"connection", c.Name, "secret", c.Secrets.StandbyRefreshToken, "error", err.Error())
		return
	}
	b.log.Info("finished an interrupted promotion of the standby grant", "event", "standby.promotion_finished", "connection", c.Name)
}

// promoteStandby is called under the connection's lock when the primary
// refresh token was refused with invalid_grant (failed) and no race
// explains it. It makes the standby's refresh token the primary's,
// durably, empties the standby, and redeems the promoted token. Without a
// usable standby it returns failed unchanged.
func (b *Broker) promoteStandby(ctx context.Context, st *connState, lock Lock, cur current, failed error) (*Token, current, error) {
	c := &st.conn
	if !c.Standby || lock == nil || c.Grant != GrantRefreshToken || !isInvalidGrant(failed) {
		return nil, cur, failed
	}
	slock, err := b.lockStandby(ctx, st)
	if err != nil {
		b.log.Error("the primary grant was refused and the standby grant's lock could not be taken; the standby was not promoted",
			"event", "standby.promotion_failed", "connection", c.Name, "error", err.Error())
		return nil, cur, failed
	}
	defer b.release(StandbyLockName(c.Name), slock)
	sv := standbyView(st)
	scur, err := b.readStandby(ctx, sv, slock, cur.cred)
	if err != nil {
		b.log.Error("the primary grant was refused and the standby grant could not be read; the standby was not promoted",
			"event", "standby.promotion_failed", "connection", c.Name, "error", err.Error())
		return nil, cur, failed
	}
	standby := scur.cred.RefreshToken
	if standby.IsZero() {
		b.log.Error("the primary grant was refused and there is no standby grant to promote", "event", "standby.unavailable",
			"connection", c.Name, "secret", c.Secrets.StandbyRefreshToken, "remediation", standbyConsentHint(c))
		return nil, cur, failed
	}
	if standby == cur.cred.RefreshToken {
		// The standby was promoted already, and that token is what the
		// provider just refused.
		_ = b.emptyStandby(ctx, st, slock)
		return nil, cur, failed
	}

	// The promotion: the standby's token becomes the primary's, through
	// the write-ahead record (durable before anything else), then the
	// store.
	issued := b.now()
	pending, err := b.keepRefreshToken(ctx, st, lock, cur, standby, issued)
	if err != nil {
		b.log.Error("the primary grant was refused and the standby grant could not be made the primary; the standby is kept",
			"event", "standby.promotion_failed", "connection", c.Name, "error", err.Error())
		return nil, cur, failed
	}
	if err := b.emptyStandby(ctx, st, slock); err != nil {
		// Harmless: the next refresh of the connection finds the standby
		// equal to the primary and empties it then (finishPromotion).
		b.log.Warn("could not empty the standby grant after promoting it; the next refresh does", "event", "standby.empty_failed",
			"connection", c.Name, "secret", c.Secrets.StandbyRefreshToken, "error", err.Error())
	}
	b.log.Error("the primary grant was revoked by the provider; the standby grant was promoted and the connection keeps working; consent to a new standby grant",
		"event", "standby.promoted", "connection", c.Name, "provider_error", "invalid_grant",
		"secret", c.Secrets.StandbyRefreshToken, "remediation", standbyConsentHint(c))

	next := cur
	next.cred.RefreshToken = standby
	next.fromRecord = pending
	if !pending {
		next.base = hashToken(standby)
	}
	tok, err := b.redeem(ctx, st, lock, next.cred) // checks the lock is held now (held.go)
	return tok, next, err
}

// keepStandbyAlive redeems the standby grant when it has been idle for
// half its provider's idle expiry, so that it is alive when it is needed.
// The access token it yields is dropped: callers never get the standby's.
// It reports whether it redeemed the standby.
func (b *Broker) keepStandbyAlive(ctx context.Context, st *connState, listed map[string]SecretInfo) (bool, error) {
	c := &st.conn
	if !c.Standby || c.Grant != GrantRefreshToken || c.IdleExpiry <= 0 {
		return false, nil
	}
	info := b.secretInfo(ctx, listed, c.Secrets.StandbyRefreshToken)
	if info.UpdatedOn.IsZero() || b.now().Sub(info.UpdatedOn) < c.IdleExpiry/2 {
		return false, nil
	}
	if !b.running.enter() {
		return false, errClosing(c.Name)
	}
	defer b.running.leave()
	lockCtx, cancel := context.WithTimeout(ctx, b.lockWait)
	lock, err := b.locker.Lock(lockCtx, c.Name)
	cancel()
	if err != nil {
		return false, err
	}
	defer b.release(c.Name, lock)
	slock, err := b.lockStandby(ctx, st)
	if err != nil {
		return false, err
	}
	defer b.release(StandbyLockName(c.Name), slock)

	var pcur current
	if pcur.cred, err = b.credentials(ctx, st); err != nil {
		return false, err
	}
	if err := b.readCurrent(ctx, st, lock, &pcur); err != nil {
		return false, err
	}
	sv := standbyView(st)
	scur, err := b.readStandby(ctx, sv, slock, pcur.cred)
	if err != nil {
		return false, err
	}
	switch {
	case scur.cred.RefreshToken.IsZero():
		return false, nil
	case scur.cred.RefreshToken == pcur.cred.RefreshToken:
		b.finishPromotion(ctx, st, lock, pcur.cred.RefreshToken)
		return false, nil
	}
	// Read again under the lock: another instance may have kept it alive.
	if s, err := b.store.Get(ctx, c.Secrets.StandbyRefreshToken); err == nil && !scur.fromRecord && b.now().Sub(s.UpdatedOn) < c.IdleExpiry/2 {
		return false, nil
	}
	// The standby's token, under its own lock, held now (held.go).
	tok, err := b.redeem(ctx, st, slock, scur.cred)
	if err != nil {
		if isInvalidGrant(err) {
			// A dead standby would be promoted for nothing: empty it,
			// and say so.
			_ = b.emptyStandby(ctx, st, slock)
			b.log.Error("the standby grant was refused by the provider; the connection has no standby until a person consents to a new one",
				"event", "standby.lost", "connection", c.Name, "secret", c.Secrets.StandbyRefreshToken, "remediation", standbyConsentHint(c))
		}
		return false, err
	}
	issued := tok.IssuedAt
	if issued.IsZero() {
		issued = b.now()
	}
	if !tok.RefreshToken.IsZero() && tok.RefreshToken != scur.cred.RefreshToken {
		if _, err := b.keepRefreshToken(ctx, sv, slock, scur, tok.RefreshToken, issued); err != nil {
			return false, err
		}
	} else {
		// Not rotated: record the use, which is what the next sweep
		// measures the idle time from.
		if err := b.retryStore(ctx, slock, func(ctx context.Context) error {
			return b.store.Set(ctx, c.Secrets.StandbyRefreshToken, StoredSecret{Value: scur.cred.RefreshToken, UpdatedOn: issued})
		}); err != nil {
			return false, err
		}
	}
	b.log.Info("standby grant kept alive", "event", "standby.kept_alive", "connection", c.Name,
		"idle_expiry_days", int(c.IdleExpiry/(24*time.Hour)))
	return true, nil
}

// standbyState reads what the connection's standby grant is; "" when it
// has none configured.
func (b *Broker) standbyState(ctx context.Context, c *Connection) StandbyState {
	if !c.Standby {
		return ""
	}
	s, err := b.store.Get(ctx, c.Secrets.StandbyRefreshToken)
	switch {
	case errors.Is(err, ErrSecretNotFound):
		return StandbyMissing
	case err != nil:
		return ""
	case s.Value.IsZero():
		return StandbyUsed
	}
	return StandbyReady
}

// sweepStandby keeps the connection's standby grant alive, recording what
// it did in r.
func (b *Broker) sweepStandby(ctx context.Context, st *connState, listed map[string]SecretInfo, r *SweepResult) {
	kept, err := b.keepStandbyAlive(ctx, st, listed)
	switch {
	case err != nil:
		r.Standby, r.StandbyErr = SweepFailed, asError(st.conn.Name, err)
		b.log.Warn("could not keep the standby grant alive; the next sweep tries again", "event", "standby.keep_alive_failed",
			"connection", st.conn.Name, "error", err.Error())
	case kept:
		r.Standby = SweepKeptAlive
	}
}

// standbyStatus reports the standby grant in cs: a connection that serves
// tokens on its promoted standby is StateStandbyUsed, and one without a
// standby says how to mint one.
func (b *Broker) standbyStatus(ctx context.Context, cs *ConnectionStatus, st *connState) {
	c := &st.conn
	cs.Standby = b.standbyState(ctx, c)
	if cs.State != StateHealthy && cs.State != StateExpiring {
		return
	}
	switch cs.Standby {
	case StandbyUsed:
		cs.State = StateStandbyUsed
		cs.NextAction = "Tokens are served, but the standby grant is used up (promoted when the primary grant was lost, or refused by the provider). " + standbyConsentHint(c)
	case StandbyMissing:
		cs.NextAction = "No standby grant is stored yet. " + standbyConsentHint(c)
	}
}
