package functions_test

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
)

// apiKey is standalone mode's key in these tests: long and distinctive,
// so that finding it in a log or a body cannot be a coincidence.
const apiKey = "ak-2QmY7pLw9XcT4vRb8NzK3sHd6JfG1eUa5"

// TestAPIKey: with an API key configured (standalone mode), every route but
// the readiness probe and the consent callback answers a JSON 401 unless
// the request presents the key, in the x-functions-key header or as
// ?code=, as Azure Functions takes function keys. Neither the key nor a
// wrong guess at it reaches the log.
func TestAPIKey(t *testing.T) {
	var logs bytes.Buffer
	b := &fakeBroker{now: time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)}
	h := functions.NewServer(b, functions.Options{
		APIKey: apiKey,
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:    func() time.Time { return b.now },
	})
	const wrong = "ak-WRONGGUESS0000000000000000000000000"
	timer := []byte(`{"Data":{"timer":{"IsPastDue":false}},"Metadata":{}}`)
	tests := []struct {
		name           string
		method, target string
		body           []byte
		key            string // x-functions-key header
		want           int
		wantMessage    string // in the 401's message
	}{
		{name: "no key", method: "GET", target: "/api/token/xero", want: 401, wantMessage: "has none"},
		{name: "wrong key in the header", method: "GET", target: "/api/token/xero", key: wrong, want: 401, wantMessage: "not this handler's key"},
		{name: "wrong key in the query", method: "GET", target: "/api/token/xero?code=" + wrong, want: 401, wantMessage: "not this handler's key"},
		{name: "key in another case", method: "GET", target: "/api/token/xero", key: strings.ToUpper(apiKey), want: 401},
		{name: "key cut short", method: "GET", target: "/api/token/xero", key: apiKey[:len(apiKey)-1], want: 401},
		{name: "key with more after it", method: "GET", target: "/api/token/xero", key: apiKey + "0", want: 401},
		{name: "key in another header", method: "GET", target: "/api/token/xero?minValidity=60", want: 401},
		{name: "key in the header", method: "GET", target: "/api/token/xero", key: apiKey, want: 200},
		{name: "key as ?code=", method: "GET", target: "/api/token/xero?code=" + apiKey + "&minValidity=60", want: 200},
		{name: "POST with the key", method: "POST", target: "/api/token/xero", body: []byte(`{"minValidity": 60}`), key: apiKey, want: 200},
		{name: "the header wins over the query", method: "GET", target: "/api/token/xero?code=" + apiKey, key: wrong, want: 401},
		{name: "right header, wrong query", method: "GET", target: "/api/token/xero?code=" + wrong, key: apiKey, want: 200},
		{name: "readiness without a key", method: "GET", target: "/", want: 200},
		{name: "readiness HEAD without a key", method: "HEAD", target: "/", want: 200},
		{name: "POST / without a key", method: "POST", target: "/", want: 401},
		{name: "status without a key", method: "GET", target: "/api/connections", want: 401},
		{name: "status with the key", method: "GET", target: "/api/connections", key: apiKey, want: 200},
		{name: "one connection's status without a key", method: "GET", target: "/api/connections/xero", want: 401},
		{name: "force refresh without a key", method: "POST", target: "/api/connections/xero/refresh", want: 401},
		{name: "force refresh with the key", method: "POST", target: "/api/connections/xero/refresh", key: apiKey, want: 200},
		{name: "timer without a key", method: "POST", target: "/refresh", body: timer, want: 401},
		{name: "timer with the key", method: "POST", target: "/refresh", body: timer, key: apiKey, want: 200},
		// The consent start takes no key: its consent link is the
		// credential, and without one it refuses (403), key or not.
		{name: "consent start without a key or link", method: "GET", target: "/api/consent/xero", want: 403},
		{name: "consent start's button without a key or link", method: "POST", target: "/api/consent/xero", want: 403},
		{name: "consent link without a key", method: "POST", target: "/api/connections/xero/consent-link", want: 401},
		{name: "unknown route without a key: 401, not 404", method: "GET", target: "/api/nothing", want: 401},
		{name: "unclean path to / without a key", method: "GET", target: "/./", want: 401},
		{name: "unclean path to a token without a key", method: "GET", target: "/api/../api/token/xero", want: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := http.Header{}
			if tt.key != "" {
				header.Set("X-Functions-Key", tt.key)
			}
			rec := serve(h, tt.method, tt.target, tt.body, header)
			if rec == nil {
				t.Fatalf("%s %s: no server would accept the request", tt.method, tt.target)
			}
			if rec.Code != tt.want {
				t.Fatalf("%s %s: %d %s, want %d", tt.method, tt.target, rec.Code, rec.Body, tt.want)
			}
			if strings.Contains(rec.Body.String(), apiKey) {
				t.Errorf("the answer contains the key: %s", rec.Body)
			}
			if rec.Code != http.StatusUnauthorized {
				return
			}
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("401 body is not JSON: %q", rec.Body)
			}
			msg, _ := body["message"].(string)
			if body["error"] != "unauthorized" || !strings.Contains(msg, tt.wantMessage) || body["remediation"] == "" {
				t.Errorf("401 body %s; want error \"unauthorized\", a message with %q and a remediation", rec.Body, tt.wantMessage)
			}
			if rec.Header().Get("Cache-Control") != "no-store" || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
				t.Errorf("401 headers %v", rec.Header())
			}
			if strings.Contains(rec.Body.String(), fakeAccessToken) || strings.Contains(rec.Body.String(), "xero") {
				t.Errorf("the 401 tells an unauthenticated caller about connections: %s", rec.Body)
			}
		})
	}
	if n := b.sweepCount(); n != 1 {
		t.Errorf("%d sweeps, want 1: only the timer call with the key may sweep", n)
	}
	out := logs.String()
	if !strings.Contains(out, `"status":401`) {
		t.Fatal("no 401 was logged; the leak check below would prove nothing")
	}
	for _, s := range []string{apiKey, wrong, "code="} {
		if strings.Contains(out, s) {
			t.Errorf("the request log contains %q", s)
		}
	}
}

// TestAPIKeyConsentCallbackIsAnonymous: the provider's redirect to the
// consent callback carries the authorization code in ?code= and no key;
// the key check must let it through to the callback, which authenticates
// the request by its state.
func TestAPIKeyConsentCallbackIsAnonymous(t *testing.T) {
	b := &fakeBroker{now: time.Now()}
	h := functions.NewServer(b, functions.Options{APIKey: apiKey})
	rec := serve(h, "GET", "/api/consent/callback?code=authorization-code&state=unknown", nil, nil)
	if rec == nil || rec.Code == http.StatusUnauthorized {
		t.Fatalf("consent callback without a key: %v", rec)
	}
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "invalid_state") {
		t.Errorf("consent callback with an unknown state: %d %s, want the callback's own 400 invalid_state", rec.Code, rec.Body)
	}
}

// TestNoAPIKeyNoCheck: without an API key (Functions mode, where the host
// checks function keys before forwarding), requests need none.
func TestNoAPIKeyNoCheck(t *testing.T) {
	b := &fakeBroker{now: time.Now()}
	h := functions.NewServer(b, functions.Options{})
	for _, target := range []string{"/api/token/xero", "/api/connections", "/api/token/xero?code=anything"} {
		if rec := serve(h, "GET", target, nil, nil); rec.Code != http.StatusOK {
			t.Errorf("GET %s without an API key configured: %d %s", target, rec.Code, rec.Body)
		}
	}
}

// TestPrincipalHeaders: the caller of a connection with allowedCallers is
// X-MS-CLIENT-PRINCIPAL-ID, only with App Service authentication on, and
// only that header: a client can send any X-MS-CLIENT-PRINCIPAL-* header
// when authentication is off, and the name and claims headers are never
// read. Spoofed headers are never echoed or logged.
func TestPrincipalHeaders(t *testing.T) {
	const spoofed = "5p00f5p0-0f5p-00f5-p00f-5p00f5p00f5p"
	claims := base64.StdEncoding.EncodeToString([]byte(`{"auth_typ":"aad","claims":[{"typ":"http://schemas.microsoft.com/identity/claims/objectidentifier","val":"` + fakeCaller + `"}]}`))
	tests := []struct {
		name       string
		auth       bool
		connection string
		header     http.Header
		want       int
		wantMsg    string
	}{
		{name: "auth off: the allowed id in the header is not believed", connection: "restricted",
			header: http.Header{"X-Ms-Client-Principal-Id": {fakeCaller}}, want: 403, wantMsg: "the caller cannot be identified"},
		{name: "auth off: every principal header, none believed", connection: "restricted",
			header: http.Header{"X-Ms-Client-Principal-Id": {fakeCaller}, "X-Ms-Client-Principal-Name": {fakeCaller}, "X-Ms-Client-Principal": {claims}, "X-Ms-Client-Principal-Idp": {"aad"}},
			want:   403, wantMsg: "the caller cannot be identified"},
		{name: "auth off: spoofed headers on an open connection are ignored", connection: "xero",
			header: http.Header{"X-Ms-Client-Principal-Id": {spoofed}, "X-Ms-Client-Principal-Name": {spoofed}}, want: 200},
		{name: "auth on: the allowed id", auth: true, connection: "restricted",
			header: http.Header{"X-Ms-Client-Principal-Id": {fakeCaller}}, want: 200},
		{name: "auth on: the allowed id in upper case", auth: true, connection: "restricted",
			header: http.Header{"X-Ms-Client-Principal-Id": {strings.ToUpper(fakeCaller)}}, want: 200},
		{name: "auth on: the allowed id with spaces", auth: true, connection: "restricted",
			header: http.Header{"X-Ms-Client-Principal-Id": {" " + fakeCaller + " "}}, want: 200},
		{name: "auth on: another id", auth: true, connection: "restricted",
			header: http.Header{"X-Ms-Client-Principal-Id": {spoofed}}, want: 403, wantMsg: "not in this connection's allowedCallers"},
		{name: "auth on: no id", auth: true, connection: "restricted", want: 403, wantMsg: "caller (none)"},
		{name: "auth on: the allowed id only as the name", auth: true, connection: "restricted",
			header: http.Header{"X-Ms-Client-Principal-Name": {fakeCaller}}, want: 403, wantMsg: "caller (none)"},
		{name: "auth on: the allowed id only in the claims", auth: true, connection: "restricted",
			header: http.Header{"X-Ms-Client-Principal": {claims}}, want: 403, wantMsg: "caller (none)"},
		{name: "auth on: two ids, one allowed", auth: true, connection: "restricted",
			header: http.Header{"X-Ms-Client-Principal-Id": {spoofed, fakeCaller}}, want: 403, wantMsg: "2 X-MS-CLIENT-PRINCIPAL-ID headers"},
		{name: "auth on: a list of ids in one header", auth: true, connection: "restricted",
			header: http.Header{"X-Ms-Client-Principal-Id": {fakeCaller + ", " + spoofed}}, want: 403, wantMsg: "not in this connection's allowedCallers"},
		{name: "auth on: an open connection needs no id", auth: true, connection: "xero", want: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			b := &fakeBroker{now: time.Now()}
			h := functions.NewServer(b, functions.Options{
				AuthEnabled: tt.auth,
				Logger:      slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			})
			rec := serve(h, "GET", "/api/token/"+tt.connection, nil, tt.header)
			if rec.Code != tt.want {
				t.Fatalf("%d %s, want %d", rec.Code, rec.Body, tt.want)
			}
			if tt.want == http.StatusForbidden {
				body := checkErrorBody(t, rec)
				if msg, _ := body["message"].(string); body["error"] != "forbidden" || !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("403 body %s; want error \"forbidden\" and a message with %q", rec.Body, tt.wantMsg)
				}
			}
			if !tt.auth {
				for _, v := range []string{fakeCaller, spoofed, claims} {
					if strings.Contains(rec.Body.String(), v) {
						t.Errorf("with authentication off the answer repeats a principal header: %s", rec.Body)
					}
				}
			}
			if logs.Len() == 0 {
				t.Fatal("nothing was logged; the check below would prove nothing")
			}
			for _, v := range []string{fakeCaller, spoofed, claims} {
				if strings.Contains(logs.String(), v) {
					t.Errorf("the log contains a principal header's value: %s", logs.String())
				}
			}
		})
	}
}

func (b *fakeBroker) sweepCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sweeps
}

// TestFunctionAuthLevels: in Functions mode the host's key check is the
// first line of defence, set by each function.json. Token and status
// routes take a function key, operator routes the admin key, and only the
// consent callback, which the provider's redirect reaches without a key,
// is anonymous. A new HTTP function must be added here, deliberately.
func TestFunctionAuthLevels(t *testing.T) {
	want := map[string]string{
		"token":            "function",
		"connections":      "function",
		"connection":       "function",
		"force-refresh":    "admin",
		"consent-start":    "anonymous",
		"consent-link":     "admin",
		"consent-callback": "anonymous",
		"status-page":      "admin", // its buttons force refreshes and mint consent links
		"status-action":    "admin",
		// App Service authentication guards these, and the handler then
		// requires a signed-in member of the operators' group (operator.go).
		"operator-status":        "anonymous",
		"operator-status-action": "anonymous",
	}
	root := filepath.Join("..", "..", "..", "functions")
	dirs, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range dirs {
		var fn struct {
			Bindings []struct{ Type, AuthLevel string } `json:"bindings"`
		}
		readJSON(t, filepath.Join(root, d.Name(), "function.json"), &fn)
		if len(fn.Bindings) == 0 || fn.Bindings[0].Type != "httpTrigger" {
			continue
		}
		seen[d.Name()] = true
		level, ok := want[d.Name()]
		if !ok {
			t.Errorf("%s: an HTTP function this test does not know; decide its authLevel and add it here", d.Name())
			continue
		}
		// Omitted means "function" to the host.
		got := cmp.Or(fn.Bindings[0].AuthLevel, "function")
		if got != level {
			t.Errorf("%s: authLevel %q, want %q", d.Name(), got, level)
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("no HTTP function %s in functions/", name)
		}
	}
}
