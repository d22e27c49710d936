package broker

import "strings"

// The consent flow keeps two bookkeeping records of a connection in the
// secret store beside its secrets (package consent): the pending
// authorization (<name>-consent-state: its state, PKCE verifier, redirect
// URI and expiry, as JSON) and the consent links already used
// (<name>-consent-links-used: ticket hashes and expiries, as JSON). They
// are stored as secrets so that any instance can finish a consent, but
// most of what they hold is public (timestamps, the callback address, the
// connection's name); ConsentRecord tells them apart so that the redactor
// registers only their secret field, not the whole value, whose every
// 12-character piece would otherwise be cut out of status answers and logs.
const (
	ConsentStateSuffix     = "-consent-state"
	ConsentLinksUsedSuffix = "-consent-links-used"
)

// ConsentRecord reports whether the secret name is one of a connection's
// consent bookkeeping records.
func ConsentRecord(name string) bool {
	for _, suffix := range []string{ConsentStateSuffix, ConsentLinksUsedSuffix} {
		if c, ok := strings.CutSuffix(name, suffix); ok && ValidConnectionName(c) {
			return true
		}
	}
	return false
}
