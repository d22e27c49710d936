package broker

// Step 7 of the refresh protocol: what a refresh obtained is made durable.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// persist (step 7) makes the new refresh token durable (keepRefreshToken), then
// writes the access token and caches the result. An error means the
// rotated refresh token could not be kept anywhere; the access token is
// then not handed out either (the caller is answered 503, and told the
// connection will need consent). began is when the token-endpoint call
// began: the token.refreshed line carries the time from then until the
// result is durable (duration_ms), which the workbook's latency
// percentiles read (infra/modules/workbook/refresh-percentiles.kql).
func (b *Broker) persist(ctx context.Context, st *connState, lock Lock, cur current, tok *Token, began time.Time) (*cachedToken, error) {
	c := &st.conn
	now := b.now()
	issued := tok.IssuedAt
	if issued.IsZero() {
		issued = now
	}
	ct := &cachedToken{
		token:    AccessToken{Value: tok.AccessToken, TokenType: tok.TokenType, Expiry: tok.Expiry},
		lifetime: tok.Expiry.Sub(issued),
		source:   SourceRefresh,
	}
	if ct.token.TokenType == "" {
		ct.token.TokenType = "Bearer"
	}
	rotated := !tok.RefreshToken.IsZero() && tok.RefreshToken != cur.cred.RefreshToken
	// Kept beside the lock in place of the store, when so configured
	// (besidelock.go); nil otherwise.
	access := b.accessBesideLock(tok, issued, ct.lifetime)
	pending, accessKept := false, false
	switch {
	case rotated:
		var err error
		if pending, accessKept, err = b.keepRotated(ctx, st, lock, cur, tok.RefreshToken, issued, access); err != nil {
			return nil, err
		}
	case cur.fromRecord:
		// The answer did not rotate: the token just redeemed stays
		// current, and is so far only in the write-ahead record (durable
		// there). Try the store again while the lock is held.
		pending = !b.moveToStore(ctx, st, lock, lock.(WriteAheadLog), cur.cred.RefreshToken, issued, nil)
	}
	switch {
	case pending, accessKept:
	case access != nil:
		b.keepAccessBeside(ctx, c, lock, access)
	default:
		b.storeAccessToken(ctx, st, lock, tok, issued, ct.lifetime)
	}
	st.remember(ct)
	st.mu.Lock()
	st.failure = nil
	st.lastError = nil
	st.lastRefresh = now
	st.lastRefreshTook = 0 // refresh sets it; an import is not timed
	st.refreshes++
	st.mu.Unlock()
	b.log.Info("token refreshed", "event", "token.refreshed", "connection", c.Name,
		"expires_on", tok.Expiry.UTC().Format(time.RFC3339), "rotated", rotated, "persist_pending", pending,
		"duration_ms", time.Since(began).Milliseconds())
	return ct, nil
}

// storeAccessToken writes the access token, with when it was issued and
// its lifetime, once the refresh token is durable in the store. A failure
// is not fatal: this instance serves from memory, and another one will
// refresh with the persisted refresh token.
func (b *Broker) storeAccessToken(ctx context.Context, st *connState, lock Lock, tok *Token, issued time.Time, lifetime time.Duration) {
	c := &st.conn
	err := b.retryStore(ctx, lock, func(ctx context.Context) error {
		return b.store.Set(ctx, c.Secrets.AccessToken, StoredSecret{Value: tok.AccessToken, ExpiresOn: tok.Expiry, UpdatedOn: issued,
			IssuedOn: issued, Lifetime: lifetime})
	})
	if err != nil {
		b.observe.StoreFailed(c.Name, "write")
		b.log.Warn("could not persist the access token", "event", "persist.access_token_failed",
			"connection", c.Name, "secret", c.Secrets.AccessToken, "error", err.Error())
	}
}

// retryStore runs a store write with bounded retries and doubling delays,
// retrying only while lock (when not nil) is held: once another instance
// may hold it, a late write could replace a newer token.
func (b *Broker) retryStore(ctx context.Context, lock Lock, write func(context.Context) error) error {
	delay := b.storeRetryDelay
	var lost <-chan struct{}
	if lock != nil {
		lost = lock.Lost()
	}
	var err error
	for attempt := 0; attempt < b.storeRetries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return errors.Join(err, ctx.Err())
			case <-lost:
				return errors.Join(err, ErrLockLost)
			case <-time.After(jitter(delay)):
			}
			delay *= 2
		}
		if err = write(ctx); err == nil {
			return nil
		}
	}
	return err
}

// jitter spreads d by ±25% so instances that failed together do not retry
// together.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d*3/4 + rand.N(d/2+1) // #nosec G404 -- jitter that spreads retries and polls; nothing depends on it being unpredictable
}

// remediator is implemented by store errors that know the fix (a Key
// Vault role to grant, a deleted secret to recover).
type remediator interface{ Remediation() string }

func storeError(connection, op, secret string, err error) *Error {
	// The store's own remediation, when it has one, is more precise than
	// the vocabulary's (a Key Vault role to grant, a deleted secret).
	e := failureError(CategoryStoreUnavailable, &Connection{Name: connection},
		fmt.Sprintf("could not %s secret %q in the secret store", op, secret), err)
	var r remediator
	if errors.As(err, &r) && r.Remediation() != "" {
		e.Remediation = strings.TrimSuffix(r.Remediation(), ".") + "."
	}
	return e
}
