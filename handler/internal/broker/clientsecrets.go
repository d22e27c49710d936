package broker

// Several client secrets, tried in order (issue 17 §4): a connection may
// name more than one client secret (Connection.ClientSecrets), so that an
// operator rotating it adds the new secret at the provider and in the store
// first, and retires the old one later, without a pipeline noticing.
//
// Why names and not Key Vault secret versions: a name is explicit in the
// connections file and in status, works the same in the local store (which
// keeps no versions), carries its own expiry attribute for the expiry
// warning, and costs one read; trying versions would need a list-versions
// call on every token request's fallback and would make "retire the old
// one" a version disable nobody sees in the connections file.

import (
	"context"
	"errors"
	"slices"
)

// ClientSecretNames returns the names of the client secrets in the order
// configured: ClientSecrets when set, else Secrets.ClientSecret alone.
func (c *Connection) ClientSecretNames() []string {
	if len(c.ClientSecrets) > 0 {
		return c.ClientSecrets
	}
	return []string{c.Secrets.ClientSecret}
}

// clientSecretOrder is the order the secrets are tried in: the one that
// last worked in this process first, then the others as configured. The
// choice is remembered per process only (connState.workingSecret): a new
// instance starts with the configured order and pays at most one
// invalid_client per retired secret that is still listed.
func (st *connState) clientSecretOrder() []string {
	names := st.conn.ClientSecretNames()
	st.mu.Lock()
	w := st.workingSecret
	st.mu.Unlock()
	if i := slices.Index(names, w); i > 0 {
		return slices.Concat([]string{w}, names[:i], names[i+1:])
	}
	return names
}

// redeemWithClientSecrets is b.redeem over the connection's client
// secrets: cur.cred carries the first configured one (credentials); when
// another worked last, that one is sent first; on invalid_client the next
// is sent, each secret at most once per refresh, every request through
// b.redeem (which checks the lock right before it).
//
// Sending the refresh token again after invalid_client is not a second
// redemption: the server authenticates the client before it validates the
// refresh token (RFC 6749 §6: "authenticate the client if client
// authentication is included, validate the refresh token"), and
// invalid_client is the error of a failed client authentication (RFC 6749
// §5.2), so the refresh token was neither redeemed nor rotated. The tries
// are bounded by the number of secrets configured, and they are different
// credentials, not repeated bad attempts with the same one (the account
// lockouts of AADSTS50053 are about user passwords).
//
// cur comes back with the secret last sent, or the first one when every
// secret was refused.
func (b *Broker) redeemWithClientSecrets(ctx context.Context, st *connState, lock Lock, cur current) (*Token, current, error) {
	names := st.conn.ClientSecretNames()
	if len(names) < 2 || !st.conn.UsesClientSecret() {
		tok, err := b.redeem(ctx, st, lock, cur.cred)
		return tok, cur, err
	}
	first := cur
	var tok *Token
	var err error
	sent := ""
	for _, name := range st.clientSecretOrder() {
		try := first
		if name != names[0] {
			s, gerr := b.store.Get(ctx, name)
			if gerr != nil || s.Value.IsZero() {
				// A retired secret already deleted from the store while
				// still listed: skip it, the others may work.
				b.log.Debug("client secret not readable; trying the next one", "event", "client_secret.skipped",
					"connection", st.conn.Name, "secret", name)
				continue
			}
			try.cred.ClientSecret = s.Value
		}
		if sent != "" {
			b.log.Info("the provider refused client secret "+sent+"; trying the next one", "event", "client_secret.next",
				"connection", st.conn.Name, "secret", name, "refused", sent)
		}
		sent, cur = name, try
		tok, err = b.redeem(ctx, st, lock, try.cred)
		if !invalidClient(err) {
			break
		}
	}
	if invalidClient(err) {
		// Every secret was refused: the failure is recorded against the
		// credentials checkCooldown reads (the first secret), so that the
		// cool-down holds and the provider is not asked again at once.
		cur = first
	}
	if err == nil {
		st.mu.Lock()
		changed := st.workingSecret != sent
		st.workingSecret = sent
		st.mu.Unlock()
		if changed && sent != names[0] {
			b.log.Info("token requests now use client secret "+sent, "event", "client_secret.switched",
				"connection", st.conn.Name, "secret", sent)
		}
	}
	return tok, cur, err
}

func invalidClient(err error) bool {
	var pe *ProviderError
	return errors.As(err, &pe) && pe.Code == "invalid_client"
}
