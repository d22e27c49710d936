package broker

import (
	"context"
	"errors"
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
	// LastRefresh is when this instance last refreshed the connection.
	LastRefresh time.Time `json:"lastRefresh,omitzero"`
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
	lastErr := st.lastError
	st.mu.Unlock()
	if lastErr != nil {
		cs.LastError = &StatusError{Code: lastErr.Code, Message: lastErr.Message, Remediation: lastErr.Remediation}
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
