package config

import (
	"errors"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// file wraps connection objects in a connections file.
func file(conns ...string) string {
	return `{"connections": [` + strings.Join(conns, ",") + `]}`
}

func mustParse(t *testing.T, data string) []broker.Connection {
	t.Helper()
	conns, err := ParseConnections([]byte(data))
	if err != nil {
		t.Fatalf("ParseConnections(%s): %v", data, err)
	}
	return conns
}

func problemsOf(t *testing.T, data string) []Problem {
	t.Helper()
	conns, err := ParseConnections([]byte(data))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("ParseConnections(%s) = %v, %v; want a *ValidationError", data, conns, err)
	}
	if conns != nil {
		t.Errorf("ParseConnections returned connections along with an error: %v", conns)
	}
	if len(ve.Problems) == 0 {
		t.Fatalf("ValidationError without problems")
	}
	if got, want := strings.Count(ve.Error(), "\n")+1, len(ve.Problems); got != want {
		t.Errorf("Error() has %d lines for %d problems:\n%s", got, want, ve.Error())
	}
	return ve.Problems
}

func TestExampleFile(t *testing.T) {
	data, err := os.ReadFile("../../../examples/every-kind.json")
	if err != nil {
		t.Fatal(err)
	}
	conns := mustParse(t, string(data))
	want := []broker.Connection{
		{
			Name: "xero", Provider: "xero", Grant: broker.GrantRefreshToken,
			TokenURL: "https://identity.xero.com/connect/token", AuthStyle: broker.AuthBasic,
			Secrets:  broker.DefaultSecretNames("xero"),
			Rotating: true, ReuseGrace: 30 * time.Minute,
			RefreshBefore: 5 * time.Minute, DefaultLifetime: 30 * time.Minute, IdleExpiry: 60 * day, KeepWarm: true,
			AllowedCallers: []string{"11111111-2222-3333-4444-555555555555"},
			ConsentScopes:  []string{"openid", "profile", "email", "accounting.invoices.read", "accounting.contacts.read", "accounting.settings.read"},
		},
		{
			Name: "graph", Provider: "microsoft", Grant: broker.GrantRefreshToken,
			TokenURL:  "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
			AuthStyle: broker.AuthBody,
			Scopes:    []string{"https://graph.microsoft.com/.default", "offline_access"},
			ClientID:  "00000000-0000-0000-0000-000000000001",
			Secrets:   broker.DefaultSecretNames("graph"),
			Rotating:  true, ReuseGrace: 24 * time.Hour,
			RefreshBefore: 5 * time.Minute, DefaultLifetime: time.Hour, IdleExpiry: 90 * day, KeepWarm: true,
		},
		{
			Name: "salesforce", Provider: "salesforce", Grant: broker.GrantRefreshToken,
			TokenURL:      "https://contoso.my.salesforce.com/services/oauth2/token",
			AuthStyle:     broker.AuthBody,
			Secrets:       broker.DefaultSecretNames("salesforce"),
			Rotating:      true,
			RefreshBefore: 5 * time.Minute, DefaultLifetime: 30 * time.Minute, IdleExpiry: 30 * day, KeepWarm: true,
			ConsentScopes: []string{"api", "refresh_token"},
		},
		{
			Name: "ilevel", Provider: "generic", Grant: broker.GrantClientCredentials,
			TokenURL: "https://identity.example.com/connect/token", AuthStyle: broker.AuthBody,
			Scopes: []string{"api"}, Params: map[string]string{"audience": "https://api.example.com"},
			Secrets: broker.SecretNames{
				ClientID: "ilevel-client-id", ClientSecret: "ilevel-shared-client-secret",
				RefreshToken: "ilevel-refresh-token", AccessToken: "ilevel-access-token",
			},
			RefreshBefore: 10 * time.Minute, DefaultLifetime: time.Hour,
			AllowedCallers: []string{"11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"},
		},
	}
	if !reflect.DeepEqual(conns, want) {
		t.Errorf("example file resolved to\n%#v\nwant\n%#v", conns, want)
	}
}

func TestEveryPresetResolves(t *testing.T) {
	for _, p := range Presets() {
		t.Run(p.Name, func(t *testing.T) {
			conn := `{"name": "c", "provider": "` + p.Name + `"`
			wantURL := p.TokenURL
			switch {
			case p.NeedsTenant:
				conn += `, "tenant": "contoso.onmicrosoft.com"`
				wantURL = strings.ReplaceAll(p.TokenURL, "{tenant}", "contoso.onmicrosoft.com")
			case p.TokenURL == "":
				conn += `, "tokenUrl": "https://id.example.com/token", "clientAuth": "basic"`
				wantURL = "https://id.example.com/token"
			}
			if p.SubjectHint != "" {
				conn += `, "assertionSubject": "user-1"`
			}
			conns := mustParse(t, file(conn+"}"))
			got := conns[0]
			want := broker.Connection{
				Name: "c", Provider: p.Name, Grant: p.Grant, TokenURL: wantURL, AuthStyle: p.AuthStyle,
				Scopes: p.Scopes, Secrets: broker.DefaultSecretNames("c"),
				Rotating: p.Rotating, ReuseGrace: p.ReuseGrace, RefreshBefore: p.RefreshBefore,
				DefaultLifetime: p.DefaultLifetime, IdleExpiry: p.IdleExpiry, KeepWarm: true,
				ConsentScopes: p.ConsentScopes,
			}
			if want.AuthStyle == "" {
				want.AuthStyle = broker.AuthBasic
			}
			if p.Grant == broker.GrantJWTBearer {
				// TestEveryPresetParses checks the assertion's fields.
				want.Assertion = got.Assertion
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("provider %q resolved to\n%#v\nwant\n%#v", p.Name, got, want)
			}
		})
	}
}

func TestResolution(t *testing.T) {
	tests := []struct {
		name  string
		conn  string
		check func(t *testing.T, c broker.Connection)
	}{{
		name: "generic defaults",
		conn: `{"name": "g", "tokenUrl": "https://id.example.com/token", "clientAuth": "body"}`,
		check: func(t *testing.T, c broker.Connection) {
			want := broker.Connection{
				Name: "g", Provider: "generic", Grant: broker.GrantRefreshToken,
				TokenURL: "https://id.example.com/token", AuthStyle: broker.AuthBody,
				Secrets:       broker.DefaultSecretNames("g"),
				RefreshBefore: 5 * time.Minute, DefaultLifetime: time.Hour, KeepWarm: true,
			}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("got %#v, want %#v", c, want)
			}
		},
	}, {
		name: "explicit fields override the preset",
		conn: `{"name": "x", "provider": "xero", "tokenUrl": "http://127.0.0.1:9999/token", "clientAuth": "body",
			"rotating": true, "reuseGrace": "5m", "refreshBefore": "0s", "defaultLifetime": "2h", "idleExpiry": "7d"}`,
		check: func(t *testing.T, c broker.Connection) {
			if c.TokenURL != "http://127.0.0.1:9999/token" || c.AuthStyle != broker.AuthBody ||
				c.ReuseGrace != 5*time.Minute || c.RefreshBefore != 0 || c.DefaultLifetime != 2*time.Hour ||
				c.IdleExpiry != 7*day {
				t.Errorf("overrides not applied: %#v", c)
			}
		},
	}, {
		name: "turning rotation off drops the preset's grace",
		conn: `{"name": "x", "provider": "xero", "rotating": false}`,
		check: func(t *testing.T, c broker.Connection) {
			if c.Rotating || c.ReuseGrace != 0 {
				t.Errorf("Rotating, ReuseGrace = %v, %v; want false, 0", c.Rotating, c.ReuseGrace)
			}
		},
	}, {
		name: "client credentials drop the preset's refresh-token behaviour",
		conn: `{"name": "m", "provider": "microsoft", "tenant": "organizations", "grant": "client_credentials"}`,
		check: func(t *testing.T, c broker.Connection) {
			if c.Grant != broker.GrantClientCredentials || c.Rotating || c.ReuseGrace != 0 || c.IdleExpiry != 0 {
				t.Errorf("got grant %q rotating %v grace %v idle %v; want client_credentials, false, 0, 0",
					c.Grant, c.Rotating, c.ReuseGrace, c.IdleExpiry)
			}
		},
	}, {
		name: "tenant as GUID, tokenUrl with placeholder",
		conn: `{"name": "m", "tokenUrl": "https://login.example.com/{tenant}/token", "clientAuth": "body",
			"tenant": "72F988BF-86F1-41AF-91AB-2D7CD011DB47"}`,
		check: func(t *testing.T, c broker.Connection) {
			if want := "https://login.example.com/72F988BF-86F1-41AF-91AB-2D7CD011DB47/token"; c.TokenURL != want {
				t.Errorf("TokenURL = %q, want %q", c.TokenURL, want)
			}
		},
	}, {
		name: "http on loopback is allowed for tests",
		conn: `{"name": "l", "tokenUrl": "http://localhost:8080/token", "clientAuth": "basic"}`,
		check: func(t *testing.T, c broker.Connection) {
			if c.TokenURL != "http://localhost:8080/token" {
				t.Errorf("TokenURL = %q", c.TokenURL)
			}
		},
	}, {
		name: "http on IPv6 loopback",
		conn: `{"name": "l", "tokenUrl": "http://[::1]:8080/token", "clientAuth": "basic"}`,
		check: func(t *testing.T, c broker.Connection) {
			if c.TokenURL != "http://[::1]:8080/token" {
				t.Errorf("TokenURL = %q", c.TokenURL)
			}
		},
	}, {
		name: "secret name overrides",
		conn: `{"name": "s", "provider": "google", "secrets": {"clientId": "shared-id", "clientSecret": "shared-secret",
			"refreshToken": "S-rt", "accessToken": "S-at"}}`,
		check: func(t *testing.T, c broker.Connection) {
			want := broker.SecretNames{ClientID: "shared-id", ClientSecret: "shared-secret", RefreshToken: "S-rt", AccessToken: "S-at"}
			if c.Secrets != want {
				t.Errorf("Secrets = %+v, want %+v", c.Secrets, want)
			}
		},
	}, {
		name: "allowed callers are lower-cased and deduplicated",
		conn: `{"name": "a", "provider": "xero", "allowedCallers": ["AAAAAAAA-0000-0000-0000-000000000001", "aaaaaaaa-0000-0000-0000-000000000001"]}`,
		check: func(t *testing.T, c broker.Connection) {
			if want := []string{"aaaaaaaa-0000-0000-0000-000000000001"}; !reflect.DeepEqual(c.AllowedCallers, want) {
				t.Errorf("AllowedCallers = %q, want %q", c.AllowedCallers, want)
			}
		},
	}, {
		name: "empty params and scopes are kept empty",
		conn: `{"name": "e", "provider": "xero", "scopes": [], "params": {}}`,
		check: func(t *testing.T, c broker.Connection) {
			if c.Scopes == nil || len(c.Scopes) != 0 || c.Params == nil || len(c.Params) != 0 {
				t.Errorf("Scopes, Params = %#v, %#v; want empty, non-nil", c.Scopes, c.Params)
			}
		},
	}, {
		name: "byte order mark and comments are accepted",
		conn: `{"$comment": "ours", "name": "b", "provider": "hubspot"}`,
		check: func(t *testing.T, c broker.Connection) {
			if c.TokenURL != "https://api.hubapi.com/oauth/2026-03/token" {
				t.Errorf("TokenURL = %q", c.TokenURL)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conns := mustParse(t, "\uFEFF"+file(tt.conn))
			if len(conns) != 1 {
				t.Fatalf("got %d connections, want 1", len(conns))
			}
			tt.check(t, conns[0])
		})
	}
}

// TestConnectionProblems checks that each rule yields exactly one problem,
// on the right field, saying what was found and what is allowed, and that
// the rendered line names the connection and the field.
func TestConnectionProblems(t *testing.T) {
	tests := []struct {
		name    string
		conn    string
		field   string
		want    []string // substrings of Message
		notWant string   // a value that must not be repeated
	}{
		{"name missing", `{"provider": "xero"}`, "name", []string{"missing", "a-z"}, ""},
		{"name not a string", `{"name": 5, "provider": "xero"}`, "name", []string{"found a number", "must be a string"}, ""},
		{"name upper case", `{"name": "Xero", "provider": "xero"}`, "name", []string{`found "Xero"`, "1-63 characters of a-z, 0-9 and -"}, ""},
		{"name starts with digit", `{"name": "1xero", "provider": "xero"}`, "name", []string{`found "1xero"`, "starting with a letter"}, ""},
		{"name too long", `{"name": "` + strings.Repeat("a", 64) + `", "provider": "xero"}`, "name", []string{"1-63 characters"}, ""},
		{"name with underscore", `{"name": "my_xero", "provider": "xero"}`, "name", []string{`found "my_xero"`}, ""},
		{"name a route segment", `{"name": "callback", "provider": "xero"}`, "name", []string{`found "callback"`, "reserved", "/api/consent/callback", "Choose another name"}, ""},

		{"unknown field near miss", `{"name": "c", "provider": "xero", "tokenURL": "https://x.example/t"}`, "tokenURL", []string{"unknown field", `did you mean "tokenUrl"?`}, ""},
		{"unknown field snake case", `{"name": "c", "provider": "xero", "client_auth": "body"}`, "client_auth", []string{`did you mean "clientAuth"?`}, ""},
		{"unknown field plural", `{"name": "c", "provider": "xero", "scope": "api"}`, "scope", []string{`did you mean "scopes"?`}, ""},
		{"unknown field far off", `{"name": "c", "provider": "xero", "colour": "blue"}`, "colour", []string{"unknown field", "allowed fields are name, provider"}, ""},
		{"secret value in the file", `{"name": "c", "provider": "xero", "client_secret": "s3cr3t-value"}`, "client_secret",
			[]string{"secret values never go in this file", `"c-client-secret"`, `"clientSecret"`}, "s3cr3t"},
		{"refresh token in the file", `{"name": "c", "provider": "xero", "refreshToken": "s3cr3t-rt"}`, "refreshToken",
			[]string{`"c-refresh-token"`}, "s3cr3t"},

		{"provider unknown", `{"name": "c", "provider": "xer0"}`, "provider", []string{`found "xer0"`, `did you mean "xero"?`, "google, google-service-account, hubspot"}, ""},
		{"provider alias", `{"name": "c", "provider": "entra", "tenant": "common"}`, "provider", []string{`did you mean "microsoft"?`}, ""},
		{"provider wrong case", `{"name": "c", "provider": "Xero"}`, "provider", []string{`did you mean "xero"?`}, ""},
		{"provider not a string", `{"name": "c", "provider": ["xero"]}`, "provider", []string{"found an array", "must be a string"}, ""},

		{"grant unknown", `{"name": "c", "provider": "xero", "grant": "refresh-token"}`, "grant", []string{`found "refresh-token"`, `did you mean "refresh_token"?`, `"client_credentials"`}, ""},
		{"grant unsupported", `{"name": "c", "provider": "xero", "grant": "password"}`, "grant", []string{`found "password"`, `must be "refresh_token", "client_credentials" or "jwt_bearer"`}, ""},

		{"clientAuth alias", `{"name": "c", "provider": "xero", "clientAuth": "header"}`, "clientAuth", []string{`found "header"`, `did you mean "basic"?`}, ""},
		{"clientAuth unknown", `{"name": "c", "provider": "xero", "clientAuth": "jwt"}`, "clientAuth", []string{`found "jwt"`, `"basic"`, `"body"`}, ""},
		{"clientAuth missing without provider", `{"name": "c", "tokenUrl": "https://x.example/t"}`, "clientAuth", []string{"missing", `"basic"`, `"body"`}, ""},

		{"tokenUrl missing without provider", `{"name": "c", "clientAuth": "body"}`, "tokenUrl", []string{"missing", "https", "xero"}, ""},
		{"tokenUrl empty", `{"name": "c", "tokenUrl": "", "clientAuth": "body"}`, "tokenUrl", []string{"is empty"}, ""},
		{"tokenUrl plain http", `{"name": "c", "tokenUrl": "http://id.example.com/token", "clientAuth": "body"}`, "tokenUrl",
			[]string{`found "http://id.example.com/token"`, "must be https", "127.0.0.0/8, ::1 and localhost"}, ""},
		{"tokenUrl relative", `{"name": "c", "tokenUrl": "/token", "clientAuth": "body"}`, "tokenUrl", []string{`found "/token"`, "absolute https URL"}, ""},
		{"tokenUrl other scheme", `{"name": "c", "tokenUrl": "ftp://id.example.com/token", "clientAuth": "body"}`, "tokenUrl", []string{"absolute https URL"}, ""},
		{"tokenUrl with credentials", `{"name": "c", "tokenUrl": "https://id:s3cr3t@id.example.com/token", "clientAuth": "body"}`, "tokenUrl",
			[]string{"user name or password", "secret store"}, "s3cr3t"},
		{"tokenUrl with fragment", `{"name": "c", "tokenUrl": "https://id.example.com/token#x", "clientAuth": "body"}`, "tokenUrl", []string{"#fragment"}, ""},
		{"tokenUrl not a string", `{"name": "c", "tokenUrl": 443, "clientAuth": "body"}`, "tokenUrl", []string{"found a number", "https URL"}, ""},

		{"tenant missing", `{"name": "c", "provider": "microsoft"}`, "tenant", []string{"missing", "{tenant}", "contoso.onmicrosoft.com", "organizations"}, ""},
		{"tenant invalid", `{"name": "c", "provider": "microsoft", "tenant": "contoso tenant"}`, "tenant", []string{`found "contoso tenant"`, "GUID"}, ""},
		{"tenant with slash", `{"name": "c", "provider": "microsoft", "tenant": "common/../x"}`, "tenant", []string{`found "common/../x"`}, ""},
		{"tenant not a string", `{"name": "c", "provider": "microsoft", "tenant": 1}`, "tenant", []string{"found a number"}, ""},
		{"reuseGrace without rotation echoes the value", `{"name": "c", "provider": "google", "reuseGrace": "90s"}`, "reuseGrace", []string{`found "90s"`}, ""},
		{"tenant without placeholder", `{"name": "c", "provider": "xero", "tenant": "common"}`, "tenant", []string{`found "common"`, "no {tenant} placeholder"}, ""},

		{"scopes not an array", `{"name": "c", "provider": "xero", "scopes": "api offline_access"}`, "scopes", []string{"found a string", "array of scope strings"}, ""},
		{"scope with a space", `{"name": "c", "provider": "xero", "scopes": ["api", "read write"]}`, "scopes[1]", []string{`found "read write"`, "without spaces"}, ""},
		{"scope empty", `{"name": "c", "provider": "xero", "scopes": [""]}`, "scopes[0]", []string{`found ""`, "non-empty"}, ""},
		{"scope not a string", `{"name": "c", "provider": "xero", "scopes": [1]}`, "scopes[0]", []string{"found a number"}, ""},

		{"params not an object", `{"name": "c", "provider": "xero", "params": ["audience"]}`, "params", []string{"found an array", "object of extra form fields"}, ""},
		{"params reserved field", `{"name": "c", "provider": "xero", "params": {"client_secret": "s3cr3t"}}`, "params.client_secret",
			[]string{"sent by the grant itself", "secret store"}, "s3cr3t"},
		{"params reserved any case", `{"name": "c", "provider": "xero", "params": {"Scope": "api"}}`, "params.Scope", []string{`"scopes"`}, ""},
		{"params value not a string", `{"name": "c", "provider": "xero", "params": {"audience": 1}}`, "params.audience", []string{"found a number", "must be a string"}, ""},
		{"params empty name", `{"name": "c", "provider": "xero", "params": {"": "x"}}`, "params.", []string{"non-empty"}, ""},

		{"clientId with a space", `{"name": "c", "provider": "xero", "clientId": "my client"}`, "clientId", []string{`found "my client"`, "without spaces"}, ""},
		{"clientId empty", `{"name": "c", "provider": "xero", "clientId": ""}`, "clientId", []string{`found ""`}, ""},

		{"secrets not an object", `{"name": "c", "provider": "xero", "secrets": "c-secret"}`, "secrets", []string{"found a string", "must be an object"}, ""},
		{"secrets unknown key", `{"name": "c", "provider": "xero", "secrets": {"client_secret": "n"}}`, "secrets.client_secret", []string{`did you mean "clientSecret"?`}, ""},
		{"secrets invalid name", `{"name": "c", "provider": "xero", "secrets": {"clientSecret": "s3cr3t/+value="}}`, "secrets.clientSecret",
			[]string{"not a secret name", "not shown", "1-127 characters of 0-9, a-z, A-Z and -"}, "s3cr3t"},
		{"secrets name not a string", `{"name": "c", "provider": "xero", "secrets": {"accessToken": 1}}`, "secrets.accessToken", []string{"found a number"}, ""},
		{"secrets clientId with literal clientId", `{"name": "c", "provider": "xero", "clientId": "abc", "secrets": {"clientId": "c-id"}}`, "secrets.clientId",
			[]string{"never read", `"clientId"`}, ""},
		{"secrets refreshToken for client credentials", `{"name": "c", "provider": "xero", "grant": "client_credentials", "secrets": {"refreshToken": "c-rt"}}`,
			"secrets.refreshToken", []string{"never used", `"client_credentials"`}, ""},
		{"secrets refresh and access token the same", `{"name": "c", "provider": "xero", "secrets": {"refreshToken": "c-token", "accessToken": "C-TOKEN"}}`,
			"secrets.refreshToken", []string{`"c-token"`, "this connection's accessToken"}, ""},

		{"rotating not a boolean", `{"name": "c", "provider": "xero", "rotating": "yes"}`, "rotating", []string{"found a string", "true or false"}, ""},
		{"rotating client credentials", `{"name": "c", "provider": "xero", "grant": "client_credentials", "rotating": true}`, "rotating",
			[]string{"found true", `"client_credentials"`, "no refresh token"}, ""},

		{"reuseGrace client credentials", `{"name": "c", "provider": "xero", "grant": "client_credentials", "reuseGrace": "1m"}`, "reuseGrace",
			[]string{`found "1m"`, "no refresh token"}, ""},
		{"reuseGrace without rotation", `{"name": "c", "provider": "google", "reuseGrace": "1m"}`, "reuseGrace", []string{`"rotating": true`}, ""},
		{"reuseGrace too long", `{"name": "c", "provider": "xero", "reuseGrace": "25h"}`, "reuseGrace", []string{`found "25h"`, "between 0s and 24h"}, ""},

		{"refreshBefore bad syntax", `{"name": "c", "provider": "xero", "refreshBefore": "5 minutes"}`, "refreshBefore",
			[]string{`found "5 minutes"`, `"10m"`, "between 0s and 24h"}, ""},
		{"refreshBefore number", `{"name": "c", "provider": "xero", "refreshBefore": 300}`, "refreshBefore", []string{"found a number", "a duration such as"}, ""},
		{"refreshBefore negative", `{"name": "c", "provider": "xero", "refreshBefore": "-1m"}`, "refreshBefore", []string{`found "-1m"`, "between 0s and 24h"}, ""},
		{"refreshBefore too long", `{"name": "c", "provider": "xero", "refreshBefore": "2d"}`, "refreshBefore", []string{`found "2d"`, "between 0s and 24h"}, ""},
		{"defaultLifetime too short", `{"name": "c", "provider": "xero", "defaultLifetime": "30s"}`, "defaultLifetime", []string{`found "30s"`, "between 1m and 24h"}, ""},
		{"defaultLifetime too long", `{"name": "c", "provider": "xero", "defaultLifetime": "25h"}`, "defaultLifetime", []string{"between 1m and 24h"}, ""},
		{"idleExpiry too long", `{"name": "c", "provider": "xero", "idleExpiry": "401d"}`, "idleExpiry", []string{`found "401d"`, "between 0s and 400d"}, ""},
		{"idleExpiry fractional days", `{"name": "c", "provider": "xero", "idleExpiry": "1.5d"}`, "idleExpiry", []string{`found "1.5d"`, `"60d"`}, ""},
		{"idleExpiry client credentials", `{"name": "c", "provider": "xero", "grant": "client_credentials", "idleExpiry": "60d"}`, "idleExpiry",
			[]string{`found "60d"`, "no refresh token"}, ""},

		{"allowedCallers not an array", `{"name": "c", "provider": "xero", "allowedCallers": "11111111-2222-3333-4444-555555555555"}`, "allowedCallers",
			[]string{"found a string", "array of object ids"}, ""},
		{"allowedCallers empty", `{"name": "c", "provider": "xero", "allowedCallers": []}`, "allowedCallers", []string{"empty array", "omit the field"}, ""},
		{"allowedCallers not a GUID", `{"name": "c", "provider": "xero", "allowedCallers": ["adf-prod"]}`, "allowedCallers[0]", []string{`found "adf-prod"`, "object id", "GUID"}, ""},
		{"allowedCallers number", `{"name": "c", "provider": "xero", "allowedCallers": [7]}`, "allowedCallers[0]", []string{"found a number"}, ""},

		{"comment not text", `{"name": "c", "provider": "xero", "$comment": 1}`, "$comment", []string{"found a number", "string or an array of strings"}, ""},
		{"connection not an object", `"xero"`, "", []string{"found a string", "must be a JSON object"}, ""},
		{"connection null", `null`, "", []string{"found null", "must be a JSON object"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := problemsOf(t, file(tt.conn))
			if len(problems) != 1 {
				t.Fatalf("got %d problems, want 1:\n%s", len(problems), (&ValidationError{problems}).Error())
			}
			p := problems[0]
			if p.Index != 0 || p.Field != tt.field {
				t.Errorf("problem at index %d field %q, want index 0 field %q: %s", p.Index, p.Field, tt.field, p)
			}
			for _, w := range tt.want {
				if !strings.Contains(p.Message, w) {
					t.Errorf("message %q does not contain %q", p.Message, w)
				}
			}
			line := p.String()
			if !strings.HasPrefix(line, "connections[0]") {
				t.Errorf("line %q does not start with the connection index", line)
			}
			if p.Connection != "" && !strings.Contains(line, `("`+p.Connection+`")`) {
				t.Errorf("line %q does not name connection %q", line, p.Connection)
			}
			if tt.field != "" && !strings.Contains(line, `field "`+tt.field+`"`) {
				t.Errorf("line %q does not name field %q", line, tt.field)
			}
			if tt.notWant != "" && strings.Contains(line, tt.notWant) {
				t.Errorf("line %q repeats the value %q", line, tt.notWant)
			}
		})
	}
}

func TestTenantAndURLProblemsTogether(t *testing.T) {
	problems := problemsOf(t, file(`{"name": "c", "tokenUrl": "http://login.example.com/{tenant}/token", "clientAuth": "body", "tenant": "not a tenant"}`))
	if len(problems) != 2 || problems[0].Field != "tenant" || problems[1].Field != "tokenUrl" ||
		!strings.Contains(problems[1].Message, "must be https") {
		t.Errorf("got %v; want a tenant problem and a tokenUrl problem", problems)
	}
}

func TestProblemNamesTheConnection(t *testing.T) {
	problems := problemsOf(t, file(`{"name": "ok", "provider": "xero"}`, `{"name": "ilevel", "provider": "xero", "rotating": 1}`))
	want := `connections[1] ("ilevel"), field "rotating": found a number; must be true or false (without quotes)`
	if len(problems) != 1 || problems[0].String() != want {
		t.Errorf("got %v, want one problem %q", problems, want)
	}
	if problems[0].Connection != "ilevel" || problems[0].Index != 1 {
		t.Errorf("Connection, Index = %q, %d; want ilevel, 1", problems[0].Connection, problems[0].Index)
	}
}

func TestFileProblems(t *testing.T) {
	valid := `{"name": "xero", "provider": "xero"}`
	tests := []struct {
		name  string
		data  string
		field string
		want  []string
	}{
		{"empty", "", "", []string{"is empty", `{"connections": [`}},
		{"blank", " \n\t", "", []string{"is empty"}},
		{"array", "[" + valid + "]", "", []string{"found an array", "expected a JSON object"}},
		{"null", "null", "", []string{"found null"}},
		{"string", `"connections"`, "", []string{"found a string"}},
		{"no connections", `{}`, "connections", []string{"missing", "array of connections"}},
		{"connections not an array", `{"connections": ` + valid + `}`, "connections", []string{"found an object", "array of connection objects"}},
		{"connections null", `{"connections": null}`, "connections", []string{"found null"}},
		{"no connection", `{"connections": []}`, "connections", []string{"empty array", "at least one connection"}},
		{"unknown top-level field", `{"connections": [` + valid + `], "conections": []}`, "conections", []string{`did you mean "connections"?`}},
		{"unknown top-level field far off", `{"connections": [` + valid + `], "version": 2}`, "version", []string{"allowed fields are connections, $comment"}},
		{"bad comment", `{"$comment": {}, "connections": [` + valid + `]}`, "$comment", []string{"found an object"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := problemsOf(t, tt.data)
			if len(problems) != 1 {
				t.Fatalf("got %d problems, want 1: %v", len(problems), problems)
			}
			p := problems[0]
			if p.Index != -1 || p.Field != tt.field || p.Connection != "" {
				t.Errorf("problem %+v; want index -1, field %q, no connection", p, tt.field)
			}
			for _, w := range tt.want {
				if !strings.Contains(p.Message, w) {
					t.Errorf("message %q does not contain %q", p.Message, w)
				}
			}
			if !strings.HasPrefix(p.String(), "connections file") {
				t.Errorf("line %q does not say it is about the file", p.String())
			}
		})
	}
}

func TestSyntaxErrorPosition(t *testing.T) {
	tests := []struct {
		name       string
		data       string
		line, col  int
		wantInLine string
	}{
		{"missing value", "{\n  \"connections\": [\n    {\"name\": }\n  ]\n}", 3, 14, "invalid character '}'"},
		{"trailing comma", "{\"connections\": [{\"name\": \"x\", \"provider\": \"xero\"},]}", 1, 52, "invalid character ']'"},
		{"truncated", "{\"connections\": [", 1, 17, "unexpected end of JSON input"},
		{"trailing data", "{\"connections\": []} x", 1, 21, "after top-level value"},
		{"after a BOM", "\uFEFF{\n,}", 2, 1, "invalid character ','"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := problemsOf(t, tt.data)
			if len(problems) != 1 {
				t.Fatalf("got %d problems, want 1: %v", len(problems), problems)
			}
			p := problems[0]
			if p.Line != tt.line || p.Column != tt.col {
				t.Errorf("position %d:%d, want %d:%d (%s)", p.Line, p.Column, tt.line, tt.col, p)
			}
			line := p.String()
			if !strings.Contains(line, "not valid JSON") || !strings.Contains(line, tt.wantInLine) ||
				!strings.Contains(line, "line "+strconv.Itoa(tt.line)+", column "+strconv.Itoa(tt.col)) {
				t.Errorf("line %q lacks the position or the cause %q", line, tt.wantInLine)
			}
		})
	}
}

func TestSeveralProblemsAreAllReported(t *testing.T) {
	data := `{
	  "connections": [
	    {"name": "Xero", "provider": "xero", "tokenURL": "https://x.example/t"},
	    {"name": "ilevel", "grant": "client_credentials", "tokenUrl": "http://id.example.com/token",
	     "clientAuth": "post", "refreshBefore": "10 minutes", "allowedCallers": ["adf"]},
	    {"name": "ilevel", "provider": "google"},
	    {"name": "graph", "provider": "microsoft"}
	  ],
	  "extra": true
	}`
	problems := problemsOf(t, data)
	type at struct {
		index int
		field string
	}
	var got []at
	for _, p := range problems {
		got = append(got, at{p.Index, p.Field})
	}
	want := []at{
		{-1, "extra"},
		{0, "name"},
		{0, "tokenURL"},
		{1, "tokenUrl"},
		{1, "clientAuth"},
		{1, "refreshBefore"},
		{1, "allowedCallers[0]"},
		{2, "name"},
		{3, "tenant"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems at %v\nwant %v\nfull error:\n%s", got, want, (&ValidationError{problems}).Error())
	}
	if p := problems[len(problems)-2]; !strings.Contains(p.Message, "connections[1] already uses") {
		t.Errorf("duplicate name message %q does not point at the first use", p.Message)
	}
}

func TestSecretNameCollisions(t *testing.T) {
	tests := []struct {
		name  string
		conns []string
		want  []string // "index field" of each expected problem
	}{{
		name: "shared client secret is fine",
		conns: []string{
			`{"name": "a", "provider": "xero", "secrets": {"clientId": "app-id", "clientSecret": "app-secret"}}`,
			`{"name": "b", "provider": "xero", "secrets": {"clientId": "app-id", "clientSecret": "app-secret"}}`,
		},
	}, {
		name: "shared refresh token, case-insensitive",
		conns: []string{
			`{"name": "a", "provider": "xero", "secrets": {"refreshToken": "shared-rt"}}`,
			`{"name": "b", "provider": "xero", "secrets": {"refreshToken": "Shared-RT"}}`,
		},
		want: []string{"0 secrets.refreshToken", "1 secrets.refreshToken"},
	}, {
		name: "access token named like another connection's default",
		conns: []string{
			`{"name": "a", "provider": "xero"}`,
			`{"name": "b", "provider": "xero", "secrets": {"accessToken": "a-access-token"}}`,
		},
		want: []string{"0 secrets.accessToken", "1 secrets.accessToken"},
	}, {
		name: "access token over a client secret",
		conns: []string{
			`{"name": "a", "provider": "xero"}`,
			`{"name": "b", "provider": "xero", "secrets": {"accessToken": "a-client-secret"}}`,
		},
		want: []string{"1 secrets.accessToken"},
	}, {
		name: "client credentials do not use their refresh token name",
		conns: []string{
			`{"name": "a", "provider": "xero", "secrets": {"refreshToken": "b-refresh-token"}}`,
			`{"name": "b", "provider": "xero", "grant": "client_credentials"}`,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := file(tt.conns...)
			if tt.want == nil {
				mustParse(t, data)
				return
			}
			problems := problemsOf(t, data)
			var got []string
			for _, p := range problems {
				got = append(got, strconv.Itoa(p.Index)+" "+p.Field)
				if !strings.Contains(p.Message, "needs a secret of its own") {
					t.Errorf("message %q does not say why", p.Message)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("problems at %q, want %q:\n%s", got, tt.want, (&ValidationError{problems}).Error())
			}
		})
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"90s", 90 * time.Second, true},
		{"1h30m", 90 * time.Minute, true},
		{"60d", 60 * day, true},
		{"0d", 0, true},
		{"1.5d", 0, false},
		{"d", 0, false},
		{"-1d", 0, false},
		{"10", 0, false},
	}
	for _, tt := range tests {
		got, err := parseDuration(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("parseDuration(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := map[time.Duration]string{
		0:                               "0s",
		45 * time.Second:                "45s",
		time.Minute:                     "1m",
		10 * time.Minute:                "10m",
		30 * time.Minute:                "30m",
		90 * time.Minute:                "1h30m",
		3*time.Hour + 20*time.Minute:    "3h20m",
		time.Hour + 30*time.Second:      "1h0m30s",
		10*time.Minute + 30*time.Second: "10m30s",
		1500 * time.Millisecond:         "1.5s",
		24 * time.Hour:                  "24h",
		36 * time.Hour:                  "36h",
		48 * time.Hour:                  "2d",
		2*day + time.Hour:               "49h",
		400 * day:                       "400d",
	}
	for d, want := range tests {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestSuggest(t *testing.T) {
	fields := connectionFields
	tests := []struct{ in, want string }{
		{"tokenURL", "tokenUrl"},
		{"token_url", "tokenUrl"},
		{"client_auth", "clientAuth"},
		{"clientID", "clientId"},
		{"scope", "scopes"},
		{"refresh_befor", "refreshBefore"},
		{"allowed-callers", "allowedCallers"},
		{"nam", "name"},
		{"id", ""},
		{"x", ""},
		{"colour", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := suggest(tt.in, fields); got != tt.want {
			t.Errorf("suggest(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
