package broker_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// cannedEndpoint answers every token request with one response and counts
// the requests.
func cannedEndpoint(t *testing.T, status int, contentType, body string) (string, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/token", &n
}

// TestBadProviderAnswersWriteNothing sends a refresh into every kind of
// unusable answer and checks that the caller gets an error naming the
// problem, and that the store is left alone: no access token is written,
// and the refresh token changes only to one the answer itself carried.
func TestBadProviderAnswersWriteNothing(t *testing.T) {
	const newRT = "rt-issued-in-a-bad-answer"
	tests := []struct {
		name        string
		grant       broker.GrantType
		status      int
		contentType string
		body        string
		wantCode    broker.ErrorCode
		wantInMsg   string // the problem, as the pipeline run shows it
		wantRT      string // the refresh token the store must end with; "" for unchanged
	}{
		{name: "HTML at 200", status: 200, contentType: "text/html; charset=utf-8",
			body: "<html><body>Sign in</body></html>", wantCode: broker.CodeProviderFailed, wantInMsg: "text/html"},
		{name: "HTML at 200, client credentials", grant: broker.GrantClientCredentials, status: 200, contentType: "text/html",
			body: "<html></html>", wantCode: broker.CodeProviderFailed, wantInMsg: "text/html"},
		{name: "JSON without access_token", status: 200, contentType: "application/json",
			body: `{"token_type":"Bearer","expires_in":3600}`, wantCode: broker.CodeProviderFailed, wantInMsg: "without an access_token"},
		{name: "error inside a 200", status: 200, contentType: "application/json",
			body: `{"error":"invalid_grant","error_description":"refresh token revoked"}`, wantCode: broker.CodeRejected, wantInMsg: "invalid_grant"},
		{name: "expires_in a word", status: 200, contentType: "application/json",
			body: `{"access_token":"at-1","expires_in":"soon"}`, wantCode: broker.CodeProviderFailed, wantInMsg: "expires_in"},
		{name: "expires_in negative", status: 200, contentType: "application/json",
			body: `{"access_token":"at-1","expires_in":-5}`, wantCode: broker.CodeProviderFailed, wantInMsg: "expires_in"},
		{name: "expires_in huge", status: 200, contentType: "application/json",
			body: `{"access_token":"at-1","expires_in":99999999999}`, wantCode: broker.CodeProviderFailed, wantInMsg: "expires_in"},
		{name: "expires_in below a second, form-encoded", status: 200, contentType: "application/x-www-form-urlencoded",
			body: `access_token=at-1&expires_in=0.5`, wantCode: broker.CodeProviderFailed, wantInMsg: "expires_in"},
		{name: "2 MB body", status: 200, contentType: "application/json",
			body:     `{"access_token":"at-1","expires_in":3600,"pad":"` + strings.Repeat("x", 2<<20) + `"}`,
			wantCode: broker.CodeProviderFailed, wantInMsg: "bytes"},
		{name: "invalid UTF-8", status: 200, contentType: "application/json",
			body: "\xff\xfe{\x00", wantCode: broker.CodeProviderFailed, wantInMsg: "not a JSON object"},
		// Fails until oauth refuses access tokens outside RFC 6749 A.12's
		// VSCHAR: today "at-\xff" is decoded to "at-\uFFFD", stored and
		// served, a token the provider never issued.
		{name: "access token of invalid UTF-8", status: 200, contentType: "application/json",
			body: "{\"access_token\":\"at-\xff\xfe\",\"expires_in\":3600}", wantCode: broker.CodeProviderFailed, wantInMsg: "access_token"},
		// A rotating provider that issued a refresh token in an unusable
		// answer has already retired the old one: the new one is kept.
		{name: "expires_in a word, with a new refresh token", status: 200, contentType: "application/json",
			body:     `{"access_token":"at-1","expires_in":"soon","refresh_token":"` + newRT + `"}`,
			wantCode: broker.CodeProviderFailed, wantInMsg: "expires_in", wantRT: newRT},
		{name: "expires_in negative, form-encoded, with a new refresh token", status: 200, contentType: "application/x-www-form-urlencoded",
			body:     "access_token=at-1&expires_in=-1&refresh_token=" + newRT,
			wantCode: broker.CodeProviderFailed, wantInMsg: "expires_in", wantRT: newRT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			grant := tt.grant
			if grant == "" {
				grant = broker.GrantRefreshToken
			}
			e := newEnv(t, testprovider.Config{})
			c := e.conn("conn", grant)
			url, requests := cannedEndpoint(t, tt.status, tt.contentType, tt.body)
			c.TokenURL = url
			e.seed(c)
			var before broker.Secret
			if grant == broker.GrantRefreshToken {
				before = e.storedRefreshToken(c)
			}
			b := e.broker([]broker.Connection{c}, func(o *broker.Options) {
				o.Grant = oauth.New(oauth.Options{Now: e.clock.Now, Timeout: 5 * time.Second, AttemptTimeout: 2 * time.Second, Backoff: time.Millisecond})
			})

			tok, err := b.Token(context.Background(), "conn", 0)

			var be *broker.Error
			if !errors.As(err, &be) {
				t.Fatalf("Token = %v, %v; want a *broker.Error", tok.Expiry, err)
			}
			if be.Code != tt.wantCode || be.Connection != "conn" || be.Remediation == "" {
				t.Errorf("error %+v; want code %s for connection conn, with a remediation", be, tt.wantCode)
			}
			if !strings.Contains(be.Message, tt.wantInMsg) {
				t.Errorf("message %q does not name the problem (%q)", be.Message, tt.wantInMsg)
			}
			if strings.Contains(be.Message, clientSecret) || (before != "" && strings.Contains(be.Message, before.Reveal())) ||
				strings.Contains(be.Message, newRT) {
				t.Error("the message repeats a secret")
			}
			if _, err := e.store.SecretStore.Get(context.Background(), c.Secrets.AccessToken); !errors.Is(err, broker.ErrSecretNotFound) {
				t.Errorf("an access token was stored (err %v)", err)
			}
			wantSets := int64(0)
			if tt.wantRT != "" {
				wantSets = 1
			}
			if got := e.store.sets.Load(); got != wantSets {
				t.Errorf("%d store writes, want %d", got, wantSets)
			}
			if grant == broker.GrantRefreshToken {
				want := before.Reveal()
				if tt.wantRT != "" {
					want = tt.wantRT
				}
				if got := e.storedRefreshToken(c); got.Reveal() != want {
					t.Errorf("stored refresh token changed to another value than %s", map[bool]string{true: "the one issued", false: "the one before"}[tt.wantRT != ""])
				}
			}
			// A second call must not serve anything from the bad answer.
			if _, err := b.Token(context.Background(), "conn", 0); err == nil {
				t.Error("the second call served a token from an unusable answer")
			}
			if requests.Load() == 0 {
				t.Error("the endpoint was never called")
			}
		})
	}
}
