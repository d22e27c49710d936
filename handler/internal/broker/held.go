package broker

import (
	"context"
	"errors"
	"time"
)

// redeem sends one token request for st with cred, which for a
// refresh-token grant spends cred.RefreshToken. Every token request the
// broker makes goes through here (TestEveryTokenRequestChecksTheLock), so
// that none redeems a refresh token unless lock is held at that moment: a
// lock lost since it was taken may already be another instance's, whose
// redemption of the same token a provider with reuse detection answers by
// revoking the whole grant (RFC 9700 §4.14.2). Nothing is sent then, and
// the answer is CodeUnavailable: the next attempt, under a lock held
// again, reads the store afresh.
//
// lock may be nil only for a client-credentials grant, which redeems
// nothing (obtain goes on without a lock whose backend is down).
func (b *Broker) redeem(ctx context.Context, st *connState, lock Lock, cred Credentials) (*Token, error) {
	if err := checkHeld(st, lock); err != nil {
		return nil, err
	}
	start := time.Now()
	tok, err := b.grant.Token(ctx, &st.conn, cred)
	b.observe.TokenEndpoint(st.conn.Name, outcomeOf(err), time.Since(start))
	return tok, err
}

// checkHeld says why no token request may be sent for st under lock now;
// nil when one may.
func checkHeld(st *connState, lock Lock) error {
	if lock == nil {
		if st.conn.Grant == GrantClientCredentials {
			return nil
		}
		return failureError(CategoryLockUnavailable, &st.conn,
			"the refresh lock is not held, and a refresh token is never redeemed without it; nothing was redeemed", nil)
	}
	if held(lock) {
		return nil
	}
	return failureError(CategoryLockLost, &st.conn,
		"the refresh lock was lost before the provider was called; nothing was redeemed", nil)
}

// held reports whether lock is held now: Lost not closed, and the lock
// itself vouching for this moment (Lock.Held).
func held(lock Lock) bool {
	select {
	case <-lock.Lost():
		return false
	default:
	}
	return lock.Held()
}

// noteUnavailable records err as the connection's last failure when it is
// lock or store trouble (CodeUnavailable). obtain calls it before it
// releases the lock, so that it never lands after a success a peer had
// under the lock since.
func (b *Broker) noteUnavailable(st *connState, err error) {
	var e *Error
	if errors.As(err, &e) && e.Code == CodeUnavailable {
		st.mu.Lock()
		st.lastError = e
		st.lastErrorAt = b.now()
		st.mu.Unlock()
	}
}
