package functions_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testclock"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// countingPeeker is the real broker, counting its peeks and its Token
// calls and keeping the deadline of the last Token call's context.
type countingPeeker struct {
	*broker.Broker
	peeks, hits, tokens atomic.Int64
	mu                  sync.Mutex
	deadline            time.Time
	hasDeadline         bool
}

func (p *countingPeeker) Peek(name string, minValidity time.Duration, now time.Time) (broker.AccessToken, bool) {
	p.peeks.Add(1)
	tok, ok := p.Broker.Peek(name, minValidity, now)
	if ok {
		p.hits.Add(1)
	}
	return tok, ok
}

func (p *countingPeeker) Token(ctx context.Context, name string, minValidity time.Duration) (broker.AccessToken, error) {
	p.tokens.Add(1)
	p.mu.Lock()
	p.deadline, p.hasDeadline = ctx.Deadline()
	p.mu.Unlock()
	return p.Broker.Token(ctx, name, minValidity)
}

// tokenOnly hides Peek: the route as it was, every call through Token.
type tokenOnly struct{ functions.Broker }

// TestTokenRouteAnswersAHitBeforeItsDeadline: with a broker that can peek,
// the token route answers every request exactly as it does through Token
// alone (status, headers and body, byte for byte), asks Peek only after
// the checks that refuse a request (name, connection, allowedCallers,
// minValidity) have passed, answers a hit without calling Token, and
// calls Token on a miss with the request's deadline in its context. The
// cases run in order on one broker: each request goes first to the
// peeking route, then to the route without Peek, which then finds what
// the first left in memory.
func TestTokenRouteAnswersAHitBeforeItsDeadline(t *testing.T) {
	clk := testclock.New(time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC))
	provider := testprovider.New(testprovider.Config{ClientID: clientID, ClientSecret: clientSecret, AuthStyle: broker.AuthBasic,
		Rotate: true, AccessTokenLifetime: time.Hour, Now: clk.Now})
	psrv := httptest.NewServer(provider)
	t.Cleanup(psrv.Close)
	store, locker := localBackends(t)
	mk := func(name string, allowed ...string) broker.Connection {
		return broker.Connection{Name: name, Provider: "test", Grant: broker.GrantRefreshToken, TokenURL: psrv.URL + "/token",
			AuthStyle: broker.AuthBasic, ClientID: clientID, Secrets: broker.DefaultSecretNames(name), Rotating: true,
			RefreshBefore: 5 * time.Minute, DefaultLifetime: time.Hour, AllowedCallers: allowed}
	}
	conns := []broker.Connection{mk("xero"), mk("restricted", adfObjectID), mk("unseeded")}
	ctx := context.Background()
	for _, c := range conns[:2] {
		if err := store.Set(ctx, c.Secrets.ClientSecret, broker.StoredSecret{Value: clientSecret}); err != nil {
			t.Fatal(err)
		}
		if err := store.Set(ctx, c.Secrets.RefreshToken, broker.StoredSecret{Value: broker.Secret(provider.IssueRefreshToken())}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := broker.New(broker.Options{Store: store, Locker: locker, Connections: conns, LockWait: time.Second, Now: clk.Now,
		Grant: oauth.New(oauth.Options{Now: clk.Now, Timeout: 5 * time.Second, AttemptTimeout: 2 * time.Second})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	cp := &countingPeeker{Broker: b}
	opts := functions.Options{AuthEnabled: true, Now: clk.Now, MaxBodyBytes: 1024}
	peeking := functions.NewServer(cp, opts)
	plain := functions.NewServer(tokenOnly{cp}, opts)

	tests := []struct {
		name          string
		advance       time.Duration
		method, path  string
		body, caller  string
		status        int
		peeks, tokens int64 // by the peeking route
		hit           bool
	}{
		{name: "first call: a miss that refreshes", method: "GET", path: "/api/token/xero", status: 200, peeks: 1, tokens: 1},
		{name: "hit", method: "GET", path: "/api/token/xero", status: 200, peeks: 1, hit: true},
		{name: "hit with minValidity in the query", advance: 10 * time.Minute, method: "GET", path: "/api/token/xero?minValidity=600", status: 200, peeks: 1, hit: true},
		{name: "hit with minValidity in a POST body", method: "POST", path: "/api/token/xero", body: `{"minValidity": "600"}`, status: 200, peeks: 1, hit: true},
		{name: "minValidity beyond what is left: a refresh", advance: 20 * time.Minute, method: "GET", path: "/api/token/xero?minValidity=2400", status: 200, peeks: 1, tokens: 1},
		{name: "near expiry: a refresh", advance: 56 * time.Minute, method: "GET", path: "/api/token/xero", status: 200, peeks: 1, tokens: 1},
		{name: "minValidity beyond what the provider grants", method: "GET", path: "/api/token/xero?minValidity=3590", status: 400, peeks: 1, tokens: 1},
		{name: "not configured", method: "GET", path: "/api/token/unseeded", status: 424, peeks: 1, tokens: 1},
		{name: "allowedCallers: the listed caller", method: "GET", path: "/api/token/restricted", caller: adfObjectID, status: 200, peeks: 1, tokens: 1},
		{name: "allowedCallers: the listed caller, from memory", method: "GET", path: "/api/token/restricted", caller: adfObjectID, status: 200, peeks: 1, hit: true},
		{name: "allowedCallers refuse before the lookup: no caller", method: "GET", path: "/api/token/restricted", status: 403},
		{name: "allowedCallers refuse before the lookup: another caller", method: "GET", path: "/api/token/restricted", caller: "someone-else", status: 403},
		{name: "invalid name", method: "GET", path: "/api/token/Xero", status: 400},
		{name: "unknown connection", method: "GET", path: "/api/token/nope", status: 404, tokens: 1},
		{name: "unknown query parameter", method: "GET", path: "/api/token/xero?min_validity=600", status: 400},
		{name: "bad minValidity", method: "GET", path: "/api/token/xero?minValidity=-1", status: 400},
		{name: "POST without a body", method: "POST", path: "/api/token/xero", status: 400},
	}
	for _, tt := range tests {
		clk.Advance(tt.advance)
		send := func(h http.Handler) *httptest.ResponseRecorder {
			var body *strings.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req := httptest.NewRequest(tt.method, "http://127.0.0.1"+tt.path, nil)
			if body != nil {
				req = httptest.NewRequest(tt.method, "http://127.0.0.1"+tt.path, body)
			}
			if tt.caller != "" {
				req.Header.Set("X-MS-CLIENT-PRINCIPAL-ID", tt.caller)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			return w
		}
		cp.peeks.Store(0)
		cp.hits.Store(0)
		cp.tokens.Store(0)
		cp.mu.Lock()
		cp.hasDeadline = false
		cp.mu.Unlock()
		sent := time.Now()
		got := send(peeking)
		peeks, hits, tokens := cp.peeks.Load(), cp.hits.Load(), cp.tokens.Load()
		cp.mu.Lock()
		deadline, hasDeadline := cp.deadline, cp.hasDeadline
		cp.mu.Unlock()
		want := send(plain)
		if got.Code != tt.status || want.Code != tt.status {
			t.Fatalf("%s: status %d with Peek, %d without, want %d: %s", tt.name, got.Code, want.Code, tt.status, got.Body)
		}
		if got.Body.String() != want.Body.String() {
			t.Fatalf("%s: the answers differ:\nwith Peek    %s\nwithout Peek %s", tt.name, redactToken(got.Body.String()), redactToken(want.Body.String()))
		}
		for _, k := range []string{"Content-Type", "Cache-Control", "Pragma", "X-Content-Type-Options", "Retry-After"} {
			if g, w := got.Header().Values(k), want.Header().Values(k); strings.Join(g, ",") != strings.Join(w, ",") {
				t.Fatalf("%s: %s is %q with Peek, %q without", tt.name, k, g, w)
			}
		}
		if peeks != tt.peeks || tokens != tt.tokens || (hits == 1) != tt.hit {
			t.Fatalf("%s: %d peeks (%d hits) and %d Token calls, want %d peeks (hit %v) and %d Token calls", tt.name, peeks, hits, tokens, tt.peeks, tt.hit, tt.tokens)
		}
		if tokens > 0 && (!hasDeadline || deadline.Before(sent.Add(functions.DefaultRequestTimeout)) || deadline.After(time.Now().Add(functions.DefaultRequestTimeout))) {
			t.Fatalf("%s: Token's context has deadline %v (%v), want RequestTimeout after the request", tt.name, deadline, hasDeadline)
		}
	}
}

// redactToken keeps a failing answer's access token out of the test output.
func redactToken(body string) string {
	if i := strings.Index(body, `"access_token":"`); i >= 0 {
		if j := strings.Index(body[i+16:], `"`); j >= 0 {
			return body[:i+16] + "(redacted)" + body[i+16+j:]
		}
	}
	return body
}
