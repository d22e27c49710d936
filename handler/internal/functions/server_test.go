package functions_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

const (
	clientID     = "fn-client"
	clientSecret = "fn-client-secret-value"
	adfObjectID  = "00000000-0000-0000-0000-0000000000ad"
)

// world is a handler wired as main wires it: real broker, local store and
// lock, the oauth grant against a strict test provider.
type world struct {
	t        *testing.T
	provider *testprovider.Provider
	store    *local.Store
	locker   *local.Locker
	srv      *httptest.Server
	logs     *bytes.Buffer
	conns    map[string]broker.Connection
}

func newWorld(t *testing.T, authEnabled bool) *world {
	t.Helper()
	return newWorldWith(t, functions.Options{AuthEnabled: authEnabled})
}

// newWorldWith is newWorld with the server's options (Logger and
// MaxBodyBytes are the world's).
func newWorldWith(t *testing.T, opts functions.Options) *world {
	t.Helper()
	w := &world{t: t, logs: &bytes.Buffer{}, conns: map[string]broker.Connection{}}
	w.provider = testprovider.New(testprovider.Config{ClientID: clientID, ClientSecret: clientSecret, AuthStyle: broker.AuthBasic, Rotate: true, AccessTokenLifetime: 30 * time.Minute})
	psrv := httptest.NewServer(w.provider)
	t.Cleanup(psrv.Close)
	w.store, w.locker = localBackends(t)
	mk := func(name string, grant broker.GrantType, allowed ...string) broker.Connection {
		c := broker.Connection{Name: name, Provider: "test", Grant: grant, TokenURL: psrv.URL + "/token", AuthStyle: broker.AuthBasic,
			ClientID: clientID, Secrets: broker.DefaultSecretNames(name), Rotating: grant == broker.GrantRefreshToken,
			RefreshBefore: 5 * time.Minute, DefaultLifetime: time.Hour, AllowedCallers: allowed, KeepWarm: true}
		w.conns[name] = c
		return c
	}
	conns := []broker.Connection{
		mk("xero", broker.GrantRefreshToken),
		mk("restricted", broker.GrantRefreshToken, adfObjectID),
		mk("unseeded", broker.GrantRefreshToken),
		mk("ilevel", broker.GrantClientCredentials),
	}
	for _, name := range []string{"xero", "restricted", "ilevel"} {
		w.seed(w.conns[name])
	}
	log := slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := broker.New(broker.Options{
		Store: w.store, Locker: w.locker, Connections: conns, Logger: log, LockWait: 100 * time.Millisecond,
		Grant: oauth.New(oauth.Options{Timeout: 5 * time.Second, AttemptTimeout: 2 * time.Second, Logger: log}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	opts.Logger, opts.MaxBodyBytes = log, 1024
	w.srv = httptest.NewServer(functions.NewServer(b, opts))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *world) seed(c broker.Connection) {
	ctx := context.Background()
	if err := w.store.Set(ctx, c.Secrets.ClientSecret, broker.StoredSecret{Value: clientSecret}); err != nil {
		w.t.Fatal(err)
	}
	if c.Grant == broker.GrantRefreshToken {
		if err := w.store.Set(ctx, c.Secrets.RefreshToken, broker.StoredSecret{Value: broker.Secret(w.provider.IssueRefreshToken())}); err != nil {
			w.t.Fatal(err)
		}
	}
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (w *world) do(method, path, body string, header map[string]string) response {
	w.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, w.srv.URL+path, rd)
	if err != nil {
		w.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		return r // the status page (statuspage.go)
	}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		w.t.Fatalf("%s %s: body is not a JSON object: %q", method, path, raw)
	}
	return r
}

func TestTokenSuccess(t *testing.T) {
	w := newWorld(t, false)
	tests := []struct {
		name, method, path, body string
	}{
		{"GET", http.MethodGet, "/api/token/xero", ""},
		{"GET with minValidity", http.MethodGet, "/api/token/xero?minValidity=600", ""},
		{"POST {}", http.MethodPost, "/api/token/xero", "{}"},
		{"POST number", http.MethodPost, "/api/token/xero", `{"minValidity": 600}`},
		{"POST numeric string (ADF expressions)", http.MethodPost, "/api/token/xero", `{"minValidity": "600"}`},
		{"client credentials", http.MethodGet, "/api/token/ilevel", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := w.do(tt.method, tt.path, tt.body, nil)
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			if r.header.Get("Cache-Control") != "no-store" {
				t.Fatalf("Cache-Control %q", r.header.Get("Cache-Control"))
			}
			at, _ := r.body["access_token"].(string)
			if !w.provider.ValidAccessToken(at) {
				t.Fatal("access_token is not valid at the provider")
			}
			if r.body["token_type"] != "Bearer" {
				t.Fatalf("token_type %v", r.body["token_type"])
			}
			if exp, _ := r.body["expires_in"].(float64); exp < 600 || exp > 1800 {
				t.Fatalf("expires_in %v", r.body["expires_in"])
			}
			on, err := time.Parse(time.RFC3339, r.body["expires_on"].(string))
			if err != nil || on.Location() != time.UTC || time.Until(on) < 10*time.Minute {
				t.Fatalf("expires_on %v (%v)", r.body["expires_on"], err)
			}
		})
	}
	if st := w.provider.Stats(); st.TokenRequests != 2 || st.Rejected != 0 {
		t.Fatalf("provider stats %+v, want one refresh per connection", st)
	}
}

// TestErrorStatuses produces every error status of DESIGN.md's HTTP surface.
func TestErrorStatuses(t *testing.T) {
	tests := []struct {
		name         string
		auth         bool
		fault        *testprovider.Fault
		method, path string
		body         string
		header       map[string]string
		wantStatus   int
		wantError    string
		retryable    bool
		retryAfter   bool
	}{
		{name: "400 bad minValidity", method: "GET", path: "/api/token/xero?minValidity=abc", wantStatus: 400, wantError: "bad_request"},
		{name: "400 negative minValidity", method: "GET", path: "/api/token/xero?minValidity=-5", wantStatus: 400, wantError: "bad_request"},
		{name: "400 huge minValidity", method: "GET", path: "/api/token/xero?minValidity=99999999999999999999", wantStatus: 400, wantError: "bad_request"},
		{name: "400 minValidity beyond the token lifetime", method: "GET", path: "/api/token/xero?minValidity=3600", wantStatus: 400, wantError: "bad_request"},
		{name: "400 malformed body", method: "POST", path: "/api/token/xero", body: `{"minValidity":`, wantStatus: 400, wantError: "bad_request"},
		{name: "400 unknown body field", method: "POST", path: "/api/token/xero", body: `{"minValidty": 5}`, wantStatus: 400, wantError: "bad_request"},
		{name: "400 query and body disagree", method: "POST", path: "/api/token/xero?minValidity=5", body: `{"minValidity": 6}`, wantStatus: 400, wantError: "bad_request"},
		{name: "400 invalid connection name", method: "GET", path: "/api/token/Bad_Name", wantStatus: 400, wantError: "bad_request"},
		{name: "400 path traversal", method: "GET", path: "/api/token/..%2F..%2Fetc%2Fpasswd", wantStatus: 400, wantError: "bad_request"},
		{name: "400 dot segment, not a redirect", method: "GET", path: "/api/token/./xero", wantStatus: 400, wantError: "bad_request"},
		{name: "400 empty segment, not a redirect", method: "GET", path: "/api//token/xero", wantStatus: 400, wantError: "bad_request"},
		{name: "400 POST without a body", method: "POST", path: "/api/token/xero", wantStatus: 400, wantError: "bad_request"},
		{name: "400 JSON array body", method: "POST", path: "/api/token/xero", body: `[1]`, wantStatus: 400, wantError: "bad_request"},
		{name: "403 allowedCallers without App Service auth", method: "GET", path: "/api/token/restricted", header: map[string]string{"X-MS-CLIENT-PRINCIPAL-ID": adfObjectID}, wantStatus: 403, wantError: "forbidden"},
		{name: "403 caller not allowed", auth: true, method: "GET", path: "/api/token/restricted", header: map[string]string{"X-MS-CLIENT-PRINCIPAL-ID": "11111111-1111-1111-1111-111111111111"}, wantStatus: 403, wantError: "forbidden"},
		{name: "403 no caller identity", auth: true, method: "GET", path: "/api/token/restricted", wantStatus: 403, wantError: "forbidden"},
		{name: "404 unknown connection", method: "GET", path: "/api/token/nope", wantStatus: 404, wantError: "unknown_connection"},
		{name: "404 unknown route", method: "GET", path: "/api/nothing", wantStatus: 404, wantError: "not_found"},
		{name: "405 wrong method", method: "DELETE", path: "/api/token/xero", wantStatus: 405, wantError: "method_not_allowed"},
		{name: "413 oversized body", method: "POST", path: "/api/token/xero", body: `{"minValidity": 1` + strings.Repeat(" ", 2000) + `}`, wantStatus: 413, wantError: "request_too_large"},
		{name: "424 refresh token rejected", fault: &testprovider.Fault{Kind: testprovider.FaultInvalidGrant}, method: "GET", path: "/api/token/xero", wantStatus: 424, wantError: "provider_rejected"},
		{name: "424 secret missing", method: "GET", path: "/api/token/unseeded", wantStatus: 424, wantError: "not_configured"},
		{name: "502 provider outage", fault: &testprovider.Fault{Kind: testprovider.FaultServerError}, method: "GET", path: "/api/token/xero", wantStatus: 502, wantError: "provider_unavailable", retryable: true, retryAfter: true},
		{name: "503 lock held elsewhere", method: "GET", path: "/api/token/xero", wantStatus: 503, wantError: "temporarily_unavailable", retryable: true, retryAfter: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, tt.auth)
			if tt.fault != nil {
				w.provider.InjectFault(*tt.fault)
			}
			if tt.wantStatus == 503 {
				l, err := w.locker.Lock(context.Background(), "xero")
				if err != nil {
					t.Fatal(err)
				}
				defer l.Release(context.Background())
			}
			r := w.do(tt.method, tt.path, tt.body, tt.header)
			if r.status != tt.wantStatus || r.body["error"] != tt.wantError {
				t.Fatalf("got %d %v, want %d %s: %s", r.status, r.body["error"], tt.wantStatus, tt.wantError, r.raw)
			}
			if msg, _ := r.body["message"].(string); msg == "" {
				t.Fatalf("no message: %s", r.raw)
			}
			if _, ok := r.body["retryable"].(bool); !ok || r.body["retryable"] != tt.retryable {
				t.Fatalf("retryable %v, want %v", r.body["retryable"], tt.retryable)
			}
			if got := r.header.Get("Retry-After") != ""; got != tt.retryAfter {
				t.Fatalf("Retry-After present %v, want %v", got, tt.retryAfter)
			}
			if strings.Contains(r.raw, clientSecret) {
				t.Fatal("an error body contains the client secret")
			}
		})
	}
}

func TestAllowedCallerGetsToken(t *testing.T) {
	w := newWorld(t, true)
	r := w.do("GET", "/api/token/restricted", "", map[string]string{"X-MS-CLIENT-PRINCIPAL-ID": strings.ToUpper(adfObjectID)})
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
}

func TestConnectionsStatusHasNoSecrets(t *testing.T) {
	w := newWorld(t, false)
	tok := w.do("GET", "/api/token/xero", "", nil)
	if tok.status != 200 {
		t.Fatal(tok.raw)
	}
	r := w.do("GET", "/api/connections", "", nil)
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	list, _ := r.body["connections"].([]any)
	// restricted is not listed: its allowedCallers do not admit a caller
	// that cannot be identified (TestRoutesNamingAConnectionApplyAllowedCallers).
	if len(list) != 3 {
		t.Fatalf("%d connections listed, want 3: %s", len(list), r.raw)
	}
	states := map[string]string{}
	for _, c := range list {
		m := c.(map[string]any)
		states[m["name"].(string)] = m["state"].(string)
	}
	want := map[string]string{"xero": "healthy", "unseeded": "not_configured", "ilevel": "expiring"}
	for k, v := range want {
		if states[k] != v {
			t.Errorf("%s: state %q, want %q", k, states[k], v)
		}
	}
	one := w.do("GET", "/api/connections/xero", "", nil)
	if one.status != 200 || one.body["name"] != "xero" {
		t.Fatalf("one connection: %d %s", one.status, one.raw)
	}
	if nf := w.do("GET", "/api/connections/nope", "", nil); nf.status != 404 {
		t.Fatalf("unknown connection status: %d", nf.status)
	}
	at := tok.body["access_token"].(string)
	rt, _ := w.store.Get(context.Background(), "xero-refresh-token")
	for _, secret := range []string{at, rt.Value.Reveal(), clientSecret} {
		if strings.Contains(r.raw, secret) || strings.Contains(one.raw, secret) {
			t.Fatal("status output contains a secret")
		}
		if strings.Contains(w.logs.String(), secret) {
			t.Fatal("logs contain a secret")
		}
	}
}

func TestTimerEnvelope(t *testing.T) {
	w := newWorld(t, false)
	// The payload the host posts (captured from host 4.x).
	envelope := `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":true}},
		"Metadata":{"sys":{"MethodName":"refresh","UtcNow":"2026-11-23T03:00:00Z","RandGuid":"35e6e68c-5583-436c-a277-5aec2b416ba8"}}}`
	r := w.do("POST", "/refresh", envelope, map[string]string{"Content-Type": "application/json"})
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	if _, ok := r.body["Outputs"].(map[string]any); !ok {
		t.Fatalf("Outputs missing: %s", r.raw)
	}
	if v, ok := r.body["ReturnValue"]; !ok || v != nil {
		t.Fatalf("ReturnValue must be null: %s", r.raw)
	}
	logs, _ := r.body["Logs"].([]any)
	joined := ""
	for _, l := range logs {
		joined += l.(string) + "\n"
	}
	for _, want := range []string{"past due", "xero: refreshed", "ilevel: refreshed", "unseeded: refresh failed", "sweep done: 4 connections, 1 failed"} {
		if !strings.Contains(joined, want) {
			t.Errorf("Logs lack %q:\n%s", want, joined)
		}
	}
	if st := w.provider.Stats(); st.TokenRequests != 3 {
		t.Fatalf("%d token requests, want 3", st.TokenRequests)
	}
}

func TestMalformedTimerEnvelopes(t *testing.T) {
	w := newWorld(t, false)
	tests := []struct{ name, body string }{
		{"not JSON", "hello"},
		{"empty", ""},
		{"no Data.timer", `{"Data":{},"Metadata":{}}`},
		{"timer of the wrong type", `{"Data":{"timer":"yes"}}`},
		{"IsPastDue of the wrong type", `{"Data":{"timer":{"IsPastDue":"maybe"}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := w.do("POST", "/refresh", tt.body, nil)
			if r.status != 400 || r.body["error"] != "bad_request" {
				t.Fatalf("got %d: %s", r.status, r.raw)
			}
		})
	}
	if st := w.provider.Stats(); st.TokenRequests != 0 {
		t.Fatal("a malformed envelope triggered a sweep")
	}
}

func TestReadiness(t *testing.T) {
	w := newWorld(t, false)
	if r := w.do("GET", "/", "", nil); r.status != 200 {
		t.Fatalf("GET / = %d", r.status)
	}
}

// TestForceRefreshRoute: POST /api/connections/{c}/refresh refreshes and
// answers the status; a second one within the minute is a 429 with
// Retry-After; other methods and unknown connections get JSON errors.
func TestForceRefreshRoute(t *testing.T) {
	w := newWorld(t, false)
	first := w.do(http.MethodGet, "/api/token/xero", "", nil)
	if first.status != http.StatusOK {
		t.Fatalf("token: %d %s", first.status, first.raw)
	}
	r := w.do(http.MethodPost, "/api/connections/xero/refresh", "", nil)
	if r.status != http.StatusOK || r.body["state"] != "healthy" || r.body["name"] != "xero" {
		t.Fatalf("force refresh: %d %s", r.status, r.raw)
	}
	if n := w.provider.Stats().TokenRequests; n != 2 {
		t.Fatalf("%d token requests, want 2 (the forced one refreshed a valid token)", n)
	}
	if strings.Contains(r.raw, first.body["access_token"].(string)) {
		t.Fatal("the status answer contains a token")
	}
	again := w.do(http.MethodPost, "/api/connections/xero/refresh", "", nil)
	if again.status != http.StatusTooManyRequests || again.header.Get("Retry-After") == "" || again.body["error"] != "too_many_requests" {
		t.Fatalf("second force refresh: %d %v %s", again.status, again.header, again.raw)
	}
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/api/connections/xero/refresh", http.StatusMethodNotAllowed},
		{http.MethodPost, "/api/connections/nope/refresh", http.StatusNotFound},
	}
	for _, tt := range tests {
		if r := w.do(tt.method, tt.path, "", nil); r.status != tt.want {
			t.Errorf("%s %s: %d %s, want %d", tt.method, tt.path, r.status, r.raw, tt.want)
		}
	}
}

// localBackends is a fresh local store and locker in one directory.
func localBackends(t *testing.T) (*local.Store, *local.Locker) {
	t.Helper()
	dir := t.TempDir()
	store, err := local.NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	locker, err := local.NewLocker(dir, local.LockerOptions{PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return store, locker
}
