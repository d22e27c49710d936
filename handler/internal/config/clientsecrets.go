package config

import (
	"encoding/json"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// maxClientSecrets bounds secrets.clientSecrets: an old and a new secret,
// and one spare. Each is sent at most once per refresh (broker
// clientsecrets.go), so this also bounds the requests one refresh makes.
const maxClientSecrets = 3

// resolveClientSecrets reads secrets.clientSecrets: the names of several
// client secrets, tried in this order on invalid_client, so that a client
// secret can be rotated without downtime (issue 17 §4). The first becomes
// Secrets.ClientSecret, which the status, the consent flow and the
// remediation texts name.
func (c *connParser) resolveClientSecrets(fields map[string]json.RawMessage) {
	const field = "secrets.clientSecrets"
	if _, both := fields["clientSecret"]; both {
		c.problem(field, "give either clientSecret (one secret) or clientSecrets (several, tried in order), not both")
		return
	}
	raw := fields["clientSecrets"]
	var names []string
	if json.Unmarshal(raw, &names) != nil || len(names) < 2 || len(names) > maxClientSecrets {
		c.problem(field, "found %s; must be an array of 2 to %d secret names, tried in this order (for one secret use clientSecret)", describe(raw), maxClientSecrets)
		c.secretOK["clientSecret"] = false
		return
	}
	for i, name := range names {
		if !broker.ValidSecretName(name) {
			// Not repeated: it may be a secret value pasted by mistake.
			c.problem(field, "element %d is a string of %d characters that is not a secret name (not shown, in case it is a secret value); must be the name of a secret: 1-127 characters of 0-9, a-z, A-Z and -, starting with a letter", i, len(name))
			c.secretOK["clientSecret"] = false
			return
		}
		for _, prev := range names[:i] {
			if prev == name {
				c.problem(field, "names %q twice; each secret is tried once", name)
				return
			}
		}
		if refused := c.refusedSecret("clientSecret", name); refused != "" {
			c.problem(field, "element %d: %s", i, refused)
			return
		}
	}
	c.conn.ClientSecrets = names
	c.conn.Secrets.ClientSecret = names[0]
	c.secretOK["clientSecret"] = true
}
