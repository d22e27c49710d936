package config

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
)

// TestConsentFields: authorizationUrl, authParams and consentScopes let a
// connection say how a person consents (a generic provider has no preset to
// say it); presets give their consent scopes; each is refused where it
// cannot work.
func TestConsentFields(t *testing.T) {
	generic := `"name": "g", "tokenUrl": "https://id.example.com/token", "clientAuth": "body"`
	tests := []struct {
		name       string
		conn       string
		wantURL    string
		wantParams map[string]string
		wantScopes []string
		problems   []string // "field: substring"
	}{
		{name: "generic with all three", conn: generic + `, "authorizationUrl": "https://id.example.com/authorize", "authParams": {"prompt": "consent", "audience": "api"}, "consentScopes": ["read", "offline_access"]`,
			wantURL: "https://id.example.com/authorize", wantParams: map[string]string{"prompt": "consent", "audience": "api"}, wantScopes: []string{"read", "offline_access"}},
		{name: "preset's consent scopes", conn: `"name": "x", "provider": "xero"`,
			wantScopes: []string{"openid", "profile", "email", "accounting.settings.read"}},
		{name: "connection's consent scopes replace the preset's", conn: `"name": "x", "provider": "xero", "consentScopes": ["accounting.invoices.read"]`,
			wantScopes: []string{"accounting.invoices.read"}},
		{name: "loopback http for tests", conn: generic + `, "authorizationUrl": "http://127.0.0.1:8080/authorize"`, wantURL: "http://127.0.0.1:8080/authorize"},
		{name: "plain http", conn: generic + `, "authorizationUrl": "http://id.example.com/authorize"`,
			problems: []string{"authorizationUrl: must be https"}},
		{name: "credential in the URL", conn: generic + `, "authorizationUrl": "https://id.example.com/authorize?client_secret=x"`,
			problems: []string{"authorizationUrl: looks like a credential"}},
		{name: "not a string", conn: generic + `, "authorizationUrl": 7`, problems: []string{"authorizationUrl: "}},
		{name: "reserved parameter", conn: generic + `, "authParams": {"redirect_uri": "https://evil.example.com", "State": "x"}`,
			problems: []string{"authParams.State: sent by the authorization request itself", "authParams.redirect_uri: sent by the authorization request itself"}},
		{name: "parameter value not a string", conn: generic + `, "authParams": {"max_age": 0}`, problems: []string{"authParams.max_age: must be a string"}},
		{name: "params not an object", conn: generic + `, "authParams": ["prompt"]`, problems: []string{"authParams: must be an object"}},
		{name: "scope with a space", conn: generic + `, "consentScopes": ["read write"]`, problems: []string{"consentScopes[0]: one non-empty token"}},
		{name: "client credentials", conn: `"name": "c", "grant": "client_credentials", "tokenUrl": "https://id.example.com/t", "clientAuth": "body", "authorizationUrl": "https://id.example.com/a", "authParams": {"prompt": "x"}, "consentScopes": ["a"]`,
			problems: []string{"authorizationUrl: needs no consent", "authParams: needs no consent", "consentScopes: needs no consent"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conns, err := ParseConnections([]byte(`{"connections": [{` + tc.conn + `}]}`))
			var got []string
			var ve *ValidationError
			if errors.As(err, &ve) {
				for _, p := range ve.Problems {
					got = append(got, p.String())
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.problems) {
				t.Fatalf("problems = %q, want %d like %q", got, len(tc.problems), tc.problems)
			}
			for i, w := range tc.problems {
				field, sub, _ := strings.Cut(w, ": ")
				if !strings.Contains(got[i], `field "`+field+`"`) || !strings.Contains(got[i], sub) {
					t.Errorf("problem %d = %q, want field %q containing %q", i, got[i], field, sub)
				}
			}
			if len(tc.problems) > 0 {
				if strings.Contains(strings.Join(got, " "), "evil.example.com") {
					t.Error("a refused parameter's value is repeated in the message")
				}
				return
			}
			c := conns[0]
			if c.AuthorizationURL != tc.wantURL || !maps.Equal(c.AuthParams, tc.wantParams) || !slices.Equal(c.ConsentScopes, tc.wantScopes) {
				t.Fatalf("got %q %v %v; want %q %v %v", c.AuthorizationURL, c.AuthParams, c.ConsentScopes, tc.wantURL, tc.wantParams, tc.wantScopes)
			}
		})
	}
}

// TestRefreshPresetsSayWhereTheirConsentScopesComeFrom: a preset that
// gives consent scopes names its source.
func TestRefreshPresetsSayWhereTheirConsentScopesComeFrom(t *testing.T) {
	for _, p := range presets {
		if len(p.ConsentScopes) > 0 && !strings.HasPrefix(p.ConsentScopesSource, "https://") {
			t.Errorf("%s: consent scopes %v without a source", p.Name, p.ConsentScopes)
		}
	}
}
