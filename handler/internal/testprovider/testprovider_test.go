package testprovider_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testclock"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

const (
	clientID     = "client-1"
	clientSecret = "s3cr+t/=!" // characters that must be form-encoded in Basic auth
)

func newClock() *testclock.Clock { return testclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) }

// auth says how a test request authenticates the client.
type auth int

const (
	authBasic auth = iota // Authorization: Basic, parts form-encoded (RFC 6749 §2.3.1)
	authBody              // client_id and client_secret parameters
	authBoth
	authNone
	authBasicRaw // Basic without form-encoding the parts
)

type result struct {
	status int
	header http.Header
	body   map[string]any
}

func (r result) str(key string) string {
	s, _ := r.body[key].(string)
	return s
}

func start(t *testing.T, cfg testprovider.Config) (*testprovider.Provider, *httptest.Server) {
	t.Helper()
	if cfg.ClientID == "" {
		cfg.ClientID, cfg.ClientSecret = clientID, clientSecret
	}
	if cfg.AuthStyle == "" {
		cfg.AuthStyle = broker.AuthBasic
	}
	p := testprovider.New(cfg)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv
}

func post(t *testing.T, srv *httptest.Server, a auth, form url.Values) result {
	t.Helper()
	r, err := postErr(context.Background(), srv, a, clientSecret, form)
	if err != nil {
		t.Fatalf("POST /token: %v", err)
	}
	return r
}

func postErr(ctx context.Context, srv *httptest.Server, a auth, secret string, form url.Values) (result, error) {
	form = cloneForm(form)
	switch a {
	case authBody, authBoth:
		form.Set("client_id", clientID)
		form.Set("client_secret", secret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		return result{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	switch a {
	case authBasic, authBoth:
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	case authBasicRaw:
		req.SetBasicAuth(clientID, secret)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return result{}, err
	}
	res := result{status: resp.StatusCode, header: resp.Header}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &res.body); err != nil {
			return result{}, err
		}
	}
	return res, nil
}

func cloneForm(v url.Values) url.Values {
	out := url.Values{}
	for k, vv := range v {
		out[k] = append([]string(nil), vv...)
	}
	return out
}

func refreshForm(rt string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
}

var ccForm = url.Values{"grant_type": {"client_credentials"}}

func wantError(t *testing.T, r result, status int, code string) {
	t.Helper()
	if r.status != status || r.str("error") != code {
		t.Fatalf("got %d error=%q, want %d %q", r.status, r.str("error"), status, code)
	}
}

func wantToken(t *testing.T, r result) {
	t.Helper()
	if r.status != http.StatusOK || r.str("access_token") == "" {
		t.Fatalf("got %d error=%q, want 200 with an access token", r.status, r.str("error"))
	}
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
}

func TestClientAuthentication(t *testing.T) {
	tests := []struct {
		name   string
		style  broker.AuthStyle
		auth   auth
		secret string
		want   int
	}{
		{"basic accepts basic", broker.AuthBasic, authBasic, clientSecret, http.StatusOK},
		{"basic rejects body", broker.AuthBasic, authBody, clientSecret, http.StatusUnauthorized},
		{"basic rejects both", broker.AuthBasic, authBoth, clientSecret, http.StatusUnauthorized},
		{"basic rejects none", broker.AuthBasic, authNone, clientSecret, http.StatusUnauthorized},
		{"basic rejects wrong secret", broker.AuthBasic, authBasic, "wrong", http.StatusUnauthorized},
		{"basic decodes form-encoding", broker.AuthBasic, authBasicRaw, clientSecret, http.StatusUnauthorized},
		{"body accepts body", broker.AuthBody, authBody, clientSecret, http.StatusOK},
		{"body rejects basic", broker.AuthBody, authBasic, clientSecret, http.StatusUnauthorized},
		{"body rejects both", broker.AuthBody, authBoth, clientSecret, http.StatusUnauthorized},
		{"body rejects none", broker.AuthBody, authNone, clientSecret, http.StatusUnauthorized},
		{"body rejects wrong secret", broker.AuthBody, authBody, "wrong", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, srv := start(t, testprovider.Config{AuthStyle: tt.style})
			r, err := postErr(context.Background(), srv, tt.auth, tt.secret, ccForm)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == http.StatusOK {
				wantToken(t, r)
				return
			}
			wantError(t, r, tt.want, "invalid_client")
			basicTried := tt.auth == authBasic || tt.auth == authBoth || tt.auth == authBasicRaw
			if got := r.header.Get("WWW-Authenticate"); (got != "") != basicTried {
				t.Errorf("WWW-Authenticate = %q; a challenge is due exactly when the client tried Basic", got)
			}
			if s := p.Stats(); s.Rejected != 1 || s.Issued != 0 {
				t.Errorf("stats = %+v, want 1 rejected, 0 issued", s)
			}
		})
	}
}

func TestRequestValidation(t *testing.T) {
	tests := []struct {
		name   string
		cfg    testprovider.Config
		form   url.Values
		status int
		code   string
	}{
		{"missing grant_type", testprovider.Config{}, url.Values{}, 400, "invalid_request"},
		{"unsupported grant", testprovider.Config{}, url.Values{"grant_type": {"password"}}, 400, "unsupported_grant_type"},
		{"repeated parameter", testprovider.Config{}, url.Values{"grant_type": {"client_credentials", "client_credentials"}}, 400, "invalid_request"},
		{"missing refresh_token", testprovider.Config{}, url.Values{"grant_type": {"refresh_token"}}, 400, "invalid_request"},
		{"unknown refresh token", testprovider.Config{}, refreshForm("rt_nope"), 400, "invalid_grant"},
		{"required scope missing", testprovider.Config{RequiredScope: "api"}, ccForm, 400, "invalid_scope"},
		{"required scope absent from list", testprovider.Config{RequiredScope: "api"}, url.Values{"grant_type": {"client_credentials"}, "scope": {"apiX read"}}, 400, "invalid_scope"},
		{"required scope present", testprovider.Config{RequiredScope: "api"}, url.Values{"grant_type": {"client_credentials"}, "scope": {"read api"}}, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv := start(t, tt.cfg)
			r := post(t, srv, authBasic, tt.form)
			if tt.status == http.StatusOK {
				wantToken(t, r)
				if got := r.str("scope"); got != tt.form.Get("scope") {
					t.Errorf("scope = %q, want the requested %q", got, tt.form.Get("scope"))
				}
				return
			}
			wantError(t, r, tt.status, tt.code)
		})
	}

	t.Run("wrong content type", func(t *testing.T) {
		_, srv := start(t, testprovider.Config{})
		resp, err := srv.Client().Post(srv.URL+"/token", "application/json", strings.NewReader(`{"grant_type":"client_credentials"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("status = %d, want 400", resp.StatusCode)
		}
	})
	t.Run("GET /token", func(t *testing.T) {
		_, srv := start(t, testprovider.Config{})
		resp, err := srv.Client().Get(srv.URL + "/token")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("status = %d, want 405", resp.StatusCode)
		}
	})
}

func TestRefresh(t *testing.T) {
	t.Run("non-rotating keeps the refresh token", func(t *testing.T) {
		p, srv := start(t, testprovider.Config{AccessTokenLifetime: time.Hour})
		rt := p.IssueRefreshToken()
		for range 2 {
			r := post(t, srv, authBasic, refreshForm(rt))
			wantToken(t, r)
			if _, ok := r.body["refresh_token"]; ok {
				t.Error("non-rotating provider sent a refresh_token")
			}
			if got := r.body["expires_in"]; got != float64(3600) {
				t.Errorf("expires_in = %v, want 3600", got)
			}
		}
		if s := p.Stats(); s.RefreshGrants != 2 || s.Issued != 2 || s.ReuseDetected != 0 {
			t.Errorf("stats = %+v", s)
		}
	})

	t.Run("rotation and reuse revokes the chain", func(t *testing.T) {
		p, srv := start(t, testprovider.Config{Rotate: true})
		rt1 := p.IssueRefreshToken()
		other := p.IssueRefreshToken()

		r := post(t, srv, authBasic, refreshForm(rt1))
		wantToken(t, r)
		rt2 := r.str("refresh_token")
		if rt2 == "" || rt2 == rt1 {
			t.Fatal("rotating provider did not issue a new refresh token")
		}
		if cur, ok := p.CurrentRefreshToken(rt1); !ok || cur != rt2 {
			t.Error("CurrentRefreshToken does not follow the rotation")
		}

		wantError(t, post(t, srv, authBasic, refreshForm(rt1)), 400, "invalid_grant")
		wantError(t, post(t, srv, authBasic, refreshForm(rt2)), 400, "invalid_grant")
		if _, ok := p.CurrentRefreshToken(rt2); ok {
			t.Error("chain still live after reuse")
		}
		// Another user's grant is untouched.
		wantToken(t, post(t, srv, authBasic, refreshForm(other)))

		want := testprovider.Stats{TokenRequests: 4, RefreshGrants: 4, Issued: 2, Rejected: 2, ReuseDetected: 1, ChainsRevoked: 1}
		if s := p.Stats(); s != want {
			t.Errorf("stats = %+v, want %+v", s, want)
		}
	})

	t.Run("omit expires_in", func(t *testing.T) {
		p, srv := start(t, testprovider.Config{OmitExpiresIn: true})
		r := post(t, srv, authBasic, refreshForm(p.IssueRefreshToken()))
		wantToken(t, r)
		if _, ok := r.body["expires_in"]; ok {
			t.Error("expires_in sent despite OmitExpiresIn")
		}
	})

	t.Run("revoke", func(t *testing.T) {
		p, srv := start(t, testprovider.Config{})
		rt := p.IssueRefreshToken()
		if !p.Revoke(rt) || p.Revoke("rt_unknown") {
			t.Fatal("Revoke reported the wrong tokens as known")
		}
		wantError(t, post(t, srv, authBasic, refreshForm(rt)), 400, "invalid_grant")
		if s := p.Stats(); s.ChainsRevoked != 1 || s.ReuseDetected != 0 {
			t.Errorf("stats = %+v", s)
		}
	})
}

func TestReuseGrace(t *testing.T) {
	clk := newClock()
	p, srv := start(t, testprovider.Config{Rotate: true, ReuseGrace: 30 * time.Minute, Now: clk.Now})
	rt1 := p.IssueRefreshToken()

	r := post(t, srv, authBasic, refreshForm(rt1))
	wantToken(t, r)
	rt2 := r.str("refresh_token")

	// Within the grace the old token yields a new access token and the
	// successor that was already issued: no fork, no further rotation.
	clk.Advance(29 * time.Minute)
	r = post(t, srv, authBasic, refreshForm(rt1))
	wantToken(t, r)
	if r.str("refresh_token") != rt2 {
		t.Fatal("grace redemption did not return the chain's current refresh token")
	}

	r = post(t, srv, authBasic, refreshForm(rt2))
	wantToken(t, r)
	rt3 := r.str("refresh_token")
	r = post(t, srv, authBasic, refreshForm(rt1))
	wantToken(t, r)
	if r.str("refresh_token") != rt3 {
		t.Fatal("grace redemption after a further rotation must return the newest refresh token")
	}

	// rt1 was rotated at t0; its grace has now run out.
	clk.Advance(2 * time.Minute)
	wantError(t, post(t, srv, authBasic, refreshForm(rt1)), 400, "invalid_grant")
	wantError(t, post(t, srv, authBasic, refreshForm(rt3)), 400, "invalid_grant")
	want := testprovider.Stats{TokenRequests: 6, RefreshGrants: 6, Issued: 4, Rejected: 2, ReuseDetected: 1, ChainsRevoked: 1}
	if s := p.Stats(); s != want {
		t.Errorf("stats = %+v, want %+v", s, want)
	}
}

func TestFaults(t *testing.T) {
	tests := []struct {
		fault       testprovider.Fault
		status      int
		code        string // expected "error" of a JSON body
		contentType string
		retryAfter  string
	}{
		{testprovider.Fault{Kind: testprovider.FaultServerError}, 500, "server_error", "application/json", ""},
		{testprovider.Fault{Kind: testprovider.FaultUnavailable}, 503, "temporarily_unavailable", "application/json", ""},
		{testprovider.Fault{Kind: testprovider.FaultUnavailable, RetryAfter: 2 * time.Second}, 503, "temporarily_unavailable", "application/json", "2"},
		{testprovider.Fault{Kind: testprovider.FaultRateLimited, RetryAfter: 1500 * time.Millisecond}, 429, "rate_limited", "application/json", "2"},
		{testprovider.Fault{Kind: testprovider.FaultRateLimited}, 429, "rate_limited", "application/json", "0"},
		{testprovider.Fault{Kind: testprovider.FaultInvalidGrant}, 400, "invalid_grant", "application/json", ""},
		{testprovider.Fault{Kind: testprovider.FaultInvalidClient}, 401, "invalid_client", "application/json", ""},
		{testprovider.Fault{Kind: testprovider.FaultErrorIn200}, 200, "invalid_grant", "application/json", ""},
		{testprovider.Fault{Kind: testprovider.FaultNoAccessToken}, 200, "", "application/json", ""},
		{testprovider.Fault{Kind: testprovider.FaultHTML}, 200, "", "text/html", ""},
		{testprovider.Fault{Kind: testprovider.FaultSlow, Delay: 30 * time.Millisecond}, 200, "", "application/json", ""},
	}
	for _, tt := range tests {
		t.Run(tt.fault.Kind.String(), func(t *testing.T) {
			p, srv := start(t, testprovider.Config{Rotate: true})
			rt := p.IssueRefreshToken()
			p.InjectFault(tt.fault)
			began := time.Now()
			r := post(t, srv, authBasic, refreshForm(rt))
			if r.status != tt.status || r.str("error") != tt.code {
				t.Errorf("got %d error=%q, want %d %q", r.status, r.str("error"), tt.status, tt.code)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, tt.contentType) {
				t.Errorf("Content-Type = %q, want %s", ct, tt.contentType)
			}
			if got := r.header.Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.retryAfter)
			}
			if _, ok := r.body["access_token"]; ok != (tt.fault.Kind == testprovider.FaultSlow) {
				t.Errorf("access_token present = %v", ok)
			}
			if tt.fault.Kind == testprovider.FaultSlow && time.Since(began) < tt.fault.Delay {
				t.Errorf("slow fault answered after %v, want at least %v", time.Since(began), tt.fault.Delay)
			}
			// Only the slow fault processes the grant; every other one
			// leaves the refresh token current.
			if cur, _ := p.CurrentRefreshToken(rt); (cur != rt) != (tt.fault.Kind == testprovider.FaultSlow) {
				t.Error("fault changed whether the refresh token was rotated")
			}
			if req, _ := p.LastRequest(); req.Fault != tt.fault.Kind {
				t.Errorf("LastRequest().Fault = %v", req.Fault)
			}
			// The fault is consumed: the next request is served normally.
			cur, _ := p.CurrentRefreshToken(rt)
			wantToken(t, post(t, srv, authBasic, refreshForm(cur)))
			if s := p.Stats(); s.TokenRequests != 2 || s.Faults != 1 || s.Rejected != 0 {
				t.Errorf("stats = %+v, want 2 requests, 1 fault, 0 rejected", s)
			}
		})
	}
}

func TestFaultsAreFIFO(t *testing.T) {
	p, srv := start(t, testprovider.Config{})
	p.InjectFault(testprovider.Fault{Kind: testprovider.FaultServerError}, testprovider.Fault{Kind: testprovider.FaultInvalidClient})
	wantError(t, post(t, srv, authBasic, ccForm), 500, "server_error")
	wantError(t, post(t, srv, authBasic, ccForm), 401, "invalid_client")
	wantToken(t, post(t, srv, authBasic, ccForm))
}

func TestFaultProcessedButLost(t *testing.T) {
	p, srv := start(t, testprovider.Config{Rotate: true})
	rt := p.IssueRefreshToken()
	p.InjectFault(testprovider.Fault{Kind: testprovider.FaultProcessedButLost})
	if _, err := postErr(context.Background(), srv, authBasic, clientSecret, refreshForm(rt)); err == nil {
		t.Fatal("the client received a response that should have been lost")
	}
	cur, ok := p.CurrentRefreshToken(rt)
	if !ok || cur == rt {
		t.Fatal("the lost request was not processed: the refresh token was not rotated")
	}
	if s := p.Stats(); s.TokenRequests != 1 || s.Issued != 1 {
		t.Errorf("stats = %+v, want 1 request, 1 issued", s)
	}
	// Retrying with the old token is reuse: the whole chain goes.
	wantError(t, post(t, srv, authBasic, refreshForm(rt)), 400, "invalid_grant")
	wantError(t, post(t, srv, authBasic, refreshForm(cur)), 400, "invalid_grant")
	if s := p.Stats(); s.ReuseDetected != 1 || s.ChainsRevoked != 1 {
		t.Errorf("stats = %+v, want the reuse detected", s)
	}
}

func TestFaultSlowHonoursCancellation(t *testing.T) {
	p := testprovider.New(testprovider.Config{ClientID: clientID, ClientSecret: clientSecret, AuthStyle: broker.AuthBasic})
	srv := httptest.NewServer(p)
	p.InjectFault(testprovider.Fault{Kind: testprovider.FaultSlow, Delay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := postErr(ctx, srv, authBasic, clientSecret, ccForm); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	// Close waits for running handlers: it returns promptly only if the
	// slow handler noticed the cancellation.
	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("slow fault kept running after the request was cancelled")
	}
	if s := p.Stats(); s.Issued != 0 {
		t.Errorf("stats = %+v, want nothing issued", s)
	}
}

func TestAccessTokens(t *testing.T) {
	clk := newClock()
	p, srv := start(t, testprovider.Config{AccessTokenLifetime: 10 * time.Minute, Now: clk.Now})
	at := post(t, srv, authBasic, ccForm).str("access_token")

	me := func(tok string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/me", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := me(at); got != http.StatusOK || !p.ValidAccessToken(at) {
		t.Errorf("fresh token: /api/me = %d, valid = %v", got, p.ValidAccessToken(at))
	}
	if got := me("at_forged"); got != http.StatusUnauthorized || p.ValidAccessToken("at_forged") {
		t.Errorf("forged token: /api/me = %d", got)
	}
	clk.Advance(10 * time.Minute)
	if got := me(at); got != http.StatusUnauthorized || p.ValidAccessToken(at) {
		t.Errorf("expired token: /api/me = %d, valid = %v", got, p.ValidAccessToken(at))
	}
}

func TestStatsEndpointAndRequests(t *testing.T) {
	p, srv := start(t, testprovider.Config{AuthStyle: broker.AuthBody})
	post(t, srv, authBody, url.Values{"grant_type": {"client_credentials"}, "scope": {"a b"}, "audience": {"x"}})

	resp, err := srv.Client().Get(srv.URL + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got testprovider.Stats
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got != p.Stats() || got.ClientCredentialsGrants != 1 || got.Issued != 1 {
		t.Errorf("/stats = %+v, Stats() = %+v", got, p.Stats())
	}

	req, ok := p.LastRequest()
	if !ok || req.Grant != "client_credentials" || !req.BodyAuth || req.BasicAuth {
		t.Fatalf("LastRequest = %+v", req)
	}
	if req.Form.Has("client_secret") {
		t.Error("recorded form keeps the client secret")
	}
	if req.Form.Get("scope") != "a b" || req.Form.Get("audience") != "x" || req.Form.Get("client_id") != clientID {
		t.Errorf("recorded form = %v", req.Form)
	}
	if n := len(p.Requests()); n != 1 {
		t.Errorf("len(Requests()) = %d, want 1", n)
	}
}

func TestConcurrentCounting(t *testing.T) {
	const n = 40
	p, srv := start(t, testprovider.Config{Rotate: true})
	rt := p.IssueRefreshToken()

	var wg sync.WaitGroup
	statuses := make(chan int, 2*n)
	for range n {
		wg.Go(func() {
			r, err := postErr(context.Background(), srv, authBasic, clientSecret, ccForm)
			if err == nil {
				statuses <- r.status
			}
		})
		wg.Go(func() {
			r, err := postErr(context.Background(), srv, authBasic, clientSecret, refreshForm(rt))
			if err == nil && r.status == http.StatusOK {
				statuses <- -1 // a successful refresh
			}
		})
	}
	wg.Wait()
	close(statuses)
	var cc, refreshed int
	for s := range statuses {
		switch s {
		case http.StatusOK:
			cc++
		case -1:
			refreshed++
		}
	}
	// Exactly one redemption of the rotating token wins; every other one is
	// reuse of a rotated token, and the first of those revokes the chain.
	s := p.Stats()
	if cc != n || refreshed != 1 {
		t.Errorf("client_credentials ok = %d, refreshes ok = %d; want %d and 1", cc, refreshed, n)
	}
	if s.TokenRequests != 2*n || s.ClientCredentialsGrants != n || s.RefreshGrants != n || s.Issued != n+1 || s.ChainsRevoked != 1 {
		t.Errorf("stats = %+v", s)
	}
	if s.Rejected != n-1 || s.ReuseDetected != 1 {
		t.Errorf("stats = %+v, want %d rejected refreshes, 1 reuse detected", s, n-1)
	}
}
