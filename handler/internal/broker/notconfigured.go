package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// notConfigured is the answer for a connection whose secrets are not all
// in the store: the provider was never called, so this is not the
// provider's rejection, and it names every secret to load.
func notConfigured(c *Connection, missing []string) *Error {
	quoted := make([]string, len(missing))
	for i, m := range missing {
		quoted[i] = fmt.Sprintf("%q (%s)", m, c.secretRole(m))
	}
	msg := fmt.Sprintf("connection %q is not configured: the secret store has no %s; the provider was not called",
		c.Name, strings.Join(quoted, ", "))
	remedy := fmt.Sprintf("Load %s: handler secret set NAME reads the value from stdin (into Key Vault when KEY_VAULT_URL is set, else the local store)", strings.Join(missing, ", "))
	if c.Grant == GrantRefreshToken && containsFold(missing, c.Secrets.RefreshToken) {
		remedy += fmt.Sprintf("; the refresh token comes from a consent (handler connect %s, or the consent link), or from an existing one with handler import-refresh-token %s", c.Name, c.Name)
	}
	return &Error{Code: CodeNotConfigured, Connection: c.Name, Message: msg, Remediation: remedy + "."}
}

// secretRole says what the named secret holds for c.
func (c *Connection) secretRole(name string) string {
	switch {
	case strings.EqualFold(name, c.Secrets.ClientID):
		return "client id"
	case strings.EqualFold(name, c.Secrets.ClientSecret):
		return "client secret"
	case strings.EqualFold(name, c.Secrets.RefreshToken):
		return "refresh token"
	}
	return "secret"
}

func containsFold(names []string, name string) bool {
	for _, n := range names {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// missingSecrets names the connection's required secrets the store does
// not hold: from listed, the store's listing, when there is one (a secret
// missing from it does not exist), else by reading each. A secret that
// could not be read for another reason is not called missing: the status
// reports the store's failure instead.
func (b *Broker) missingSecrets(ctx context.Context, c *Connection, listed map[string]SecretInfo) []string {
	var missing []string
	for _, name := range c.RequiredSecrets() {
		if listed != nil {
			if _, ok := listed[strings.ToLower(name)]; !ok {
				missing = append(missing, name)
			}
			continue
		}
		s, err := b.store.Get(ctx, name)
		if errors.Is(err, ErrSecretNotFound) || (err == nil && s.Value.IsZero()) {
			missing = append(missing, name)
		}
	}
	return missing
}
