package functions_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
)

// TestRoutesNamingAConnectionApplyAllowedCallers: every route that names a
// connection answers a caller that the connection's allowedCallers exclude
// as the token route does (403), and the list leaves the connection out.
// The consent routes are not among them: the person consenting is no
// token caller, and the consent link is the start's authorization.
func TestRoutesNamingAConnectionApplyAllowedCallers(t *testing.T) {
	w := newWorldWith(t, functions.Options{AuthEnabled: true, ForwardedByHost: true})
	stranger := map[string]string{"X-MS-CLIENT-PRINCIPAL-ID": "99999999-0000-0000-0000-000000000001"}
	allowed := map[string]string{"X-MS-CLIENT-PRINCIPAL-ID": adfObjectID}
	routes := []struct{ method, path string }{
		{"GET", "/api/token/restricted"},
		{"GET", "/api/connections/restricted"},
		{"POST", "/api/connections/restricted/refresh"},
	}
	for _, rt := range routes {
		t.Run(rt.method+" "+rt.path, func(t *testing.T) {
			r := w.do(rt.method, rt.path, "", stranger)
			if r.status != http.StatusForbidden || r.body["error"] != "forbidden" {
				t.Fatalf("a caller not in allowedCallers: %d %s; want 403 forbidden", r.status, r.raw)
			}
			r = w.do(rt.method, rt.path, "", allowed)
			if r.status == http.StatusForbidden || r.status == http.StatusNotFound {
				t.Fatalf("the allowed caller: %d %s", r.status, r.raw)
			}
		})
	}
	t.Run("GET /api/connections", func(t *testing.T) {
		names := func(h map[string]string) []string {
			r := w.do("GET", "/api/connections", "", h)
			var out []string
			for _, c := range r.body["connections"].([]any) {
				out = append(out, c.(map[string]any)["name"].(string))
			}
			return out
		}
		if got := names(stranger); slices.Contains(got, "restricted") || !slices.Contains(got, "xero") {
			t.Fatalf("a caller not in allowedCallers sees %v; want xero and not restricted", got)
		}
		if got := names(allowed); !slices.Contains(got, "restricted") {
			t.Fatalf("the allowed caller sees %v; want restricted among them", got)
		}
	})
}

// statusCounter counts how often the status is read from the store.
type statusCounter struct {
	fakeBroker
	mu    sync.Mutex
	reads int
}

func (b *statusCounter) Status(context.Context) []broker.ConnectionStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reads++
	return []broker.ConnectionStatus{{Name: "xero", State: broker.StateHealthy}, {Name: "restricted", State: broker.StateHealthy}}
}

// TestConnectionsStatusIsCached: however many callers ask, the store is
// read for the status once per few seconds.
func TestConnectionsStatusIsCached(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	b := &statusCounter{}
	h := functions.NewServer(b, functions.Options{Now: clock, ForwardedByHost: true})
	get := func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/connections", nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(get)
	}
	wg.Wait()
	if b.reads != 1 {
		t.Fatalf("50 calls read the status %d times; want 1", b.reads)
	}
	mu.Lock()
	now = now.Add(5 * time.Second)
	mu.Unlock()
	for range 10 {
		get()
	}
	if b.reads != 2 {
		t.Fatalf("after 5 s, 10 more calls made %d reads in all; want 2", b.reads)
	}
}

// TestStandaloneRefusesWebPages: on loopback, a Host that is not loopback
// at the listening port (DNS rebinding), and any request a browser marks
// as coming from another site, is refused before it reaches a route;
// behind the Functions host neither rule applies.
func TestStandaloneRefusesWebPages(t *testing.T) {
	const port = 8080
	tests := []struct {
		name, method, path, host string
		header                   map[string]string
		hosted                   bool // behind the Functions host
		want                     int
	}{
		{"loopback address", "GET", "/api/token/xero", "127.0.0.1:8080", nil, false, 200},
		{"localhost", "GET", "/api/token/xero", "LocalHost:8080", nil, false, 200},
		{"IPv6 loopback", "GET", "/api/token/xero", "[::1]:8080", nil, false, 200},
		{"rebound name", "GET", "/api/token/xero", "attacker.example:8080", nil, false, 403},
		{"name ending in localhost", "GET", "/api/token/xero", "localhost.attacker.example:8080", nil, false, 403},
		{"another port", "GET", "/api/token/xero", "127.0.0.1:9999", nil, false, 403},
		{"no port", "GET", "/api/token/xero", "127.0.0.1", nil, false, 403},
		{"rebound name on the readiness probe", "GET", "/", "attacker.example:8080", nil, false, 403},
		{"cross-site POST", "POST", "/api/connections/xero/refresh", "127.0.0.1:8080", map[string]string{"Origin": "https://attacker.example"}, false, 403},
		{"null Origin", "POST", "/api/connections/xero/refresh", "127.0.0.1:8080", map[string]string{"Origin": "null"}, false, 403},
		{"Sec-Fetch-Site cross-site", "POST", "/api/connections/xero/refresh", "127.0.0.1:8080", map[string]string{"Sec-Fetch-Site": "cross-site"}, false, 403},
		{"Sec-Fetch-Site same-site", "POST", "/api/connections/xero/refresh", "127.0.0.1:8080", map[string]string{"Sec-Fetch-Site": "same-site"}, false, 403},
		{"same-origin POST", "POST", "/api/connections/xero/refresh", "127.0.0.1:8080", map[string]string{"Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"}, false, 200},
		{"program's POST", "POST", "/api/connections/xero/refresh", "127.0.0.1:8080", nil, false, 200},
		{"cross-site sweep", "POST", "/refresh", "127.0.0.1:8080", map[string]string{"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}, false, 403},
		{"cross-site token read", "GET", "/api/token/xero", "127.0.0.1:8080", map[string]string{"Sec-Fetch-Site": "cross-site"}, false, 403},
		{"typed address", "GET", "/api/token/xero", "127.0.0.1:8080", map[string]string{"Sec-Fetch-Site": "none"}, false, 200},
		{"provider's redirect to the callback", "GET", "/api/consent/callback", "127.0.0.1:8080", map[string]string{"Sec-Fetch-Site": "cross-site"}, false, 400},
		{"behind the host: proxied Host", "GET", "/api/token/xero", "attacker.example", map[string]string{"Origin": "https://attacker.example"}, true, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &fakeBroker{now: time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)}
			o := functions.Options{LoopbackPort: port, Now: func() time.Time { return b.now }}
			if tt.hosted {
				o = functions.Options{ForwardedByHost: true, Now: func() time.Time { return b.now }}
			}
			h := functions.NewServer(b, o)
			var body io.Reader
			if tt.path == "/refresh" {
				body = strings.NewReader(timerEnvelope)
			}
			req := httptest.NewRequest(tt.method, tt.path, body)
			req.Host = tt.host
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.want, rec.Body)
			}
			if tt.want == 403 && b.sweepCount() != 0 {
				t.Fatal("a refused request swept")
			}
		})
	}
}

// TestUnauthorizedLogsACutPath: a 401 for a path of 60 KB logs at most 256
// bytes of it.
func TestUnauthorizedLogsACutPath(t *testing.T) {
	var logs bytes.Buffer
	b := &fakeBroker{now: time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)}
	h := functions.NewServer(b, functions.Options{APIKey: apiKey, ForwardedByHost: true,
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/token/"+strings.Repeat("a", 60<<10), nil))
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("status %d", rec.Code)
	}
	var line struct{ Path string }
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("log %q: %v", logs.String(), err)
	}
	if len(line.Path) > 256+len("…") || !strings.HasPrefix(line.Path, "/api/token/aaa") {
		t.Fatalf("logged path of %d bytes; want at most 256 and the start of the path", len(line.Path))
	}
}
