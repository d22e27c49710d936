package consent

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
)

// Errors wrapped by an *EndpointError.
var (
	// ErrNoAuthorizationURL: the connection's provider preset has no
	// authorization endpoint ("generic" has none).
	ErrNoAuthorizationURL = errors.New("the provider preset has no authorization URL")
	// ErrTenantUnknown: the preset's authorization URL has a {tenant}
	// placeholder, and the connection's token URL does not follow the
	// preset's, so the tenant cannot be read from it.
	ErrTenantUnknown = errors.New("the tenant cannot be told from the connection's token URL")
	// ErrInsecureURL: the authorization URL is not an absolute https URL
	// (http only on a loopback host).
	ErrInsecureURL = errors.New("the authorization URL must be an absolute https URL (http only for loopback hosts)")
)

// EndpointError says why a connection's authorization endpoint cannot be
// used.
type EndpointError struct {
	Connection string
	Provider   string
	// URL is the authorization URL in question; empty when there is none.
	URL string
	Err error
}

func (e *EndpointError) Error() string {
	s := fmt.Sprintf("connection %q (provider %q): %v", e.Connection, e.Provider, e.Err)
	if e.URL != "" {
		s += ": " + e.URL
	}
	return s
}

func (e *EndpointError) Unwrap() error { return e.Err }

// AuthorizationURL returns c's authorization endpoint: the connection's
// authorizationUrl when it gives one, else its preset's
// (config.Preset.AuthorizationURL):
//
//   - a {tenant} placeholder is filled with the tenant the connection's
//     token URL was made with (the connection keeps only the result, so
//     the tenant is read back from it against the preset's token URL);
//   - when the connection moved its token endpoint to another host
//     (Salesforce My Domain, a self-managed GitLab) and the preset's
//     authorization endpoint is on the preset token endpoint's host, the
//     authorization endpoint moves with it.
//
// It fails with an *EndpointError wrapping ErrNoAuthorizationURL when the
// preset has none (the generic provider): `handler connect` then takes the
// URL from its -authorization-url flag.
func AuthorizationURL(c broker.Connection) (string, error) {
	if c.AuthorizationURL != "" {
		// The connection's own (config checked its shape): a generic
		// provider's, or a preset's moved elsewhere.
		if err := checkEndpointURL(c.AuthorizationURL); err != nil {
			return "", &EndpointError{Connection: c.Name, Provider: c.Provider, URL: c.AuthorizationURL, Err: err}
		}
		return c.AuthorizationURL, nil
	}
	p, ok := config.LookupPreset(c.Provider)
	if !ok || p.AuthorizationURL == "" {
		return "", &EndpointError{Connection: c.Name, Provider: c.Provider, Err: ErrNoAuthorizationURL}
	}
	auth := p.AuthorizationURL
	const placeholder = "{tenant}"
	if strings.Contains(auth, placeholder) {
		tenant, ok := fill(p.TokenURL, c.TokenURL, placeholder)
		if !ok {
			return "", &EndpointError{Connection: c.Name, Provider: c.Provider, URL: auth, Err: ErrTenantUnknown}
		}
		auth = strings.ReplaceAll(auth, placeholder, tenant)
	} else if moved, ok := moveHost(auth, p.TokenURL, c.TokenURL); ok {
		auth = moved
	}
	if err := checkEndpointURL(auth); err != nil {
		return "", &EndpointError{Connection: c.Name, Provider: c.Provider, URL: auth, Err: err}
	}
	return auth, nil
}

// fill returns what stands in place of placeholder in s, a URL made from
// template.
func fill(template, s, placeholder string) (string, bool) {
	prefix, suffix, ok := strings.Cut(template, placeholder)
	if !ok || strings.Contains(suffix, placeholder) {
		return "", false
	}
	if len(s) <= len(prefix)+len(suffix) || !strings.HasPrefix(s, prefix) || !strings.HasSuffix(s, suffix) {
		return "", false
	}
	v := s[len(prefix) : len(s)-len(suffix)]
	// The tenant was checked by the connections file's rules; a '/' or '?'
	// here means the URL was not made from this template at all.
	if strings.ContainsAny(v, "/?#@") {
		return "", false
	}
	return v, true
}

// moveHost returns auth on the host of tokenURL when the connection's
// tokenURL is on another host than the preset's presetToken, and auth was
// on presetToken's host.
func moveHost(auth, presetToken, tokenURL string) (string, bool) {
	a, err1 := url.Parse(auth)
	pt, err2 := url.Parse(presetToken)
	t, err3 := url.Parse(tokenURL)
	if err1 != nil || err2 != nil || err3 != nil || t.Host == "" {
		return "", false
	}
	if !strings.EqualFold(a.Host, pt.Host) || strings.EqualFold(t.Host, pt.Host) {
		return "", false
	}
	a.Scheme, a.Host = t.Scheme, t.Host
	return a.String(), true
}

// checkEndpointURL applies the token URL's rule to the authorization URL:
// the browser carries the state and the client id there, and brings the
// code back, so it must be https except on this machine.
func checkEndpointURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.User != nil || u.Fragment != "" {
		return ErrInsecureURL
	}
	if u.Scheme == "https" {
		return nil
	}
	if u.Scheme == "http" && broker.LoopbackHost(u.Hostname()) {
		return nil
	}
	return ErrInsecureURL
}

// offlineAccess is what a provider needs at its authorization endpoint to
// issue a refresh token: a scope, or parameters.
type offlineAccess struct {
	scope  string
	params [][2]string
}

// offline holds, by preset name, what each provider's Notes say it needs at
// consent. Google and Zoho also get prompt=consent: both issue a refresh
// token only at a user's first consent to a client unless the consent page
// is forced, and a re-authorization is never the first.
var offline = map[string]offlineAccess{
	"atlassian":       {scope: "offline_access"},
	"dropbox":         {params: [][2]string{{"token_access_type", "offline"}}},
	"google":          {params: [][2]string{{"access_type", "offline"}, {"prompt", "consent"}}},
	"microsoft":       {scope: "offline_access"},
	"sage-accounting": {params: [][2]string{{"filter", "apiv3.1"}}},
	"xero":            {scope: "offline_access"},
	"zoho":            {params: [][2]string{{"access_type", "offline"}, {"prompt", "consent"}}},
}

// Scopes returns the scopes to ask for at consent: the connection's own
// (those its refreshes send), its consent scopes (consentScopes, or its
// preset's), then the one its provider needs to issue a refresh token
// (offline_access for Xero, Atlassian and Microsoft), then extra, each once.
// extra entries may hold several scopes separated by spaces; a scope that is
// not an RFC 6749 §3.3 scope-token is an error.
func Scopes(c broker.Connection, extra ...string) ([]string, error) {
	out := slices.Concat(c.Scopes, c.ConsentScopes)
	if s := offline[c.Provider].scope; s != "" {
		out = append(out, s)
	}
	for _, e := range extra {
		for s := range strings.FieldsSeq(e) {
			if !isScopeToken(s) {
				return nil, fmt.Errorf("scope %q is not a scope: printable ASCII without spaces, quotes or backslashes", s)
			}
			out = append(out, s)
		}
	}
	seen := make(map[string]bool, len(out))
	return slices.DeleteFunc(out, func(s string) bool {
		dup := seen[s]
		seen[s] = true
		return dup
	}), nil
}

// isScopeToken: 1*( %x21 / %x23-5B / %x5D-7E ).
func isScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
