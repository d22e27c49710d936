package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// State summarises a connection's health for operators.
type State string

const (
	// StateHealthy: a valid access token is at hand and the last refresh
	// succeeded.
	StateHealthy State = "healthy"
	// StateExpiring: no valid access token is stored; the next call or
	// sweep refreshes it. Normal for a connection nobody used lately.
	StateExpiring State = "expiring"
	// StateFailing: the last refresh failed transiently (provider outage,
	// store or lock trouble); it is retried on the next call.
	StateFailing State = "failing"
	// StateNeedsReauthorization: the provider rejected the credentials;
	// someone has to act (see LastError.Remediation).
	StateNeedsReauthorization State = "needs_reauthorization"
	// StateNotConfigured: a secret the connection needs (client id,
	// client secret, refresh token) is not in the store;
	// MissingSecrets names them. Nothing is tried until they are loaded.
	StateNotConfigured State = "not_configured"
	// StateStandbyUsed: the connection serves tokens, but its primary
	// grant was lost and the standby grant took its place; a person
	// should consent to a new standby (NextAction says how).
	StateStandbyUsed State = "standby_used"
)

// ConnectionStatus is the non-secret state of one connection. It never
// holds a token or a secret value.
type ConnectionStatus struct {
	Name     string    `json:"name"`
	Provider string    `json:"provider"`
	Grant    GrantType `json:"grant"`
	State    State     `json:"state"`
	// AccessTokenExpiresOn is the expiry of the newest access token known,
	// zero when none.
	AccessTokenExpiresOn time.Time `json:"accessTokenExpiresOn,omitzero"`
	// LastRefresh is when the connection was last refreshed, by this
	// instance or, when the lock backend keeps status, by any.
	LastRefresh time.Time `json:"lastRefresh,omitzero"`
	// LastRefreshBy is the instance that did it, when known.
	LastRefreshBy string `json:"lastRefreshBy,omitempty"`
	// LastRefreshMs is how long that refresh took, in milliseconds
	// rounded up, from the token endpoint call to its result being
	// durable (steps 6 and 7, as the Observer's Refreshed measures it).
	// Zero when unknown: a refresh by another instance whose lock backend
	// keeps no status or wrote an older record, or an imported token.
	LastRefreshMs int64 `json:"lastRefreshDurationMs,omitempty"`
	// Failures counts failed refreshes since the last success, across
	// instances when the lock backend keeps status.
	Failures int `json:"failures"`
	// Refreshes counts the refreshes the instance that answers has done
	// since it started: the HTTP view's instance, one of several. It is
	// not kept in the store (LastRefresh and Failures are, across
	// instances), so `handler status`, which refreshes nothing, omits it;
	// the JSON name says whose count it is.
	Refreshes int `json:"refreshesByThisInstance,omitempty"`
	// PersistPending is true while the connection's current refresh
	// token is in the write-ahead record beside its lock and not in the
	// store, which refused it; the next refresh or sweep moves it there.
	PersistPending bool `json:"persistPending"`
	// RefreshTokenUpdatedOn is when the refresh token was last written
	// (rotated by a refresh, or stored by an operator); zero when unknown.
	RefreshTokenUpdatedOn time.Time `json:"refreshTokenUpdatedOn,omitzero"`
	// RefreshTokenIdleExpiresOn is when the provider drops the refresh
	// token if nothing redeems it (Connection.IdleExpiry after its last
	// use); zero when the provider has no such limit.
	RefreshTokenIdleExpiresOn time.Time `json:"refreshTokenIdleExpiresOn,omitzero"`
	// ClientSecretExpiresOn is the client secret's expiry as recorded in
	// the store (Key Vault's expiry attribute); zero when none is.
	ClientSecretExpiresOn time.Time `json:"clientSecretExpiresOn,omitzero"`
	// Standby is the state of the connection's standby grant (ready,
	// used, missing); omitted when it has none configured.
	Standby StandbyState `json:"standby,omitempty"`
	// MissingSecrets names the secrets the connection needs that the
	// store does not hold (StateNotConfigured).
	MissingSecrets []string     `json:"missingSecrets,omitempty"`
	LastError      *StatusError `json:"lastError,omitempty"`
	// NextAction says what happens next, or what someone must do.
	NextAction string `json:"nextAction"`
}

// StatusError is the last failure of a connection, as callers saw it.
type StatusError struct {
	Code ErrorCode `json:"code"`
	// Category is the diagnosed category of a provider failure
	// ("reauthorize", "rotate_client_secret", ...), when there is one.
	Category    string `json:"category,omitempty"`
	Message     string `json:"message"`
	Remediation string `json:"remediation"`
}

// Status reports every connection, in configuration order. With a
// SecretLister store, one list call describes every connection's secrets.
func (b *Broker) Status(ctx context.Context) []ConnectionStatus {
	listed := b.listSecrets(ctx)
	conns := b.connList()
	out := make([]ConnectionStatus, 0, len(conns))
	for _, st := range conns {
		out = append(out, b.statusFrom(ctx, st, listed))
	}
	return out
}

// ConnectionStatus reports one connection.
func (b *Broker) ConnectionStatus(ctx context.Context, name string) (ConnectionStatus, bool) {
	st, ok := b.lookup(name)
	if !ok {
		return ConnectionStatus{}, false
	}
	return b.status(ctx, st), true
}

// mergeShared folds what the lock's holders recorded into cs: another
// instance may have refreshed since, or failed. It returns the failure that
// decides the state.
func (b *Broker) mergeShared(cs *ConnectionStatus, st *connState, sh SharedStatus, lastErr *Error, lastErrAt time.Time) *Error {
	if sh.LastRefresh.After(cs.LastRefresh) {
		cs.LastRefresh = sh.LastRefresh
		cs.LastRefreshBy = sh.Instance
		cs.LastRefreshMs = millis(sh.LastRefreshDuration)
	} else if !sh.LastRefresh.IsZero() && sh.LastRefresh.Equal(cs.LastRefresh) {
		cs.LastRefreshBy = sh.Instance
		if sh.LastRefreshDuration > 0 {
			cs.LastRefreshMs = millis(sh.LastRefreshDuration)
		}
	}
	if sh.RecordedOn.IsZero() {
		return lastErr
	}
	if sh.Failures == 0 {
		// A later success anywhere supersedes this instance's failure.
		if lastErr != nil && lastErr.Code != CodeRejected && !sh.LastRefresh.Before(lastErrAt) {
			cs.LastError = nil
			cs.Failures = 0
			return nil
		}
		return lastErr
	}
	cs.Failures = max(cs.Failures, sh.Failures)
	if lastErr != nil {
		return lastErr
	}
	e := sharedFailure(&st.conn, sh.LastError)
	e.Message = fmt.Sprintf("the last refresh, by instance %s at %s, failed (%s); %d failures since the last success",
		sh.Instance, sh.RecordedOn.UTC().Format(time.RFC3339), sh.LastError, sh.Failures)
	cs.LastError = &StatusError{Code: e.Code, Category: e.Category, Message: e.Message, Remediation: e.Remediation}
	return e
}

// millis is d in whole milliseconds, rounded up so that a timed refresh
// never reads as the zero of "unknown".
func millis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// sharedFailure is a failure another instance recorded beside the lock by
// one word (failureCategory: a category of the failure vocabulary, or, as
// older versions wrote, an RFC 6749 code or an ErrorCode), with the
// vocabulary's code and remediation; the provider's answer is in that
// instance's logs.
func sharedFailure(c *Connection, word string) *Error {
	cat := Category(word)
	if byCode, ok := CodeCategory(word); ok {
		cat = byCode
	} else if word == string(CodeRejected) {
		cat = CategoryFixConfiguration
	}
	e := &Error{Code: CodeProviderFailed, Category: word, Connection: c.Name,
		Remediation: "Retried on the next call or sweep; if it lasts, see that instance's logs (event token.refresh_failed)."}
	k, ok := Failure(cat)
	if !ok {
		return e
	}
	e.Code, e.Category = k.Code, string(cat)
	e.Remediation = remediation(c, &ProviderError{}, cat) +
		" The failing instance's logs (event token.refresh_failed) have the reason."
	return e
}

// retriedNext is the next action of a failing connection whose failure
// needs nobody to act: it is retried on the next call or sweep, which the
// remediation says unless it already does.
func retriedNext(remedy string) string {
	if strings.Contains(strings.ToLower(remedy), "retried") || strings.HasPrefix(remedy, "Retry") {
		return remedy
	}
	return "Retried on the next call or sweep. " + remedy
}

func (b *Broker) status(ctx context.Context, st *connState) ConnectionStatus {
	return b.statusFrom(ctx, st, nil)
}

// statusFrom reports one connection, describing its secrets from listed
// when given, else by reading them.
func (b *Broker) statusFrom(ctx context.Context, st *connState, listed map[string]SecretInfo) ConnectionStatus {
	c := &st.conn
	cs := ConnectionStatus{Name: c.Name, Provider: c.Provider, Grant: c.Grant}
	if ct := st.cached.Load(); ct != nil {
		cs.AccessTokenExpiresOn = ct.token.Expiry
	}
	// Another instance may have refreshed: the store knows best, or,
	// when access tokens are kept beside the lock, the lock blob, whose
	// one read also tells whether a write-ahead record is pending.
	var access SecretInfo
	pending, besideRead := false, false
	if b.besideLock {
		var err error
		access, pending, err = b.besideLockStatus(ctx, st)
		besideRead = err == nil
		if err != nil {
			e := b.accessReadError(st, err)
			cs.LastError = &StatusError{Code: e.Code, Category: e.Category, Message: e.Message, Remediation: e.Remediation}
		}
	} else if listed != nil {
		access = b.secretInfo(ctx, listed, c.Secrets.AccessToken)
	} else if s, err := b.store.Get(ctx, c.Secrets.AccessToken); err == nil {
		access = SecretInfo{ExpiresOn: s.ExpiresOn, UpdatedOn: s.UpdatedOn}
	} else if !errors.Is(err, ErrSecretNotFound) {
		e := storeError(c.Name, "read", c.Secrets.AccessToken, err)
		cs.LastError = &StatusError{Code: e.Code, Category: e.Category, Message: e.Message, Remediation: e.Remediation}
	}
	if access.ExpiresOn.After(cs.AccessTokenExpiresOn) {
		cs.AccessTokenExpiresOn = access.ExpiresOn
	}
	cs.ClientSecretExpiresOn = b.secretInfo(ctx, listed, c.Secrets.ClientSecret).ExpiresOn
	if c.Grant == GrantRefreshToken {
		cs.RefreshTokenUpdatedOn = b.secretInfo(ctx, listed, c.Secrets.RefreshToken).UpdatedOn
		lastUsed := access.UpdatedOn
		if cs.RefreshTokenUpdatedOn.After(lastUsed) {
			lastUsed = cs.RefreshTokenUpdatedOn
		}
		if c.IdleExpiry > 0 && !lastUsed.IsZero() {
			cs.RefreshTokenIdleExpiresOn = lastUsed.Add(c.IdleExpiry)
		}
	}
	st.mu.Lock()
	cs.LastRefresh = st.lastRefresh
	cs.LastRefreshMs = millis(st.lastRefreshTook)
	cs.Refreshes = st.refreshes
	lastErr, lastErrAt := st.lastError, st.lastErrorAt
	st.mu.Unlock()
	if besideRead {
		cs.PersistPending = pending && c.Grant == GrantRefreshToken
	} else if chk, ok := b.locker.(WriteAheadChecker); ok && c.Grant == GrantRefreshToken {
		cs.PersistPending, _ = chk.HasWriteAhead(ctx, c.Name)
	}
	if lastErr != nil {
		cs.LastError = &StatusError{Code: lastErr.Code, Category: lastErr.Category, Message: lastErr.Message, Remediation: lastErr.Remediation}
		cs.Failures = max(cs.Failures, 1)
	}
	if r, ok := b.locker.(StatusReader); ok {
		if sh, err := r.ReadStatus(ctx, st.conn.Name); err == nil {
			lastErr = b.mergeShared(&cs, st, sh, lastErr, lastErrAt)
		}
	}
	cs.MissingSecrets = b.missingSecrets(ctx, c, listed)
	if lastErr != nil && lastErr.Code == CodeNotConfigured && len(cs.MissingSecrets) == 0 {
		// They have been loaded since: the next call or sweep uses them.
		lastErr, cs.LastError = nil, nil
	}
	now := b.now()
	switch {
	case len(cs.MissingSecrets) > 0 && !cs.PersistPending:
		e := notConfigured(c, cs.MissingSecrets)
		cs.State = StateNotConfigured
		cs.LastError = &StatusError{Code: e.Code, Message: e.Message, Remediation: e.Remediation}
		cs.NextAction = e.Remediation
	case lastErr != nil && lastErr.Code == CodeRejected:
		cs.State = StateNeedsReauthorization
		cs.NextAction = lastErr.Remediation
	case cs.PersistPending:
		cs.State = StateFailing
		cs.NextAction = fmt.Sprintf("Restore the store's write access: the current refresh token of %q is in the write-ahead record beside its lock, and the next refresh or sweep moves it into secret %q.", c.Name, c.Secrets.RefreshToken)
	case lastErr != nil:
		cs.State = StateFailing
		cs.NextAction = retriedNext(lastErr.Remediation)
	case cs.AccessTokenExpiresOn.After(now):
		cs.State = StateHealthy
		cs.NextAction = "None: served from cache until " + cs.AccessTokenExpiresOn.Add(-st.need(0, 0)).UTC().Format(time.RFC3339) + ", then refreshed."
	default:
		cs.State = StateExpiring
		cs.NextAction = "None: refreshed by the next call or sweep."
	}
	b.standbyStatus(ctx, &cs, st)
	// A coming deadline outranks "none".
	if cs.State == StateHealthy || cs.State == StateExpiring {
		switch {
		case !cs.ClientSecretExpiresOn.IsZero() && cs.ClientSecretExpiresOn.Sub(now) < 30*24*time.Hour:
			cs.NextAction = fmt.Sprintf("Rotate the client secret before %s: create a new one at the provider and store it in %q with its expiry date.",
				cs.ClientSecretExpiresOn.UTC().Format(time.DateOnly), c.Secrets.ClientSecret)
		case !cs.RefreshTokenIdleExpiresOn.IsZero() && !c.KeepWarm:
			cs.NextAction = fmt.Sprintf("None: the sweep redeems the refresh token before %s, when %s would drop it unused.",
				cs.RefreshTokenIdleExpiresOn.UTC().Format(time.DateOnly), c.Provider)
		}
	}
	return cs
}
