package broker

import (
	"context"
	"errors"
	"fmt"
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
	// Failures counts failed refreshes since the last success, across
	// instances when the lock backend keeps status.
	Failures int `json:"failures"`
	// Refreshes counts this instance's refreshes since start.
	Refreshes int `json:"refreshes"`
	// PersistPending is true while a rotated refresh token is held in
	// memory because the store refused it.
	PersistPending bool         `json:"persistPending"`
	LastError      *StatusError `json:"lastError,omitempty"`
}

// StatusError is the last failure of a connection, as callers saw it.
type StatusError struct {
	Code        ErrorCode `json:"code"`
	Message     string    `json:"message"`
	Remediation string    `json:"remediation"`
}

// Status reports every connection, in configuration order.
func (b *Broker) Status(ctx context.Context) []ConnectionStatus {
	out := make([]ConnectionStatus, 0, len(b.order))
	for _, name := range b.order {
		out = append(out, b.status(ctx, b.conns[name]))
	}
	return out
}

// ConnectionStatus reports one connection.
func (b *Broker) ConnectionStatus(ctx context.Context, name string) (ConnectionStatus, bool) {
	st, ok := b.conns[name]
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
	} else if !sh.LastRefresh.IsZero() && sh.LastRefresh.Equal(cs.LastRefresh) {
		cs.LastRefreshBy = sh.Instance
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
	code := CodeProviderFailed
	if permanentCategory(sh.LastError) {
		code = CodeRejected
	}
	e := &Error{
		Code:       code,
		Connection: st.conn.Name,
		Message: fmt.Sprintf("the last refresh, by instance %s at %s, failed (%s); %d failures since the last success",
			sh.Instance, sh.RecordedOn.UTC().Format(time.RFC3339), sh.LastError, sh.Failures),
		Remediation: "See that instance's logs (event token.refresh_failed) for the provider's answer and what to do.",
	}
	cs.LastError = &StatusError{Code: e.Code, Message: e.Message, Remediation: e.Remediation}
	return e
}

// permanentCategory reports whether a recorded failure category needs
// someone to act before a refresh can succeed.
func permanentCategory(c string) bool {
	switch c {
	case "invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope", "unsupported_grant_type", string(CodeRejected):
		return true
	}
	return false
}

func (b *Broker) status(ctx context.Context, st *connState) ConnectionStatus {
	cs := ConnectionStatus{Name: st.conn.Name, Provider: st.conn.Provider, Grant: st.conn.Grant}
	if ct := st.cached.Load(); ct != nil {
		cs.AccessTokenExpiresOn = ct.token.Expiry
	}
	// Another instance may have refreshed: the store knows best.
	if s, err := b.store.Get(ctx, st.conn.Secrets.AccessToken); err == nil && s.ExpiresOn.After(cs.AccessTokenExpiresOn) {
		cs.AccessTokenExpiresOn = s.ExpiresOn
	} else if err != nil && !errors.Is(err, ErrSecretNotFound) {
		cs.LastError = &StatusError{Code: CodeUnavailable, Message: "the secret store could not be read", Remediation: "Check that the store is reachable and this app may read its secrets."}
	}
	st.mu.Lock()
	cs.LastRefresh = st.lastRefresh
	cs.Refreshes = st.refreshes
	cs.PersistPending = !st.pendingRefresh.IsZero()
	lastErr, lastErrAt := st.lastError, st.lastErrorAt
	st.mu.Unlock()
	if lastErr != nil {
		cs.LastError = &StatusError{Code: lastErr.Code, Message: lastErr.Message, Remediation: lastErr.Remediation}
		cs.Failures = max(cs.Failures, 1)
	}
	if r, ok := b.locker.(StatusReader); ok {
		if sh, err := r.ReadStatus(ctx, st.conn.Name); err == nil {
			lastErr = b.mergeShared(&cs, st, sh, lastErr, lastErrAt)
		}
	}
	switch {
	case lastErr != nil && lastErr.Code == CodeRejected:
		cs.State = StateNeedsReauthorization
	case lastErr != nil || cs.PersistPending:
		cs.State = StateFailing
	case cs.AccessTokenExpiresOn.After(b.now()):
		cs.State = StateHealthy
	default:
		cs.State = StateExpiring
	}
	return cs
}
