package broker

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ImportRefreshToken seeds connection name with a refresh token obtained
// elsewhere (a pipeline that refreshed tokens itself, another tool),
// validated by one refresh: under the connection's lock, the token is
// redeemed once with the client credentials from the store, and only a
// token the provider accepted is kept, with what the refresh issued (the
// rotated refresh token first, through the write-ahead record, as any
// refresh). A token the provider refuses leaves the store as it was. The
// lock is required: on a rotating provider, redeeming the imported token
// while an instance redeems the stored one would be two redemptions of
// one family. It returns the connection's status afterwards.
func (b *Broker) ImportRefreshToken(ctx context.Context, name string, rt Secret) (ConnectionStatus, error) {
	st, ok := b.lookup(name)
	if !ok {
		return ConnectionStatus{}, &Error{Code: CodeNotFound, Connection: name, Message: fmt.Sprintf("no connection is named %q", name),
			Remediation: "handler status lists the configured connections."}
	}
	c := &st.conn
	if c.Grant != GrantRefreshToken {
		return ConnectionStatus{}, &Error{Code: CodeBadRequest, Connection: name,
			Message:     fmt.Sprintf("connection %q uses the %s grant, which has no refresh token", name, c.Grant),
			Remediation: "Import a refresh token only into a connection whose grant is refresh_token."}
	}
	if rt.IsZero() {
		return ConnectionStatus{}, &Error{Code: CodeBadRequest, Connection: name, Message: "the refresh token is empty",
			Remediation: "Pipe the refresh token into the command's stdin."}
	}
	// The client credentials alone: the refresh token in the store, if
	// any, is what the imported one replaces.
	clientOnly := &connState{conn: *c}
	clientOnly.conn.Grant = GrantClientCredentials
	cred, err := b.credentials(ctx, clientOnly)
	if err != nil {
		return ConnectionStatus{}, asError(name, err)
	}
	lockCtx, cancel := context.WithTimeout(ctx, b.lockWait)
	lock, err := b.locker.Lock(lockCtx, name)
	cancel()
	if err != nil {
		return ConnectionStatus{}, &Error{Code: CodeUnavailable, Connection: name, Err: err,
			Message:     "the connection's lock could not be taken, and a refresh token is never redeemed without it",
			Remediation: "Check that the lock storage is reachable from here and that no refresh has been stuck for long; retry."}
	}
	defer b.release(name, lock)

	// The store's refresh token is what the write-ahead record, written
	// before the store, overrides (writeahead.go).
	cur := current{cred: cred}
	if s, gerr := b.store.Get(ctx, c.Secrets.RefreshToken); gerr == nil {
		cur.base = hashToken(s.Value)
	} else if !errors.Is(gerr, ErrSecretNotFound) {
		return ConnectionStatus{}, storeError(name, "read", c.Secrets.RefreshToken, gerr)
	}
	sent := cred
	sent.RefreshToken = rt
	began := time.Now()
	tok, err := b.redeem(ctx, st, lock, sent)
	if err != nil {
		return ConnectionStatus{}, b.providerFailure(ctx, st, sent, err)
	}
	if tok.RefreshToken.IsZero() {
		// Not rotated: the imported token stays current, and goes to the
		// store as persist would a rotated one.
		tok.RefreshToken = rt
	}
	if _, err := b.persist(ctx, st, lock, cur, tok, began); err != nil {
		b.persistFailed(ctx, st, lock, err)
		return ConnectionStatus{}, asError(name, err)
	}
	b.recordShared(ctx, st, lock, nil, 0)
	b.log.Info("refresh token imported and validated by one refresh", "event", "token.imported", "connection", name)
	return b.status(ctx, st), nil
}
