package consent

import (
	"context"
	"errors"
	"fmt"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// MissingSecretError reports a client credential that is not in the store.
// The broker needs it too, so a consent without it would only store a
// refresh token that nothing can redeem.
type MissingSecretError struct {
	Connection string
	// Secret is the name the credential is expected under.
	Secret string
	// What is "client id" or "client secret".
	What string
}

func (e *MissingSecretError) Error() string {
	return fmt.Sprintf("connection %q: the %s is missing: secret %q does not exist or is empty", e.Connection, e.What, e.Secret)
}

// Remediation says how to store the credential.
func (e *MissingSecretError) Remediation() string {
	return fmt.Sprintf("Store the %s in secret %q (Key Vault: az keyvault secret set --name %s; locally: handler secret set %s), then start again.",
		e.What, e.Secret, e.Secret, e.Secret)
}

// StoreError is a store operation that failed, naming the secret (never
// its value).
type StoreError struct {
	// Op is "read" or "write".
	Op     string
	Secret string
	Err    error
}

func (e *StoreError) Error() string {
	return fmt.Sprintf("could not %s secret %q in the secret store: %v", e.Op, e.Secret, e.Err)
}

func (e *StoreError) Unwrap() error { return e.Err }

// ClientCredentials reads c's client id and secret as the broker does: the
// id is Connection.ClientID, or else the store's secret Secrets.ClientID;
// the secret is the store's Secrets.ClientSecret, and empty for a
// connection that authenticates with an assertion (private_key_jwt,
// managedIdentity) or not at all (none), whose secret is never read. A missing one is a *MissingSecretError, a store failure a
// *StoreError.
func ClientCredentials(ctx context.Context, store broker.SecretStore, c broker.Connection) (string, broker.Secret, error) {
	id := c.ClientID
	if id == "" {
		s, err := required(ctx, store, c, c.Secrets.ClientID, "client id")
		if err != nil {
			return "", "", err
		}
		id = s.Reveal()
	}
	switch c.AuthStyle {
	case broker.AuthPrivateKeyJWT, broker.AuthManagedIdentity, broker.AuthNone:
		return id, "", nil
	}
	secret, err := required(ctx, store, c, c.Secrets.ClientSecret, "client secret")
	if err != nil {
		return "", "", err
	}
	return id, secret, nil
}

func required(ctx context.Context, store broker.SecretStore, c broker.Connection, name, what string) (broker.Secret, error) {
	s, err := store.Get(ctx, name)
	if errors.Is(err, broker.ErrSecretNotFound) || (err == nil && s.Value.IsZero()) {
		return "", &MissingSecretError{Connection: c.Name, Secret: name, What: what}
	}
	if err != nil {
		return "", &StoreError{Op: "read", Secret: name, Err: err}
	}
	return s.Value, nil
}

// Save stores tok as c's current tokens in the order of the refresh
// protocol: the refresh token first, then the access token with its
// expiry. Failing in between leaves the new refresh token in place, which
// is what counts: the broker redeems it for an access token at the next
// call. The broker notices the new refresh token without a restart: a
// recorded invalid_grant stops holding once the credentials in the store
// differ from the ones it was recorded with.
func Save(ctx context.Context, store broker.SecretStore, c broker.Connection, tok *broker.Token) error {
	if tok.RefreshToken.IsZero() {
		return ErrNoRefreshToken
	}
	if err := store.Set(ctx, c.Secrets.RefreshToken, broker.StoredSecret{Value: tok.RefreshToken, UpdatedOn: tok.IssuedAt}); err != nil {
		return &StoreError{Op: "write", Secret: c.Secrets.RefreshToken, Err: err}
	}
	if tok.AccessToken.IsZero() {
		return nil
	}
	if err := store.Set(ctx, c.Secrets.AccessToken, broker.StoredSecret{Value: tok.AccessToken, ExpiresOn: tok.Expiry, UpdatedOn: tok.IssuedAt}); err != nil {
		return &StoreError{Op: "write", Secret: c.Secrets.AccessToken, Err: err}
	}
	return nil
}

// SaveStandby stores tok's refresh token as c's standby grant
// (Secrets.StandbyRefreshToken); its access token is not kept: callers
// never use the standby. A write-ahead record beside the standby's lock
// that holds an older token is discarded by the broker, because the store's
// token changed after it was written (broker readCurrent).
func SaveStandby(ctx context.Context, store broker.SecretStore, c broker.Connection, tok *broker.Token) error {
	if tok.RefreshToken.IsZero() {
		return ErrNoRefreshToken
	}
	if !c.Standby || c.Secrets.StandbyRefreshToken == "" {
		return fmt.Errorf("connection %q has no standby grant configured (\"standby\": true)", c.Name)
	}
	if err := store.Set(ctx, c.Secrets.StandbyRefreshToken, broker.StoredSecret{Value: tok.RefreshToken, UpdatedOn: tok.IssuedAt}); err != nil {
		return &StoreError{Op: "write", Secret: c.Secrets.StandbyRefreshToken, Err: err}
	}
	return nil
}
