package consent_test

import (
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
)

// parseOne reads one connection the way the handler does, from its JSON in
// a connections file.
func parseOne(t *testing.T, conn string) broker.Connection {
	t.Helper()
	conns, err := config.ParseConnections([]byte(`{"connections":[` + conn + `]}`))
	if err != nil {
		t.Fatalf("%s: %v", conn, err)
	}
	return conns[0]
}

func TestAuthorizationURL(t *testing.T) {
	tests := []struct {
		name, conn string
		want       string
		wantErr    error
	}{
		{"preset", `{"name":"x","provider":"xero"}`,
			"https://login.xero.com/identity/connect/authorize", nil},
		{"tenant in the path", `{"name":"m","provider":"microsoft","tenant":"contoso.onmicrosoft.com"}`,
			"https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize", nil},
		{"tenant in the host", `{"name":"e","provider":"exact-online","tenant":"nl"}`,
			"https://start.exactonline.nl/api/oauth2/auth", nil},
		{"token endpoint moved to My Domain", `{"name":"s","provider":"salesforce","tokenUrl":"https://acme.my.salesforce.com/services/oauth2/token"}`,
			"https://acme.my.salesforce.com/services/oauth2/authorize", nil},
		{"self-managed GitLab", `{"name":"g","provider":"gitlab","tokenUrl":"https://git.example.com/oauth/token"}`,
			"https://git.example.com/oauth/authorize", nil},
		{"regional token endpoint, global consent", `{"name":"a","provider":"amazon","tokenUrl":"https://api.amazon.co.uk/auth/o2/token"}`,
			"https://www.amazon.com/ap/oa", nil},
		{"generic has none", `{"name":"g","tokenUrl":"https://id.example.com/token","clientAuth":"body"}`,
			"", consent.ErrNoAuthorizationURL},
		{"tenant in a token URL of another shape", `{"name":"m","provider":"microsoft","tenant":"common","tokenUrl":"https://login.chinacloudapi.cn/{tenant}/oauth2/v2.0/token"}`,
			"", consent.ErrTenantUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := parseOne(t, tt.conn)
			got, err := consent.AuthorizationURL(c)
			if tt.wantErr != nil {
				var ee *consent.EndpointError
				if !errors.Is(err, tt.wantErr) || !errors.As(err, &ee) || ee.Connection != c.Name || ee.Provider != c.Provider {
					t.Fatalf("err = %v; want an *EndpointError for %q wrapping %v", err, c.Name, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestEveryPresetAuthorizationURLResolves(t *testing.T) {
	for _, p := range config.Presets() {
		if p.AuthorizationURL == "" {
			continue
		}
		c := broker.Connection{Name: "c", Provider: p.Name, TokenURL: strings.ReplaceAll(p.TokenURL, "{tenant}", "acme")}
		got, err := consent.AuthorizationURL(c)
		if err != nil || !strings.HasPrefix(got, "https://") || strings.Contains(got, "{") {
			t.Errorf("%s: got %q, %v", p.Name, got, err)
		}
	}
}

func TestScopes(t *testing.T) {
	tests := []struct {
		name    string
		conn    broker.Connection
		extra   []string
		want    []string
		wantErr bool
	}{
		{"the connection's", broker.Connection{Provider: "generic", Scopes: []string{"a", "b"}}, nil, []string{"a", "b"}, false},
		{"offline_access added", broker.Connection{Provider: "xero"}, nil, []string{"offline_access"}, false},
		{"offline_access once", broker.Connection{Provider: "microsoft", Scopes: []string{"offline_access", "User.Read"}}, nil, []string{"offline_access", "User.Read"}, false},
		{"extra split and deduplicated", broker.Connection{Provider: "xero", Scopes: []string{"openid"}}, []string{"accounting.transactions openid", "offline_access"},
			[]string{"openid", "offline_access", "accounting.transactions"}, false},
		{"google asks by parameter, not scope", broker.Connection{Provider: "google"}, []string{"https://www.googleapis.com/auth/drive"}, []string{"https://www.googleapis.com/auth/drive"}, false},
		{"a quote is not a scope", broker.Connection{Provider: "generic"}, []string{`a"b`}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := consent.Scopes(tt.conn, tt.extra...)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %q, want an error", got)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// mentions reports whether s has param as a whole word: access_type=offline
// is not in token_access_type=offline.
func mentions(s, param string) bool {
	return regexp.MustCompile(`(^|[^A-Za-z_])` + regexp.QuoteMeta(param) + `($|[^A-Za-z0-9_.])`).MatchString(s)
}

// What a provider needs at consent is written in its preset's Notes; the
// table in this package must say the same.
func TestOfflineAccessFollowsPresetNotes(t *testing.T) {
	for _, p := range config.Presets() {
		if p.AuthorizationURL == "" {
			continue
		}
		flow := consent.Flow{
			Connection:       broker.Connection{Name: "c", Provider: p.Name, TokenURL: "https://example.com/token", AuthStyle: broker.AuthBody},
			AuthorizationURL: "https://example.com/authorize",
			ClientID:         "id",
		}
		scopes, err := consent.Scopes(flow.Connection)
		if err != nil {
			t.Fatal(err)
		}
		flow.Scopes = scopes
		u, err := flow.AuthCodeURL("state", consent.NewVerifier())
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(p.Notes, "offline_access") != slices.Contains(scopes, "offline_access") {
			t.Errorf("%s: Notes mention offline_access: %v; scopes asked for: %q", p.Name, strings.Contains(p.Notes, "offline_access"), scopes)
		}
		for _, param := range []string{"token_access_type=offline", "access_type=offline", "filter=apiv3.1"} {
			inNotes, inURL := mentions(p.Notes, param), mentions(u, param)
			if inNotes != inURL {
				t.Errorf("%s: Notes mention %s: %v; the authorization URL is %s", p.Name, param, inNotes, u)
			}
		}
	}
}
