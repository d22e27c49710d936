package broker

// Steps 4 to 6 and 8 of the refresh protocol: the locked refresh.

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// obtain runs one flight: steps 3 to 8 of the protocol, each a function
// below. It runs detached from any caller's context, bounded by
// RefreshTimeout.
func (b *Broker) obtain(st *connState, w want) (v any, err error) {
	defer func() {
		// singleflight.DoChan re-panics in a goroutine of its own, which
		// would take the process down with every caller.
		if p := recover(); p != nil {
			err = fmt.Errorf("panic during refresh: %v", p)
		}
	}()
	// Not derived from b.base: Close waits for flights instead of
	// cancelling them.
	ctx, cancel := context.WithTimeout(context.Background(), b.refreshTimeout)
	defer cancel()
	// Lock and store trouble shows in status too, not only provider
	// failures. Under the lock it is noted before the release (below):
	// once the lock is gone, a peer's refresh may succeed under it, and a
	// later note would cover that success with this failure.
	noted := false
	note := func() {
		if !noted {
			noted = true
			b.noteUnavailable(st, err)
		}
	}
	defer note()

	// Step 3.
	if ct, ok, err := b.fromStore(ctx, st, w); err != nil || ok {
		return served(ct, err)
	}
	if err := b.checkCooldown(ctx, st); err != nil {
		return nil, err
	}
	// Step 4.
	lock, ct, err := b.takeLock(ctx, st, w)
	if err != nil || ct != nil {
		return served(ct, err)
	}
	if lock != nil {
		// Step 8.
		defer func() {
			note()
			b.release(st.conn.Name, lock)
		}()
	}
	// Step 5.
	cur, ct, err := b.reread(ctx, st, lock, w)
	if err != nil || ct != nil {
		return served(ct, err)
	}
	// Steps 6 and 7.
	ct, err = b.refresh(ctx, st, lock, cur)
	return served(ct, err)
}

// served returns a flight's result, never a nil *cachedToken in a non-nil
// interface.
func served(ct *cachedToken, err error) (any, error) {
	if err != nil || ct == nil {
		return nil, err
	}
	return ct, nil
}

// takeLock is step 4: it takes the connection's lock, waiting at most
// LockWait. A waiter that times out serves the store's token when a peer
// refreshed meanwhile (ct). A client-credentials connection goes on
// without the lock when it cannot be had (lock nil): two instances may
// then both fetch a token, which costs one call and breaks nothing. A
// refresh token is never redeemed without it.
func (b *Broker) takeLock(ctx context.Context, st *connState, w want) (lock Lock, ct *cachedToken, err error) {
	c := &st.conn
	lockCtx, cancel := context.WithTimeout(ctx, b.lockWait)
	waited := time.Now()
	lock, err = b.locker.Lock(lockCtx, c.Name)
	cancel()
	b.observe.LockWaited(c.Name, lockOutcome(err), time.Since(waited))
	switch {
	case err == nil:
		return lock, nil, nil
	case errors.Is(err, ErrLockTimeout):
		// A peer held the lock all along; it has probably refreshed.
		if ct, ok, rerr := b.fromStore(ctx, st, w); rerr == nil && ok {
			return nil, ct, nil
		}
		b.log.Warn("lock wait timed out", "event", "lock.timeout", "connection", c.Name, "waited", b.lockWait.String())
		return nil, nil, failureError(CategoryLockBusy, c,
			fmt.Sprintf("another instance has been refreshing this connection for over %s", b.lockWait), err)
	case c.Grant == GrantClientCredentials:
		b.log.Warn("lock unavailable; fetching client-credentials token without it", "event", "lock.unavailable", "connection", c.Name, "error", err.Error())
		return nil, nil, nil
	}
	return nil, nil, failureError(CategoryLockUnavailable, c,
		"the refresh lock could not be taken, and a rotating refresh token is never redeemed without it", err)
}

// reread is step 5: under the lock, the store's access token again (a
// peer may have refreshed: ct), else the credentials to redeem, with the
// write-ahead record's refresh token when it is newer than the store's.
func (b *Broker) reread(ctx context.Context, st *connState, lock Lock, w want) (cur current, ct *cachedToken, err error) {
	if ct, ok, err := b.fromStore(ctx, st, w); err != nil || ok {
		return cur, ct, err
	}
	if cur.cred, err = b.credentials(ctx, st); err != nil {
		return cur, nil, err
	}
	// The write-ahead record, when there is one, may hold a newer refresh
	// token than the store: read it before redeeming.
	if err := b.readCurrent(ctx, st, lock, &cur); err != nil {
		return cur, nil, err
	}
	// A promotion of the standby interrupted before it emptied the
	// standby: finish it before the promoted token is redeemed (standby.go).
	b.finishPromotion(ctx, st, lock, cur.cred.RefreshToken)
	if lock != nil {
		select {
		case <-lock.Lost():
			return cur, nil, failureError(CategoryLockLost, &st.conn,
				"the refresh lock was lost before the provider was called; nothing was redeemed", nil)
		default:
		}
	}
	return cur, nil, nil
}

// refresh is steps 6 and 7: one redemption at the token endpoint, and what
// it obtained made durable. Both run inside an invocation and under a
// redemption mark (redemption.go), which end only once the outcome is
// durable or known to be a failure: a caller that gave up mid-redemption
// keeps its invocation open until then.
func (b *Broker) refresh(ctx context.Context, st *connState, lock Lock, cur current) (ct *cachedToken, err error) {
	c := &st.conn
	if c.Grant == GrantRefreshToken && lock != nil {
		if !st.gate.begin() {
			return nil, errNoCaller(c.Name)
		}
		defer st.gate.durable()
	}
	guard := b.beginRedemption(ctx, st, lock, cur)
	defer func() { guard.settle(ctx, b, c.Name, err) }()
	start := time.Now()
	defer func() { b.observe.Refreshed(c.Name, outcomeOf(err), time.Since(start)) }()

	// Step 6.
	tok, cur, err := b.redeemCurrent(ctx, st, lock, cur)
	if err != nil {
		return nil, b.refreshFailed(ctx, st, lock, guard, cur, err)
	}
	// Step 7.
	if ct, err = b.persist(ctx, st, lock, cur, tok, start); err != nil {
		b.persistFailed(ctx, st, lock, err)
		return nil, err
	}
	// The status's duration ends where the result is durable, before
	// it is recorded beside the lock, so that record can carry it.
	took := time.Since(start)
	st.mu.Lock()
	st.lastRefreshTook = took
	st.mu.Unlock()
	b.recordShared(ctx, st, lock, nil, took)
	return ct, nil
}

// redeemCurrent is step 6: the provider is called once with the current
// refresh token (b.redeem checks, right before, that the lock is held);
// after an invalid_grant once more when the store meanwhile holds another
// token, and then with the standby grant when the connection has one. cur
// comes back as it was last sent.
func (b *Broker) redeemCurrent(ctx context.Context, st *connState, lock Lock, cur current) (*Token, current, error) {
	tok, cur, err := b.redeemWithClientSecrets(ctx, st, lock, cur)
	if err != nil {
		tok, cur, err = b.retryAfterRace(ctx, st, lock, cur, err)
	}
	if err != nil && st.conn.Standby {
		// The primary family is lost: the standby grant replaces it and
		// the caller is served (standby.go).
		tok, cur, err = b.promoteStandby(ctx, st, lock, cur, err)
	}
	return tok, cur, err
}

// credentials reads what the grant needs from the store. Under the lock,
// readCurrent then settles whether the write-ahead record holds a newer
// refresh token.
func (b *Broker) credentials(ctx context.Context, st *connState) (Credentials, error) {
	c := &st.conn
	cred := Credentials{ClientID: c.ClientID}
	var clientID Secret
	// In the order of RequiredSecrets.
	var into []*Secret
	if c.ClientID == "" {
		into = append(into, &clientID)
	}
	if c.UsesClientSecret() {
		// An assertion-authenticated connection has none (issue 17).
		into = append(into, &cred.ClientSecret)
	}
	into = append(into, &cred.RefreshToken)
	// Every secret is read before any is reported missing, so that the
	// answer names all of them: an operator loading a new connection's
	// secrets one failed call at a time would need three.
	var missing []string
	for i, name := range c.RequiredSecrets() {
		s, err := b.readSecret(ctx, st, name)
		if errors.Is(err, ErrSecretNotFound) || (err == nil && s.Value.IsZero()) {
			missing = append(missing, name)
			continue
		}
		if err != nil {
			b.observe.StoreFailed(c.Name, "read")
			return Credentials{}, storeError(c.Name, "read", name, err)
		}
		*into[i] = s.Value
	}
	if len(missing) > 0 {
		return Credentials{}, notConfigured(c, missing)
	}
	if c.ClientID == "" {
		cred.ClientID = clientID.Reveal()
	}
	return cred, nil
}

// retryAfterRace handles invalid_grant on a refresh: if the store now holds
// a different refresh token than the one sent (an operator stored a new
// one, or a peer rotated it while our lock was lost), the grant is not dead;
// try once more with the current one.
func (b *Broker) retryAfterRace(ctx context.Context, st *connState, lock Lock, sent current, err error) (*Token, current, error) {
	var pe *ProviderError
	if st.conn.Grant != GrantRefreshToken || !errors.As(err, &pe) || pe.Code != "invalid_grant" {
		return nil, sent, err
	}
	if sent.fromRecord {
		// The store's token is older than the one just refused: it was
		// redeemed to obtain the record's, and sending it would be reuse.
		return nil, sent, err
	}
	s, gerr := b.store.Get(ctx, st.conn.Secrets.RefreshToken)
	if gerr != nil || s.Value.IsZero() || s.Value == sent.cred.RefreshToken {
		return nil, sent, err
	}
	b.log.Info("refresh token changed in the store after invalid_grant; retrying with the current one",
		"event", "refresh.race_recovered", "connection", st.conn.Name)
	cur := sent
	cur.cred.RefreshToken = s.Value
	cur.base = hashToken(s.Value)
	// The lock may have been lost while the first request ran: a peer
	// may be redeeming this very token.
	tok, err := b.redeem(ctx, st, lock, cur.cred)
	return tok, cur, err
}

func (b *Broker) release(name string, lock Lock) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(b.base), 10*time.Second)
	defer cancel()
	if err := lock.Release(ctx); err != nil {
		// The lease expires by itself; say so rather than fail the caller.
		b.log.Warn("could not release the refresh lock; it expires by itself", "event", "lock.release_failed", "connection", name, "error", err.Error())
	}
}
