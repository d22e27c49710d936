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
// is sent, each secret at most once per refresh as the store held it when
// the refresh began and at most once more as the store holds it now
// (redeemFresh: the one sent may have been cached, credcache.go), every
// request through b.redeem (which checks the lock right before it). A
// connection with one client secret, or with none (an assertion), goes
// through redeemFresh alone.
//
// Sending the refresh token again after invalid_client is not a second
// redemption: the server authenticates the client before it validates the
// refresh token (RFC 6749 §6: "authenticate the client if client
// authentication is included, validate the refresh token"), and
// invalid_client is the error of a failed client authentication (RFC 6749
// §5.2), so the refresh token was neither redeemed nor rotated. The tries
// are bounded by twice the number of secrets configured, and they are
// different credentials, not repeated bad attempts with the same one (the
// account lockouts of AADSTS50053 are about user passwords: IdsLocked,
// "the user tried to sign in too many times with an incorrect user ID or
// password", learn.microsoft.com/entra/identity-platform/reference-error-codes).
//
// cur comes back with the secret last sent, or the first one as the store
// holds it when every secret was refused.
func (b *Broker) redeemWithClientSecrets(ctx context.Context, st *connState, lock Lock, cur current) (*Token, current, error) {
	if !st.conn.UsesClientSecret() {
		return b.redeemFresh(ctx, st, lock, cur, "")
	}
	names := st.conn.ClientSecretNames()
	first := cur
	var tok *Token
	var err error
	sent := ""
	for _, name := range st.clientSecretOrder() {
		try := first
		if name != names[0] {
			s, gerr := b.readSecret(ctx, st, name)
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
		sent = name
		tok, cur, err = b.redeemFresh(ctx, st, lock, try, name)
		// What the store holds now: the cool-down compares it.
		if name == names[0] {
			first = cur
		} else {
			first.cred.ClientID = cur.cred.ClientID
		}
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
	if err == nil && len(names) > 1 {
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

// redeemFresh is b.redeem, and on invalid_client once more when the
// store's client credentials differ from those sent: the client id when
// the store holds it, and the client secret named secret ("" for none).
// The ones sent may have come from the cache (credcache.go), and an
// operator may have replaced them since; those read now replace them in
// the cache either way. Once, never in a loop: a second invalid_client is
// the answer.
func (b *Broker) redeemFresh(ctx context.Context, st *connState, lock Lock, cur current, secret string) (*Token, current, error) {
	tok, err := b.redeem(ctx, st, lock, cur.cred)
	if !invalidClient(err) {
		return tok, cur, err
	}
	fresh, changed := b.rereadClient(ctx, st, cur.cred, secret)
	if !changed {
		return tok, cur, err
	}
	b.log.Info("the provider refused the client credentials, and the store holds others; trying those once", "event", "client_secret.reread",
		"connection", st.conn.Name, "secret", secret)
	cur.cred = fresh
	tok, err = b.redeem(ctx, st, lock, cur.cred)
	return tok, cur, err
}

// rereadClient reads the client id (when the store holds it) and the
// client secret named secret (unless "") from the store, past the cache,
// into a copy of cred; changed reports whether either differs from cred's.
// One the store does not give stays as sent.
func (b *Broker) rereadClient(ctx context.Context, st *connState, cred Credentials, secret string) (fresh Credentials, changed bool) {
	c := &st.conn
	fresh = cred
	if c.ClientID == "" {
		if s, err := b.readClientCredential(ctx, c.Secrets.ClientID); err == nil && !s.Value.IsZero() {
			fresh.ClientID = s.Value.Reveal()
		}
	}
	if secret != "" {
		if s, err := b.readClientCredential(ctx, secret); err == nil && !s.Value.IsZero() {
			fresh.ClientSecret = s.Value
		}
	}
	return fresh, fresh.ClientID != cred.ClientID || fresh.ClientSecret != cred.ClientSecret
}

func invalidClient(err error) bool {
	var pe *ProviderError
	return errors.As(err, &pe) && pe.Code == "invalid_client"
}
