package config

import (
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// minNonGenericPresets is the number of providers issue 7 asks presets
// for.
const minNonGenericPresets = 20

// TestPresetFacts pins the documented provider facts, so a change to one is
// a deliberate edit of this table too.
func TestPresetFacts(t *testing.T) {
	const (
		basic = broker.AuthBasic
		body  = broker.AuthBody
		m     = time.Minute
		h     = time.Hour
	)
	tests := []struct {
		name            string
		tokenURL        string
		auth            broker.AuthStyle
		rotating        bool
		reuseGrace      time.Duration
		defaultLifetime time.Duration
		refreshBefore   time.Duration
		idleExpiry      time.Duration
	}{
		{"amazon", "https://api.amazon.com/auth/o2/token", body, true, 0, h, 5 * m, 0},
		{"atlassian", "https://auth.atlassian.com/oauth/token", body, true, 10 * m, h, 5 * m, 90 * day},
		{"box", "https://api.box.com/oauth2/token", body, true, 0, h, 5 * m, 60 * day},
		{"docusign", "https://account.docusign.com/oauth/token", basic, true, 0, h, 5 * m, 30 * day},
		{"docusign-demo", "https://account-d.docusign.com/oauth/token", basic, true, 0, h, 5 * m, 30 * day},
		{"dropbox", "https://api.dropboxapi.com/oauth2/token", basic, false, 0, 4 * h, 5 * m, 0},
		{"exact-online", "https://start.exactonline.{tenant}/api/oauth2/token", body, true, 0, 10 * m, 30 * time.Second, 30 * day},
		{"generic", "", "", false, 0, h, 5 * m, 0},
		{"gitlab", "https://gitlab.com/oauth/token", body, true, 0, 2 * h, 5 * m, 0},
		{"google", "https://oauth2.googleapis.com/token", body, false, 0, h, 5 * m, 180 * day},
		{"hubspot", "https://api.hubapi.com/oauth/2026-03/token", body, false, 0, 30 * m, 5 * m, 0},
		{"linkedin", "https://www.linkedin.com/oauth/v2/accessToken", body, false, 0, 24 * h, 5 * m, 0},
		{"microsoft", "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token", body, true, 24 * h, h, 5 * m, 90 * day},
		{"netsuite", "https://{tenant}.suitetalk.api.netsuite.com/services/rest/auth/oauth2/v1/token", basic, false, 0, h, 5 * m, 0},
		{"pipedrive", "https://oauth.pipedrive.com/oauth/token", basic, true, 0, h, 5 * m, 0},
		{"quickbooks", "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer", basic, true, 0, h, 5 * m, 100 * day},
		{"sage-accounting", "https://oauth.accounting.sage.com/token", body, true, 0, 5 * m, m, 31 * day},
		{"salesforce", "https://login.salesforce.com/services/oauth2/token", body, true, 0, h, 5 * m, 30 * day},
		{"salesforce-sandbox", "https://test.salesforce.com/services/oauth2/token", body, true, 0, h, 5 * m, 30 * day},
		{"servicenow", "https://{tenant}.service-now.com/oauth_token.do", body, true, 0, 30 * m, 5 * m, 0},
		{"xero", "https://identity.xero.com/connect/token", basic, true, 30 * m, 30 * m, 5 * m, 60 * day},
		{"zendesk", "https://{tenant}.zendesk.com/oauth/tokens", body, true, 0, h, 5 * m, 0},
		{"zoho", "https://{tenant}/oauth/v2/token", body, false, 0, h, 5 * m, 0},
		{"docusign-jwt", "https://account.docusign.com/oauth/token", broker.AuthNone, false, 0, h, 5 * m, 0},
		{"google-service-account", "https://oauth2.googleapis.com/token", broker.AuthNone, false, 0, h, 5 * m, 0},
		{"salesforce-jwt", "https://login.salesforce.com/services/oauth2/token", broker.AuthNone, false, 0, h, 5 * m, 0},
	}
	jwtBearer := []string{"docusign-jwt", "google-service-account", "salesforce-jwt"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := LookupPreset(tt.name)
			if !ok {
				t.Fatalf("LookupPreset(%q) found nothing", tt.name)
			}
			if p.Name != tt.name || p.TokenURL != tt.tokenURL || p.AuthStyle != tt.auth || p.Rotating != tt.rotating ||
				p.ReuseGrace != tt.reuseGrace || p.DefaultLifetime != tt.defaultLifetime ||
				p.RefreshBefore != tt.refreshBefore || p.IdleExpiry != tt.idleExpiry ||
				p.NeedsTenant != strings.Contains(tt.tokenURL, "{tenant}") ||
				(p.Grant == broker.GrantJWTBearer) != slices.Contains(jwtBearer, tt.name) {
				t.Errorf("preset %q = %+v", tt.name, p)
			}
		})
	}
	if got, want := len(Presets()), len(tests); got != want {
		t.Errorf("%d presets, %d checked here: add the new one to this table", got, want)
	}
}

// TestPresetInvariants checks what every preset must satisfy, so a new one
// cannot be added half-done.
func TestPresetInvariants(t *testing.T) {
	all := Presets()
	if !slices.IsSortedFunc(all, func(a, b Preset) int { return strings.Compare(a.Name, b.Name) }) {
		t.Errorf("Presets() is not sorted by name")
	}
	if n := len(all) - 1; n < minNonGenericPresets {
		t.Errorf("%d presets besides generic, want at least %d", n, minNonGenericPresets)
	}
	for i, p := range all {
		if i > 0 && all[i-1].Name == p.Name {
			t.Errorf("preset %q listed twice", p.Name)
		}
		if !broker.ValidConnectionName(p.Name) {
			t.Errorf("preset name %q is not lower-case a-z, 0-9 and -", p.Name)
		}
		for field, text := range map[string]string{"Title": p.Title, "Summary": p.Summary, "Notes": p.Notes} {
			if text == "" {
				t.Errorf("preset %q has no %s", p.Name, field)
			}
		}
		if strings.ContainsAny(p.Summary+p.Title, "|\n") {
			t.Errorf("preset %q: Title and Summary must fit a Markdown table cell: %q, %q", p.Name, p.Title, p.Summary)
		}
		if u, err := url.Parse(p.Source); err != nil || u.Scheme != "https" || u.Host == "" {
			t.Errorf("preset %q source %q is not an https URL", p.Name, p.Source)
		}
		if p.Name == genericPreset {
			if p.TokenURL != "" || p.AuthorizationURL != "" || p.AuthStyle != "" || p.Rotating || p.NeedsTenant {
				t.Errorf("generic preset must leave the endpoint to the connection: %+v", p)
			}
		} else {
			urls := []string{p.TokenURL}
			if p.Grant == broker.GrantRefreshToken {
				// Someone has to consent before there is a refresh token.
				urls = append(urls, p.AuthorizationURL)
			}
			for _, u := range urls {
				if msg := checkTokenURL(strings.ReplaceAll(u, tenantPlaceholder, "common")); msg != "" || !strings.HasPrefix(u, "https://") {
					t.Errorf("preset %q URL %q is not https: %s", p.Name, u, msg)
				}
			}
			if _, ok := clientAuthStyle(string(p.AuthStyle)); !ok {
				t.Errorf("preset %q has no valid AuthStyle: %q", p.Name, p.AuthStyle)
			}
		}
		if p.Grant != broker.GrantRefreshToken && p.Grant != broker.GrantClientCredentials && p.Grant != broker.GrantJWTBearer {
			t.Errorf("preset %q has grant %q", p.Name, p.Grant)
		}
		if p.NeedsTenant != strings.Contains(p.TokenURL, tenantPlaceholder) {
			t.Errorf("preset %q: NeedsTenant = %v but TokenURL is %q", p.Name, p.NeedsTenant, p.TokenURL)
		}
		if p.NeedsTenant != (p.TenantHint != "") {
			t.Errorf("preset %q: NeedsTenant = %v but TenantHint is %q", p.Name, p.NeedsTenant, p.TenantHint)
		}
		if strings.Contains(p.AuthorizationURL, tenantPlaceholder) && !p.NeedsTenant {
			t.Errorf("preset %q: AuthorizationURL %q has a placeholder no connection fills", p.Name, p.AuthorizationURL)
		}
		if p.ReuseGrace > 0 && !p.Rotating {
			t.Errorf("preset %q has a reuse grace without rotation", p.Name)
		}
		if p.Grant != broker.GrantRefreshToken && (p.Rotating || p.IdleExpiry != 0) {
			t.Errorf("preset %q: grant %q has no refresh token to rotate or keep alive", p.Name, p.Grant)
		}
		// The broker caps refreshBefore at half the lifetime anyway; a
		// preset asking for more would say something it does not do.
		if p.RefreshBefore >= p.DefaultLifetime/2 {
			t.Errorf("preset %q refreshes %v before a %v lifetime ends: not below half of it", p.Name, p.RefreshBefore, p.DefaultLifetime)
		}
		if p.IdleExpiry != 0 && p.IdleExpiry < 2*day {
			t.Errorf("preset %q: idle expiry %v leaves the daily sweep no room", p.Name, p.IdleExpiry)
		}
		if p.DefaultLifetime < minDefaultLifetime || p.DefaultLifetime > maxDefaultLifetime ||
			p.RefreshBefore <= 0 || p.RefreshBefore > maxRefreshBefore ||
			p.ReuseGrace < 0 || p.ReuseGrace > maxReuseGrace ||
			p.IdleExpiry < 0 || p.IdleExpiry > maxIdleExpiry {
			t.Errorf("preset %q has a duration outside what a connection may set: %+v", p.Name, p)
		}
		if p.Scopes != nil {
			t.Errorf("preset %q sends scopes %q on every refresh; built-in presets keep the consented ones", p.Name, p.Scopes)
		}
	}
}

// exampleTenants are tenants as an operator would write them, one per
// preset whose token URL needs one.
var exampleTenants = map[string]struct{ tenant, tokenURL string }{
	"exact-online": {"nl", "https://start.exactonline.nl/api/oauth2/token"},
	"microsoft":    {"contoso.onmicrosoft.com", "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"},
	"netsuite":     {"1234567-sb1", "https://1234567-sb1.suitetalk.api.netsuite.com/services/rest/auth/oauth2/v1/token"},
	"servicenow":   {"dev12345", "https://dev12345.service-now.com/oauth_token.do"},
	"zendesk":      {"mycompany", "https://mycompany.zendesk.com/oauth/tokens"},
	"zoho":         {"accounts.zoho.eu", "https://accounts.zoho.eu/oauth/v2/token"},
}

// TestEveryPresetParses names each preset in a connection with as few
// fields as it allows, and checks the connection is what the preset says.
func TestEveryPresetParses(t *testing.T) {
	for _, p := range Presets() {
		t.Run(p.Name, func(t *testing.T) {
			conn := `{"name": "c", "provider": "` + p.Name + `"`
			want := broker.Connection{
				Name: "c", Provider: p.Name, Grant: p.Grant, TokenURL: p.TokenURL, AuthStyle: p.AuthStyle,
				Secrets:  broker.DefaultSecretNames("c"),
				Rotating: p.Rotating, ReuseGrace: p.ReuseGrace, RefreshBefore: p.RefreshBefore,
				DefaultLifetime: p.DefaultLifetime, IdleExpiry: p.IdleExpiry, KeepWarm: true,
				ConsentScopes: p.ConsentScopes,
			}
			switch {
			case p.NeedsTenant:
				ex, ok := exampleTenants[p.Name]
				if !ok {
					t.Fatalf("no example tenant for %q: add one to exampleTenants", p.Name)
				}
				conn += `, "tenant": "` + ex.tenant + `"`
				want.TokenURL = ex.tokenURL
			case p.Name == genericPreset:
				conn += `, "tokenUrl": "https://id.example.com/token", "clientAuth": "body"`
				want.TokenURL, want.AuthStyle = "https://id.example.com/token", broker.AuthBody
			case p.Grant == broker.GrantJWTBearer:
				want.Assertion = broker.Assertion{Key: "c-signing-key", Audience: p.AssertionAudience, ScopeClaim: p.ScopeClaim}
				if p.AudienceIsTokenHost {
					want.Assertion.Audience = strings.TrimSuffix(strings.TrimPrefix(p.TokenURL, "https://"), "/oauth/token")
				}
				if p.SubjectHint != "" {
					conn += `, "assertionSubject": "user-1"`
					want.Assertion.Subject = "user-1"
				}
			}
			got := mustParse(t, file(conn+"}"))
			if !reflect.DeepEqual(got, []broker.Connection{want}) {
				t.Errorf("provider %q resolved to\n%#v\nwant\n%#v", p.Name, got, want)
			}
		})
	}
	for name := range exampleTenants {
		if p, ok := LookupPreset(name); !ok || !p.NeedsTenant {
			t.Errorf("exampleTenants has %q, which is not a preset that needs a tenant", name)
		}
	}
}

// TestTenantForms checks that a tenant is held to what its place in the
// token URL allows: DNS labels in a host, Entra's forms in a path.
func TestTenantForms(t *testing.T) {
	netsuite, _ := LookupPreset("netsuite")
	tests := []struct {
		name string
		conn string
		// wantURL is the resolved token URL; empty when the tenant must be
		// refused with a message containing every one of wantMessage.
		wantURL     string
		wantMessage []string
	}{
		{"account id", `"provider": "netsuite", "tenant": "1234567"`,
			"https://1234567.suitetalk.api.netsuite.com/services/rest/auth/oauth2/v1/token", nil},
		{"account id as NetSuite writes it", `"provider": "netsuite", "tenant": "1234567_SB1"`,
			"", []string{`found "1234567_SB1"`, netsuite.TenantHint}},
		{"missing, with the preset's description", `"provider": "netsuite"`,
			"", []string{"missing", "{tenant}.suitetalk.api.netsuite.com", netsuite.TenantHint}},
		{"a path to elsewhere", `"provider": "zendesk", "tenant": "evil.example/x"`, "", []string{`found "evil.example/x"`}},
		{"a user name", `"provider": "zendesk", "tenant": "me@evil.example"`, "", []string{`found "me@evil.example"`}},
		{"a port", `"provider": "servicenow", "tenant": "dev1:8443"`, "", []string{`found "dev1:8443"`}},
		{"empty", `"provider": "zendesk", "tenant": ""`, "", []string{`found ""`}},
		{"a leading hyphen", `"provider": "zendesk", "tenant": "-acme"`, "", []string{`found "-acme"`}},
		{"a trailing dot", `"provider": "zoho", "tenant": "accounts.zoho.eu."`, "", []string{`found "accounts.zoho.eu."`}},
		{"a label too long", `"provider": "zendesk", "tenant": "` + strings.Repeat("a", 64) + `"`, "", []string{"found"}},
		{"two-label country domain", `"provider": "exact-online", "tenant": "co.uk"`,
			"https://start.exactonline.co.uk/api/oauth2/token", nil},
		{"upper case", `"provider": "zendesk", "tenant": "MyCompany"`, "https://MyCompany.zendesk.com/oauth/tokens", nil},
		{"Entra still refuses a bare name", `"provider": "microsoft", "tenant": "contoso"`, "", []string{`found "contoso"`, "GUID"}},
		{"own URL, host placeholder", `"tokenUrl": "https://{tenant}.example.com/token", "clientAuth": "basic", "tenant": "acme"`,
			"https://acme.example.com/token", nil},
		{"own URL, host placeholder, bad tenant", `"tokenUrl": "https://{tenant}.example.com/token", "clientAuth": "basic", "tenant": "a/b"`,
			"", []string{`found "a/b"`, "host name"}},
		{"own URL overrides the preset's description", `"provider": "netsuite", "tokenUrl": "https://login.example.com/{tenant}/token", "tenant": "x y"`,
			"", []string{`found "x y"`, "GUID"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := file(`{"name": "c", ` + tt.conn + `}`)
			if tt.wantURL != "" {
				if got := mustParse(t, data)[0].TokenURL; got != tt.wantURL {
					t.Errorf("tokenUrl = %q, want %q", got, tt.wantURL)
				}
				return
			}
			problems := problemsOf(t, data)
			if len(problems) != 1 || problems[0].Field != "tenant" {
				t.Fatalf("got %v; want one problem with tenant", problems)
			}
			for _, w := range tt.wantMessage {
				if !strings.Contains(problems[0].Message, w) {
					t.Errorf("message %q does not contain %q", problems[0].Message, w)
				}
			}
		})
	}
}

func TestProviderAliases(t *testing.T) {
	for alias, target := range providerAliases {
		if _, ok := LookupPreset(target); !ok {
			t.Errorf("alias %q points at %q, which is not a preset", alias, target)
		}
		if foldName(alias) != alias {
			t.Errorf("alias %q is looked up folded, as %q", alias, foldName(alias))
		}
		if _, ok := LookupPreset(alias); ok {
			t.Errorf("alias %q is a preset name itself", alias)
		}
	}
	problems := problemsOf(t, file(`{"name": "c", "provider": "Jira"}`))
	if len(problems) != 1 || !strings.Contains(problems[0].Message, `did you mean "atlassian"?`) {
		t.Errorf("provider Jira: got %v, want a hint at atlassian", problems)
	}
}

func TestLookupPreset(t *testing.T) {
	for _, p := range Presets() {
		got, ok := LookupPreset(p.Name)
		if !ok || !reflect.DeepEqual(got, p) {
			t.Errorf("LookupPreset(%q) = %+v, %v", p.Name, got, ok)
		}
	}
	for _, name := range []string{"", "Xero", "xero ", "entra", "zzz", "exactonline"} {
		if got, ok := LookupPreset(name); ok {
			t.Errorf("LookupPreset(%q) = %+v, want not found", name, got)
		}
	}
}

func TestPresetsAreCopies(t *testing.T) {
	all := Presets()
	all[0].Name = "changed"
	all[0].TokenURL = "https://changed.example/"
	if again := Presets(); again[0].Name == "changed" || again[0].TokenURL == "https://changed.example/" {
		t.Errorf("changing the result of Presets changed the presets")
	}
	p := Preset{Name: "p", Scopes: []string{"a"}}
	c := p.clone()
	c.Scopes[0] = "b"
	if p.Scopes[0] != "a" {
		t.Errorf("clone shares Scopes with the original")
	}
}
