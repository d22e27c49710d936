package diagnose

import (
	"regexp"
	"strings"
)

// maxSanitized bounds Sanitize's result in bytes: enough for an AADSTS
// message with its trace and correlation ids.
const maxSanitized = 300

const redacted = "[redacted]"

var (
	// secretAssignment is a credential echoed as a form field or header:
	// "refresh_token=…", "client_secret: …", "Bearer …".
	secretAssignment = regexp.MustCompile(`(?i)\b(refresh_token|access_token|id_token|client_secret|client_assertion|assertion|password|code_verifier)(\s*[=:]\s*["']?)[^\s&,;"']+|\b(bearer|basic)(\s+)[A-Za-z0-9\-._~+/]{16,}=*`)
	// opaque is a run of the characters tokens and secrets are made of.
	opaque = regexp.MustCompile(`[A-Za-z0-9\-_.~+/=!]{24,}`)
	// uuid is an identifier (tenant, app, trace, correlation): worth
	// keeping for support, and not a secret of any provider in this
	// handler's presets except HubSpot's refresh tokens, which the oauth
	// package redacts by value before a description gets here.
	uuid = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

// Sanitize makes provider text safe for a log line or an error message: it
// keeps printable ASCII only (so nothing can forge a line break or reorder
// text), collapses whitespace, redacts anything shaped like a token or a
// secret (a JWT, a long run of token characters that mixes letters and
// digits, a credential written as name=value), and caps the result at 300
// bytes. A provider may echo its input, a refresh token or a client secret,
// in its error_description; Sanitize is the last line of defence against
// that, not a licence to show descriptions to anyone who may not see the
// connection's configuration.
func Sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f':
			return ' '
		case r > 0x20 && r < 0x7f:
			return r
		case r < 0x20 || r == 0x7f:
			return -1
		}
		return '?'
	}, s)
	s = secretAssignment.ReplaceAllStringFunc(s, func(m string) string {
		sub := secretAssignment.FindStringSubmatch(m)
		if sub[1] != "" {
			return sub[1] + sub[2] + redacted
		}
		return sub[3] + sub[4] + redacted
	})
	s = opaque.ReplaceAllStringFunc(s, func(run string) string {
		// A sentence's full stop is not part of the run.
		body := strings.TrimRight(run, ".")
		if !looksSecret(body) {
			return run
		}
		return redacted + run[len(body):]
	})
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxSanitized {
		s = s[:maxSanitized-3] + "..."
	}
	return s
}

// looksSecret reports whether a run of token characters is likely a token
// or a secret rather than a word, a path or an identifier.
func looksSecret(run string) bool {
	if len(run) < 24 || uuid.MatchString(run) {
		return false
	}
	if strings.HasPrefix(run, "eyJ") {
		return true // a JWT or a JSON object in base64url
	}
	var letter, digit bool
	for _, r := range run {
		switch {
		case r >= '0' && r <= '9':
			digit = true
		case r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
			letter = true
		}
	}
	return letter && digit
}
