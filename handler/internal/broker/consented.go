package broker

import (
	"context"
	"fmt"
	"time"
)

// Consented stores the tokens a person's consent obtained for connection
// name and makes every view of the connection show them at once: the
// refresh token (and, unless standby, the access token) go to the store
// under the connection's lock, or the standby's, so that no refresh in
// flight writes over them; this instance forgets the failure it recorded
// and serves the new access token; and the status beside the lock records
// a success, which every instance's status reads (mergeShared). Without
// the lock in time the tokens are stored all the same: a consented refresh
// token must not be lost for want of a lock.
func (b *Broker) Consented(ctx context.Context, name string, tok *Token, standby bool) error {
	st, ok := b.lookup(name)
	if !ok {
		return fmt.Errorf("broker: no connection is named %q", name)
	}
	c := &st.conn
	if tok == nil || tok.RefreshToken.IsZero() {
		return fmt.Errorf("connection %q: the consent issued no refresh token", name)
	}
	if standby && (!c.Standby || c.Secrets.StandbyRefreshToken == "") {
		return fmt.Errorf("connection %q has no standby grant configured", name)
	}
	issued := tok.IssuedAt
	if issued.IsZero() {
		issued = b.now()
	}
	var lock Lock
	var err error
	if standby {
		lock, err = b.lockStandby(ctx, st)
	} else {
		lockCtx, cancel := context.WithTimeout(ctx, b.lockWait)
		lock, err = b.locker.Lock(lockCtx, c.Name)
		cancel()
	}
	if err != nil {
		b.log.Warn("storing the consented tokens without the lock, which could not be taken", "event", "consent.lock_failed",
			"connection", name, "standby", standby, "error", err.Error())
		lock = nil
	} else {
		defer b.release(name, lock)
	}

	secret := c.Secrets.RefreshToken
	if standby {
		secret = c.Secrets.StandbyRefreshToken
	}
	if err := b.retryStore(ctx, lock, func(ctx context.Context) error {
		return b.store.Set(ctx, secret, StoredSecret{Value: tok.RefreshToken, UpdatedOn: issued})
	}); err != nil {
		return storeError(name, "write", secret, err)
	}
	if standby {
		return nil
	}
	if !tok.AccessToken.IsZero() {
		lifetime := tok.Expiry.Sub(issued)
		b.storeAccessToken(ctx, st, lock, tok, issued, lifetime)
		ct := &cachedToken{token: AccessToken{Value: tok.AccessToken, TokenType: tok.TokenType, Expiry: tok.Expiry}, lifetime: lifetime}
		if ct.token.TokenType == "" {
			ct.token.TokenType = "Bearer"
		}
		st.cached.Store(ct) // the consent's token replaces whatever was cached
	}
	st.mu.Lock()
	st.failure = nil
	st.lastError = nil
	st.lastErrorAt = time.Time{}
	st.mu.Unlock()
	if lock != nil {
		b.recordShared(ctx, st, lock, nil, 0)
	}
	return nil
}
