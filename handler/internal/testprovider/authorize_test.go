package testprovider_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testclock"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// verifier is a valid PKCE code verifier (43 characters).
const verifier = "dBjftJeZ4CVP-mJ92K9dr7GqzxVMmjUZpSR5H7yTqrkW"

func challengeOf(v string) string {
	sum := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// callbackSite is the client's redirect URI: it records each query it is
// sent and answers 200.
type callbackSite struct {
	url string
	got chan url.Values
}

func newCallbackSite(t *testing.T) *callbackSite {
	t.Helper()
	c := &callbackSite{got: make(chan url.Values, 8)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.got <- r.URL.Query()
		_, _ = io.WriteString(w, "callback reached")
	}))
	t.Cleanup(srv.Close)
	c.url = srv.URL + "/callback"
	return c
}

func (c *callbackSite) next(t *testing.T) url.Values {
	t.Helper()
	select {
	case q := <-c.got:
		return q
	case <-time.After(5 * time.Second):
		t.Fatal("the callback was not reached")
		return nil
	}
}

// authQuery is a valid authorization request to redirect.
func authQuery(redirect string) url.Values {
	return url.Values{
		"response_type":         {"code"},
		"client_id":             {clientID},
		"redirect_uri":          {redirect},
		"state":                 {"st a&te=1"},
		"scope":                 {"api offline_access"},
		"code_challenge":        {challengeOf(verifier)},
		"code_challenge_method": {"S256"},
	}
}

// noFollow returns a client that stops at the first redirect.
func noFollow(srv *httptest.Server) *http.Client {
	c := *srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

// consentCode runs the consent for redirect through Allow and returns the
// code the callback received.
func consentCode(t *testing.T, srv *httptest.Server, site *callbackSite, q url.Values) string {
	t.Helper()
	resp, err := testprovider.Approve(context.Background(), srv.Client(), srv.URL+"/authorize?"+q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := site.next(t)
	if got.Get("state") != q.Get("state") {
		t.Fatalf("state = %q, want %q echoed", got.Get("state"), q.Get("state"))
	}
	if got.Get("code") == "" {
		t.Fatalf("callback query %v has no code", got)
	}
	return got.Get("code")
}

func codeForm(code, redirect, v string) url.Values {
	f := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}}
	if v != "" {
		f.Set("code_verifier", v)
	}
	return f
}

func TestAuthorizeRequestValidation(t *testing.T) {
	tests := []struct {
		name   string
		change func(q url.Values)
		// wantPage: refused on a page of the provider, never redirected.
		wantPage  bool
		wantError string
	}{
		{"valid request shows the consent page", func(url.Values) {}, false, ""},
		{"unknown client", func(q url.Values) { q.Set("client_id", "other") }, true, ""},
		{"unregistered redirect URI", func(q url.Values) { q.Set("redirect_uri", "http://127.0.0.1:1/elsewhere") }, true, ""},
		{"redirect URI compared exactly", func(q url.Values) { q.Set("redirect_uri", q.Get("redirect_uri")+"/") }, true, ""},
		{"missing redirect URI", func(q url.Values) { q.Del("redirect_uri") }, true, ""},
		{"implicit grant", func(q url.Values) { q.Set("response_type", "token") }, false, "unsupported_response_type"},
		{"no PKCE", func(q url.Values) { q.Del("code_challenge"); q.Del("code_challenge_method") }, false, "invalid_request"},
		{"plain PKCE", func(q url.Values) { q.Set("code_challenge_method", "plain") }, false, "invalid_request"},
		{"short challenge", func(q url.Values) { q.Set("code_challenge", "abc") }, false, "invalid_request"},
		{"repeated parameter", func(q url.Values) { q.Add("scope", "more") }, false, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, srv := start(t, testprovider.Config{})
			site := "http://127.0.0.1:9/callback"
			p.AllowRedirectURIs(site)
			q := authQuery(site)
			tt.change(q)
			resp, err := noFollow(srv).Get(srv.URL + "/authorize?" + q.Encode())
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case tt.wantPage:
				if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
					t.Fatalf("got %d Location %q; want 400 with no redirect", resp.StatusCode, resp.Header.Get("Location"))
				}
			case tt.wantError != "":
				loc, err := url.Parse(resp.Header.Get("Location"))
				if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), site+"?") {
					t.Fatalf("got %d Location %q; want 302 to %s", resp.StatusCode, resp.Header.Get("Location"), site)
				}
				if got := loc.Query(); got.Get("error") != tt.wantError || got.Get("state") != q.Get("state") || got.Has("code") {
					t.Fatalf("redirected with %v; want error=%s, the state echoed, no code", got, tt.wantError)
				}
			default:
				if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `id="allow"`) || !strings.Contains(string(body), `id="deny"`) {
					t.Fatalf("got %d %s; want the consent page with Allow and Deny", resp.StatusCode, body)
				}
			}
			if s := p.AuthorizationStats(); s.Consents != 0 {
				t.Fatalf("stats %+v: a code was issued without Allow", s)
			}
		})
	}
}

func TestAuthorizationCodeGrant(t *testing.T) {
	p, srv := start(t, testprovider.Config{Rotate: true})
	site := newCallbackSite(t)
	p.AllowRedirectURIs(site.url)

	code := consentCode(t, srv, site, authQuery(site.url))
	r := post(t, srv, authBasic, codeForm(code, site.url, verifier))
	wantToken(t, r)
	rt := r.str("refresh_token")
	if rt == "" || r.str("scope") != "api offline_access" {
		t.Fatalf("code exchange: refresh_token set %v, scope %q; want a refresh token and the consented scope", rt != "", r.str("scope"))
	}
	if !p.ValidAccessToken(r.str("access_token")) {
		t.Fatal("the access token from the code is not valid at the provider")
	}

	// The grant is a rotating chain like any other.
	r2 := post(t, srv, authBasic, refreshForm(rt))
	wantToken(t, r2)
	if next := r2.str("refresh_token"); next == "" || next == rt {
		t.Fatal("the first refresh did not rotate the refresh token from the code")
	}
	wantError(t, post(t, srv, authBasic, refreshForm(rt)), http.StatusBadRequest, "invalid_grant")

	if s := p.AuthorizationStats(); s.Consents != 1 || s.CodesRedeemed != 1 || s.CodesRefused != 0 {
		t.Fatalf("stats = %+v, want 1 consent, 1 code redeemed", s)
	}
}

func TestCodeRedemptionRefusals(t *testing.T) {
	other := "other-verifier-other-verifier-other-verifier"
	tests := []struct {
		name   string
		redeem func(t *testing.T, srv *httptest.Server, clk *testclock.Clock, code, redirect string) result
	}{
		{"wrong verifier", func(t *testing.T, srv *httptest.Server, _ *testclock.Clock, code, redirect string) result {
			return post(t, srv, authBasic, codeForm(code, redirect, other))
		}},
		{"missing verifier", func(t *testing.T, srv *httptest.Server, _ *testclock.Clock, code, redirect string) result {
			return post(t, srv, authBasic, codeForm(code, redirect, ""))
		}},
		{"different redirect URI", func(t *testing.T, srv *httptest.Server, _ *testclock.Clock, code, redirect string) result {
			return post(t, srv, authBasic, codeForm(code, redirect+"x", verifier))
		}},
		{"unknown code", func(t *testing.T, srv *httptest.Server, _ *testclock.Clock, code, redirect string) result {
			return post(t, srv, authBasic, codeForm(code+"x", redirect, verifier))
		}},
		{"expired code", func(t *testing.T, srv *httptest.Server, clk *testclock.Clock, code, redirect string) result {
			clk.Advance(testprovider.CodeLifetime)
			return post(t, srv, authBasic, codeForm(code, redirect, verifier))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			p, srv := start(t, testprovider.Config{Now: clk.Now})
			site := newCallbackSite(t)
			p.AllowRedirectURIs(site.url)
			code := consentCode(t, srv, site, authQuery(site.url))

			wantError(t, tt.redeem(t, srv, clk, code, site.url), http.StatusBadRequest, "invalid_grant")
			// A code presented once is spent, whatever came of it.
			if tt.name != "unknown code" {
				wantError(t, post(t, srv, authBasic, codeForm(code, site.url, verifier)), http.StatusBadRequest, "invalid_grant")
			}
			if s := p.Stats(); s.Issued != 0 {
				t.Fatalf("stats %+v: a token was issued", s)
			}
		})
	}
}

func TestReusedCodeRevokesItsGrant(t *testing.T) {
	p, srv := start(t, testprovider.Config{})
	site := newCallbackSite(t)
	p.AllowRedirectURIs(site.url)
	code := consentCode(t, srv, site, authQuery(site.url))
	r := post(t, srv, authBasic, codeForm(code, site.url, verifier))
	wantToken(t, r)

	wantError(t, post(t, srv, authBasic, codeForm(code, site.url, verifier)), http.StatusBadRequest, "invalid_grant")
	if _, ok := p.CurrentRefreshToken(r.str("refresh_token")); ok {
		t.Fatal("the grant issued for a reused code is still alive")
	}
	wantError(t, post(t, srv, authBasic, refreshForm(r.str("refresh_token"))), http.StatusBadRequest, "invalid_grant")
}

func TestCodeExchangeNeedsClientAuthentication(t *testing.T) {
	p, srv := start(t, testprovider.Config{AuthStyle: broker.AuthBody})
	site := newCallbackSite(t)
	p.AllowRedirectURIs(site.url)
	code := consentCode(t, srv, site, authQuery(site.url))
	wantError(t, post(t, srv, authBasic, codeForm(code, site.url, verifier)), http.StatusUnauthorized, "invalid_client")
	// Refused before the code was looked at: the client may try again.
	wantToken(t, post(t, srv, authBody, codeForm(code, site.url, verifier)))
}

func TestDenyRedirectsAccessDenied(t *testing.T) {
	p, srv := start(t, testprovider.Config{})
	site := newCallbackSite(t)
	p.AllowRedirectURIs(site.url)
	q := authQuery(site.url)
	resp, err := testprovider.Deny(context.Background(), srv.Client(), srv.URL+"/authorize?"+q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := site.next(t)
	if got.Get("error") != "access_denied" || got.Get("state") != q.Get("state") || got.Has("code") {
		t.Fatalf("callback got %v; want error=access_denied, the state, no code", got)
	}
	if s := p.AuthorizationStats(); s.Consents != 0 {
		t.Fatalf("stats %+v after Deny", s)
	}
}

// The consent form passes through the browser: a redirect URI changed in
// it is checked again, and no code goes to it.
func TestAllowChecksTheFormAgain(t *testing.T) {
	p, srv := start(t, testprovider.Config{})
	site := newCallbackSite(t)
	p.AllowRedirectURIs(site.url)
	form := authQuery(site.url)
	form.Set("redirect_uri", "http://127.0.0.1:9/attacker")
	resp, err := noFollow(srv).PostForm(srv.URL+"/authorize", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
		t.Fatalf("got %d Location %q; want 400 and no redirect", resp.StatusCode, resp.Header.Get("Location"))
	}
	if s := p.AuthorizationStats(); s.Consents != 0 {
		t.Fatalf("stats %+v: a code was issued", s)
	}
}
