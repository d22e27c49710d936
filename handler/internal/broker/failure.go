package broker

// Failure recording: what a failed refresh leaves behind (the cool-down
// record, the last error, the status beside the lock) and how it reads.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"
)

// failureRecord remembers a permanent provider failure and which
// credentials caused it, so the same credentials are not sent again during
// the cool-down (repeated bad attempts lock accounts: AADSTS50053).
type failureRecord struct {
	err   *Error
	at    time.Time
	until time.Time
	// fingerprint is set for permanent failures: new credentials end the
	// cool-down at once. A transient one (the provider asked us to wait
	// with Retry-After) holds whatever the credentials.
	fingerprint *[32]byte
}

// fingerprint identifies the credentials a failure was seen with, without
// keeping a second copy of them.
func fingerprint(cred Credentials) [32]byte {
	h := sha256.New()
	for _, s := range []string{cred.ClientID, cred.ClientSecret.Reveal(), cred.RefreshToken.Reveal()} {
		fmt.Fprintf(h, "%d:%s;", len(s), s)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// checkCooldown answers a recent failure from its record: a permanent one
// unless the credentials in the store changed since, a transient one until
// the provider's Retry-After has passed.
func (b *Broker) checkCooldown(ctx context.Context, st *connState) error {
	st.mu.Lock()
	rec := st.failure
	st.mu.Unlock()
	now := b.now()
	if rec == nil || !now.Before(rec.until) {
		return nil
	}
	if rec.fingerprint != nil {
		cred, err := b.credentials(ctx, st)
		if err != nil {
			return err
		}
		if fingerprint(cred) != *rec.fingerprint {
			return nil
		}
	}
	e := *rec.err
	e.Message += fmt.Sprintf(" (recorded %s ago; the provider is not called again",
		now.Sub(rec.at).Round(time.Second))
	if rec.fingerprint != nil {
		e.Message += " with the same credentials"
	}
	e.Message += " until " + rec.until.UTC().Format(time.RFC3339) + ")"
	if e.RetryAfter > 0 {
		e.RetryAfter = rec.until.Sub(now)
	}
	return &e
}

// providerFailure turns a grant failure into the caller's Error, recording
// permanent ones.
func (b *Broker) providerFailure(ctx context.Context, st *connState, cred Credentials, err error) error {
	c := &st.conn
	var pe *ProviderError
	if !errors.As(err, &pe) {
		return asError(c.Name, err)
	}
	cat := providerCategory(pe)
	var e *Error
	if pe.Permanent {
		e = &Error{
			Code:        CodeRejected,
			Connection:  c.Name,
			Message:     fmt.Sprintf("the provider (%s) rejected the request: %s", c.Provider, describe(pe)),
			Remediation: remediation(c, pe, cat),
			Category:    string(cat),
			Err:         err,
		}
		fp := fingerprint(cred)
		now := b.now()
		st.mu.Lock()
		st.failure = &failureRecord{err: e, at: now, until: now.Add(b.failureCooldown), fingerprint: &fp}
		st.mu.Unlock()
	} else {
		k, _ := Failure(cat)
		e = &Error{
			Code:        CodeProviderFailed,
			Connection:  c.Name,
			Message:     fmt.Sprintf("the provider (%s) failed: %s", c.Provider, describe(pe)),
			Remediation: remediation(c, pe, cat),
			RetryAfter:  max(pe.RetryAfter, k.RetryAfter),
			Category:    string(cat),
			Err:         err,
		}
		if pe.RetryAfter > 0 {
			now := b.now()
			st.mu.Lock()
			st.failure = &failureRecord{err: e, at: now, until: now.Add(min(pe.RetryAfter, b.failureCooldown))}
			st.mu.Unlock()
		}
	}
	st.mu.Lock()
	st.lastError = e
	st.lastErrorAt = b.now()
	st.mu.Unlock()
	b.log.Error("token refresh failed", "event", "token.refresh_failed", "connection", c.Name,
		"status", pe.StatusCode, "provider_error", pe.Code, "aadsts", pe.AADSTS, "category", pe.Category,
		"permanent", pe.Permanent, "description", pe.Description, "remediation", e.Remediation)
	return e
}

func describe(pe *ProviderError) string {
	head := ""
	if pe.StatusCode != 0 {
		head = fmt.Sprintf("HTTP %d", pe.StatusCode)
	}
	if pe.Code != "" {
		head = strings.TrimSpace(head + " " + pe.Code)
	}
	tail := pe.Description
	if tail == "" && pe.Err != nil {
		// The cause's text may carry the token URL or a body; it goes
		// to the logs, not to callers.
		tail = "no response (see the handler's logs)"
	}
	switch {
	case head != "" && tail != "":
		return head + ": " + tail
	case head+tail != "":
		return head + tail
	}
	return "no usable answer"
}

// providerCategory is the category of a provider failure: the grant's
// diagnosis, else the vocabulary's category of its error code, else what
// its permanence implies.
func providerCategory(pe *ProviderError) Category {
	if pe.Category != "" {
		return Category(pe.Category)
	}
	if c, ok := CodeCategory(pe.Code); ok && c.Permanent() == pe.Permanent {
		return c
	}
	if pe.Permanent {
		return CategoryFixConfiguration
	}
	if pe.StatusCode >= 500 {
		return CategoryProviderOutage
	}
	return CategoryTransient
}

// remediation says what to do about a provider failure: the grant's
// diagnosis when it made one, else the vocabulary's remediation of its
// category. A category that needs a person's grant does not fit a
// client-credentials connection, which has none: its configuration is
// what to fix.
func remediation(c *Connection, pe *ProviderError, cat Category) string {
	if pe.Remediation != "" {
		return pe.Remediation
	}
	if c.Grant == GrantClientCredentials && needsUser(cat) {
		cat = CategoryFixConfiguration
	}
	k, ok := Failure(cat)
	if !ok {
		k, _ = Failure(CategoryFixConfiguration)
	}
	return k.Remediation(c)
}

// needsUser reports whether a failure of category c is fixed by a person
// who consented.
func needsUser(c Category) bool {
	switch c {
	case CategoryReauthorize, CategoryUserInteractionRequired, CategoryAccountLocked:
		return true
	}
	return false
}

// recordShared writes the outcome of a refresh beside the lock, while it is
// still held, so every instance's status shows it. A failure to record is
// logged and otherwise ignored: the status is a report, not the protocol.
// took is how long a successful refresh took, zero when it was not timed.
func (b *Broker) recordShared(ctx context.Context, st *connState, lock Lock, failure error, took time.Duration) {
	rec, ok := lock.(StatusRecorder)
	if !ok {
		return
	}
	now := b.now()
	s := SharedStatus{Instance: b.instance, RecordedOn: now, LastRefresh: now, LastRefreshDuration: took}
	if failure != nil {
		// Failures count across instances, so read what the last holder
		// recorded; only failing refreshes pay for the read.
		var prev SharedStatus
		if r, ok := b.locker.(StatusReader); ok {
			prev, _ = r.ReadStatus(ctx, st.conn.Name)
		}
		s.LastRefresh, s.LastRefreshDuration = prev.LastRefresh, prev.LastRefreshDuration
		s.Failures = prev.Failures + 1
		s.LastError = failureCategory(failure)
	}
	if err := rec.RecordStatus(ctx, s); err != nil {
		b.log.Warn("could not record the refresh status beside the lock", "event", "status.record_failed",
			"connection", st.conn.Name, "error", err.Error())
	}
}

// failureCategory names a failure in one word, for the status beside the
// lock: its category in the failure vocabulary, else the broker's code.
func failureCategory(err error) string {
	var pe *ProviderError
	if errors.As(err, &pe) {
		return string(providerCategory(pe))
	}
	var e *Error
	if errors.As(err, &e) && e.Category != "" {
		return e.Category
	}
	if errors.As(err, &e) {
		return string(e.Code)
	}
	return string(CodeInternal)
}

// refreshFailed records a failed redemption (step 6) and returns the
// caller's error: a refresh token the provider issued in the failed answer
// is kept first (it rotated all the same), then the failure is recorded
// for this instance and beside the lock, while the lock is still held.
func (b *Broker) refreshFailed(ctx context.Context, st *connState, lock Lock, guard *redemptionGuard, cur current, err error) error {
	var pe *ProviderError
	if errors.As(err, &pe) && !pe.IssuedRefreshToken.IsZero() && pe.IssuedRefreshToken != cur.cred.RefreshToken {
		// Its loss is logged there.
		_, _ = b.keepRefreshToken(ctx, st, lock, cur, pe.IssuedRefreshToken, b.now())
	}
	failure := b.providerFailure(ctx, st, cur.cred, err)
	failure = b.explainInterrupted(st, guard, err, failure)
	b.recordShared(ctx, st, lock, err, 0)
	return failure
}

// persistFailed records a refresh whose result could not be made durable
// (step 7), for this instance and beside the lock.
func (b *Broker) persistFailed(ctx context.Context, st *connState, lock Lock, err error) {
	st.mu.Lock()
	st.lastError, st.lastErrorAt = asError(st.conn.Name, err), b.now()
	st.mu.Unlock()
	b.recordShared(ctx, st, lock, err, 0)
}
