package oauth_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

const (
	clientID     = "client-1"
	clientSecret = "cs-s3cr+t/=!" // needs form-encoding in Basic auth
)

var fixedNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func startProvider(t *testing.T, cfg testprovider.Config) (*testprovider.Provider, *httptest.Server) {
	t.Helper()
	cfg.ClientID, cfg.ClientSecret = clientID, clientSecret
	if cfg.AuthStyle == "" {
		cfg.AuthStyle = broker.AuthBasic
	}
	p := testprovider.New(cfg)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv
}

// newClient returns a Client with test-sized backoff and a fixed clock.
func newClient(o oauth.Options) *oauth.Client {
	if o.Backoff == 0 {
		o.Backoff = time.Millisecond
	}
	if o.Now == nil {
		o.Now = func() time.Time { return fixedNow }
	}
	return oauth.New(o)
}

func refreshConn(tokenURL string, style broker.AuthStyle, rotating bool, grace time.Duration) *broker.Connection {
	return &broker.Connection{
		Name: "conn", Grant: broker.GrantRefreshToken, TokenURL: tokenURL, AuthStyle: style,
		Rotating: rotating, ReuseGrace: grace,
	}
}

func ccConn(tokenURL string) *broker.Connection {
	return &broker.Connection{Name: "conn", Grant: broker.GrantClientCredentials, TokenURL: tokenURL, AuthStyle: broker.AuthBasic}
}

func creds(rt string) broker.Credentials {
	return broker.Credentials{ClientID: clientID, ClientSecret: clientSecret, RefreshToken: broker.Secret(rt)}
}

func asProviderError(t *testing.T, err error) *broker.ProviderError {
	t.Helper()
	var pe *broker.ProviderError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *broker.ProviderError", err, err)
	}
	return pe
}

// reply is one canned answer of a scripted token endpoint.
type reply struct {
	status      int
	contentType string
	header      map[string]string
	body        string
}

func jsonReply(status int, body string) reply {
	return reply{status: status, contentType: "application/json", body: body}
}

// scripted serves replies in order, repeating the last, and counts requests.
func scripted(t *testing.T, replies ...reply) (string, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		rp := replies[min(i, len(replies)-1)]
		for k, v := range rp.header {
			w.Header().Set(k, v)
		}
		if rp.contentType != "" {
			w.Header().Set("Content-Type", rp.contentType)
		}
		w.WriteHeader(rp.status)
		_, _ = io.WriteString(w, rp.body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/token", &n
}

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestAuthStyles(t *testing.T) {
	tests := []struct {
		name          string
		provider      broker.AuthStyle
		conn          broker.AuthStyle
		wantBasicAuth bool
		wantOK        bool
	}{
		{"basic", broker.AuthBasic, broker.AuthBasic, true, true},
		{"body", broker.AuthBody, broker.AuthBody, false, true},
		{"basic sent to a body provider", broker.AuthBody, broker.AuthBasic, true, false},
		{"body sent to a basic provider", broker.AuthBasic, broker.AuthBody, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, srv := startProvider(t, testprovider.Config{AuthStyle: tt.provider})
			rt := p.IssueRefreshToken()
			tok, err := newClient(oauth.Options{}).Token(context.Background(), refreshConn(srv.URL+"/token", tt.conn, false, 0), creds(rt))

			req, _ := p.LastRequest()
			if req.BasicAuth != tt.wantBasicAuth || req.BodyAuth == tt.wantBasicAuth {
				t.Errorf("provider saw basic=%v body=%v", req.BasicAuth, req.BodyAuth)
			}
			if n := p.Stats().TokenRequests; n != 1 {
				t.Errorf("token requests = %d, want exactly 1 (no auth-style probing, no retry)", n)
			}
			if tt.wantOK {
				if err != nil {
					t.Fatal(err)
				}
				if !p.ValidAccessToken(tok.AccessToken.Reveal()) {
					t.Error("returned access token is not one the provider issued")
				}
				return
			}
			pe := asProviderError(t, err)
			if !pe.Permanent || pe.Code != "invalid_client" || pe.StatusCode != http.StatusUnauthorized {
				t.Errorf("error = %+v, want permanent 401 invalid_client", pe)
			}
		})
	}
}

func TestRefresh(t *testing.T) {
	tests := []struct {
		name   string
		rotate bool
		style  broker.AuthStyle
	}{
		{"rotating basic", true, broker.AuthBasic},
		{"rotating body", true, broker.AuthBody},
		{"non-rotating basic", false, broker.AuthBasic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, srv := startProvider(t, testprovider.Config{AuthStyle: tt.style, Rotate: tt.rotate, RequiredScope: "offline_access"})
			rt := p.IssueRefreshToken()
			conn := refreshConn(srv.URL+"/token", tt.style, tt.rotate, 0)
			conn.Scopes = []string{"offline_access", "api.read"}
			conn.Params = map[string]string{"resource": "https://api.example"}

			tok, err := newClient(oauth.Options{}).Token(context.Background(), conn, creds(rt))
			if err != nil {
				t.Fatal(err)
			}
			cur, _ := p.CurrentRefreshToken(rt)
			if tt.rotate {
				if tok.RefreshToken.Reveal() != cur || cur == rt {
					t.Error("rotated refresh token not returned")
				}
			} else if !tok.RefreshToken.IsZero() {
				t.Error("non-rotating provider sent no refresh token, but the result has one")
			}
			if tok.TokenType != "Bearer" || !tok.IssuedAt.Equal(fixedNow) || !tok.Expiry.Equal(fixedNow.Add(testprovider.DefaultAccessTokenLifetime)) {
				t.Errorf("token = type %q issued %v expiry %v", tok.TokenType, tok.IssuedAt, tok.Expiry)
			}

			req, _ := p.LastRequest()
			f := req.Form
			if f.Get("grant_type") != "refresh_token" || f.Get("refresh_token") != rt ||
				f.Get("scope") != "offline_access api.read" || f.Get("resource") != "https://api.example" {
				t.Errorf("provider saw grant=%q scope=%q resource=%q refresh_token sent=%v",
					f.Get("grant_type"), f.Get("scope"), f.Get("resource"), f.Get("refresh_token") == rt)
			}
		})
	}
}

func TestClientCredentials(t *testing.T) {
	p, srv := startProvider(t, testprovider.Config{AuthStyle: broker.AuthBody, RequiredScope: "api"})
	conn := ccConn(srv.URL + "/token")
	conn.AuthStyle = broker.AuthBody
	conn.Scopes = []string{"api", "read"}
	conn.Params = map[string]string{"audience": "https://aud.example"}
	conn.ClientID = clientID

	// The client id comes from the connection when the credentials have none.
	tok, err := newClient(oauth.Options{}).Token(context.Background(), conn, broker.Credentials{ClientSecret: clientSecret})
	if err != nil {
		t.Fatal(err)
	}
	if !p.ValidAccessToken(tok.AccessToken.Reveal()) || !tok.RefreshToken.IsZero() {
		t.Error("unexpected token")
	}
	req, _ := p.LastRequest()
	f := req.Form
	if f.Get("grant_type") != "client_credentials" || f.Get("scope") != "api read" ||
		f.Get("audience") != "https://aud.example" || f.Get("client_id") != clientID || f.Has("refresh_token") {
		t.Errorf("provider saw %v", f)
	}
	if s := p.Stats(); s.ClientCredentialsGrants != 1 || s.Issued != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func TestMissingExpiresInUsesDefaultLifetime(t *testing.T) {
	p, srv := startProvider(t, testprovider.Config{OmitExpiresIn: true})
	conn := refreshConn(srv.URL+"/token", broker.AuthBasic, false, 0)
	conn.DefaultLifetime = 2 * time.Hour
	tok, err := newClient(oauth.Options{}).Token(context.Background(), conn, creds(p.IssueRefreshToken()))
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Expiry.Equal(fixedNow.Add(2 * time.Hour)) {
		t.Errorf("expiry = %v, want DefaultLifetime after issue", tok.Expiry.Sub(fixedNow))
	}
}

func TestExpiresIn(t *testing.T) {
	tests := []struct {
		name      string
		expiresIn string // JSON value, "" for absent
		def       time.Duration
		want      time.Duration // 0: malformed
	}{
		{"absent uses DefaultLifetime", "", 2 * time.Hour, 2 * time.Hour},
		{"absent without DefaultLifetime", "", 0, time.Hour},
		{"null", "null", 0, time.Hour},
		{"number", "1800", 0, 30 * time.Minute},
		{"numeric string", `"3600"`, 0, time.Hour},
		{"zero", "0", 0, 0},
		{"negative", "-5", 0, 0},
		{"not a number", `"soon"`, 0, 0},
		{"over a year", "40000000", 0, 0},
		{"fraction", "3600.5", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"access_token":"at-1"`
			if tt.expiresIn != "" {
				body += `,"expires_in":` + tt.expiresIn
			}
			tokenURL, n := scripted(t, jsonReply(200, body+"}"))
			conn := ccConn(tokenURL)
			conn.DefaultLifetime = tt.def
			tok, err := newClient(oauth.Options{}).Token(context.Background(), conn, creds(""))
			if tt.want != 0 {
				if err != nil {
					t.Fatal(err)
				}
				if got := tok.Expiry.Sub(tok.IssuedAt); got != tt.want || tok.TokenType != "Bearer" {
					t.Errorf("lifetime = %v type %q, want %v Bearer", got, tok.TokenType, tt.want)
				}
				return
			}
			pe := asProviderError(t, err)
			if pe.Permanent || !errors.Is(err, oauth.ErrMalformedResponse) || pe.StatusCode != 200 {
				t.Errorf("error = %+v, want a transient malformed-response error", pe)
			}
			if n.Load() != oauth.DefaultMaxAttempts {
				t.Errorf("requests = %d; a malformed answer to client_credentials is retried", n.Load())
			}
		})
	}
}

func TestFormEncodedResponse(t *testing.T) {
	tokenURL, _ := scripted(t, reply{status: 200, contentType: "application/x-www-form-urlencoded",
		body: "access_token=at-1&token_type=bearer&expires_in=60"})
	tok, err := newClient(oauth.Options{}).Token(context.Background(), ccConn(tokenURL), creds(""))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Expiry.Sub(tok.IssuedAt) != time.Minute || tok.TokenType != "bearer" {
		t.Errorf("lifetime %v type %q", tok.Expiry.Sub(tok.IssuedAt), tok.TokenType)
	}
}

// connKind is how a connection treats a refresh token that may have been
// redeemed.
type connKind int

const (
	strictRotating connKind = iota // rotating, no grace: only certainly-unprocessed failures are retried
	nonRotating
	graceRotating
	clientCreds
)

func (k connKind) String() string {
	return [...]string{"rotating", "non-rotating", "rotating with grace", "client_credentials"}[k]
}

func TestFaults(t *testing.T) {
	type want struct {
		ok        bool
		requests  int
		permanent bool
		status    int
		code      string
	}
	tests := []struct {
		fault testprovider.Fault
		kind  connKind
		want  want
	}{
		{testprovider.Fault{Kind: testprovider.FaultServerError}, strictRotating, want{requests: 1, status: 500, code: "server_error"}},
		{testprovider.Fault{Kind: testprovider.FaultServerError}, nonRotating, want{ok: true, requests: 2}},
		{testprovider.Fault{Kind: testprovider.FaultServerError}, graceRotating, want{ok: true, requests: 2}},
		{testprovider.Fault{Kind: testprovider.FaultServerError}, clientCreds, want{ok: true, requests: 2}},
		{testprovider.Fault{Kind: testprovider.FaultUnavailable}, strictRotating, want{requests: 1, status: 503, code: "temporarily_unavailable"}},
		{testprovider.Fault{Kind: testprovider.FaultUnavailable}, nonRotating, want{ok: true, requests: 2}},
		{testprovider.Fault{Kind: testprovider.FaultRateLimited}, strictRotating, want{ok: true, requests: 2}},
		{testprovider.Fault{Kind: testprovider.FaultRateLimited}, clientCreds, want{ok: true, requests: 2}},
		{testprovider.Fault{Kind: testprovider.FaultInvalidGrant}, strictRotating, want{requests: 1, permanent: true, status: 400, code: "invalid_grant"}},
		{testprovider.Fault{Kind: testprovider.FaultInvalidGrant}, nonRotating, want{requests: 1, permanent: true, status: 400, code: "invalid_grant"}},
		{testprovider.Fault{Kind: testprovider.FaultInvalidClient}, clientCreds, want{requests: 1, permanent: true, status: 401, code: "invalid_client"}},
		{testprovider.Fault{Kind: testprovider.FaultErrorIn200}, nonRotating, want{requests: 1, permanent: true, status: 200, code: "invalid_grant"}},
		{testprovider.Fault{Kind: testprovider.FaultHTML}, strictRotating, want{requests: 1, status: 200}},
		{testprovider.Fault{Kind: testprovider.FaultHTML}, nonRotating, want{ok: true, requests: 2}},
		{testprovider.Fault{Kind: testprovider.FaultNoAccessToken}, strictRotating, want{requests: 1, status: 200}},
		{testprovider.Fault{Kind: testprovider.FaultNoAccessToken}, clientCreds, want{ok: true, requests: 2}},
		{testprovider.Fault{Kind: testprovider.FaultSlow, Delay: time.Hour}, strictRotating, want{requests: 1}},
		{testprovider.Fault{Kind: testprovider.FaultSlow, Delay: time.Hour}, nonRotating, want{ok: true, requests: 2}},
		{testprovider.Fault{Kind: testprovider.FaultSlow, Delay: 10 * time.Millisecond}, strictRotating, want{ok: true, requests: 1}},
		{testprovider.Fault{Kind: testprovider.FaultProcessedButLost}, strictRotating, want{requests: 1}},
		{testprovider.Fault{Kind: testprovider.FaultProcessedButLost}, nonRotating, want{ok: true, requests: 2}},
		{testprovider.Fault{Kind: testprovider.FaultProcessedButLost}, graceRotating, want{ok: true, requests: 2}},
		{testprovider.Fault{Kind: testprovider.FaultProcessedButLost}, clientCreds, want{ok: true, requests: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.fault.Kind.String()+"/"+tt.kind.String(), func(t *testing.T) {
			cfg := testprovider.Config{Rotate: tt.kind == strictRotating || tt.kind == graceRotating}
			if tt.kind == graceRotating {
				cfg.ReuseGrace = 30 * time.Minute
			}
			p, srv := startProvider(t, cfg)
			rt := p.IssueRefreshToken()
			conn := refreshConn(srv.URL+"/token", broker.AuthBasic, cfg.Rotate, cfg.ReuseGrace)
			if tt.kind == clientCreds {
				conn = ccConn(srv.URL + "/token")
			}
			p.InjectFault(tt.fault)

			c := newClient(oauth.Options{AttemptTimeout: 100 * time.Millisecond})
			tok, err := c.Token(context.Background(), conn, creds(rt))

			s := p.Stats()
			if s.TokenRequests != tt.want.requests {
				t.Errorf("token requests = %d, want %d", s.TokenRequests, tt.want.requests)
			}
			if s.ReuseDetected != 0 || s.ChainsRevoked != 0 {
				t.Errorf("stats = %+v: a refresh token was reused", s)
			}
			if tt.want.ok {
				if err != nil {
					t.Fatalf("Token: %v", err)
				}
				if !p.ValidAccessToken(tok.AccessToken.Reveal()) {
					t.Error("access token not valid at the provider")
				}
				if cur, _ := p.CurrentRefreshToken(rt); cfg.Rotate && tok.RefreshToken.Reveal() != cur {
					t.Error("result does not carry the chain's current refresh token")
				}
				return
			}
			pe := asProviderError(t, err)
			if pe.Permanent != tt.want.permanent || pe.StatusCode != tt.want.status || pe.Code != tt.want.code {
				t.Errorf("error = status %d code %q permanent %v, want %+v", pe.StatusCode, pe.Code, pe.Permanent, tt.want)
			}
			if pe.Description == "" && pe.Code == "" {
				t.Error("error says nothing about what happened")
			}
			if tt.fault.Kind == testprovider.FaultHTML && !strings.Contains(pe.Description, "text/html") {
				t.Errorf("description %q does not name the content type", pe.Description)
			}
		})
	}
}

func TestRetriesAreBounded(t *testing.T) {
	p, srv := startProvider(t, testprovider.Config{})
	for range 5 {
		p.InjectFault(testprovider.Fault{Kind: testprovider.FaultServerError})
	}
	_, err := newClient(oauth.Options{MaxAttempts: 4}).Token(context.Background(), ccConn(srv.URL+"/token"), creds(""))
	pe := asProviderError(t, err)
	if pe.StatusCode != 500 || pe.Permanent {
		t.Errorf("error = %+v", pe)
	}
	if n := p.Stats().TokenRequests; n != 4 {
		t.Errorf("token requests = %d, want MaxAttempts = 4", n)
	}
}

// TestRetryAfter: how Retry-After is read. How it is waited out is
// TestRetryAfterOnTheClock's, on synctest's clock.
func TestRetryAfter(t *testing.T) {
	t.Run("HTTP date", func(t *testing.T) {
		tokenURL, n := scripted(t, reply{status: 503, contentType: "text/html",
			header: map[string]string{"Retry-After": fixedNow.Add(2 * time.Hour).Format(http.TimeFormat)}, body: "<h1>down</h1>"})
		_, err := newClient(oauth.Options{}).Token(context.Background(), ccConn(tokenURL), creds(""))
		pe := asProviderError(t, err)
		if pe.RetryAfter != 2*time.Hour || pe.StatusCode != 503 {
			t.Errorf("error = %+v, want RetryAfter 2h", pe)
		}
		if !strings.Contains(pe.Description, "text/html") {
			t.Errorf("description %q does not say what came back", pe.Description)
		}
		if n.Load() != 1 {
			t.Errorf("requests = %d, want 1", n.Load())
		}
	})
}

func TestClassification(t *testing.T) {
	tests := []struct {
		name      string
		reply     reply
		permanent bool
		requests  int64 // with MaxAttempts 3 on a client_credentials connection
	}{
		{"400 invalid_grant", jsonReply(400, `{"error":"invalid_grant","error_description":"AADSTS70008: expired"}`), true, 1},
		{"401 invalid_client", jsonReply(401, `{"error":"invalid_client"}`), true, 1},
		{"403 unauthorized_client", jsonReply(403, `{"error":"unauthorized_client"}`), true, 1},
		{"400 invalid_scope", jsonReply(400, `{"error":"invalid_scope"}`), true, 1},
		{"400 invalid_request", jsonReply(400, `{"error":"invalid_request"}`), true, 1},
		{"400 unsupported_grant_type", jsonReply(400, `{"error":"unsupported_grant_type"}`), true, 1},
		{"400 unknown code", jsonReply(400, `{"error":"weird_thing"}`), false, 1},
		{"400 access_denied", jsonReply(400, `{"error":"access_denied"}`), true, 1},
		{"400 interaction_required", jsonReply(400, `{"error":"interaction_required"}`), true, 1},
		{"400 AADSTS code under an unknown error", jsonReply(400, `{"error":"weird_thing","error_description":"AADSTS700082: The refresh token has expired due to inactivity.","error_codes":[700082]}`), true, 1},
		{"400 temporarily_unavailable", jsonReply(400, `{"error":"temporarily_unavailable"}`), false, 3},
		{"500 invalid_grant", jsonReply(500, `{"error":"invalid_grant"}`), false, 3},
		{"502 html", reply{status: 502, contentType: "text/html", body: "<h1>bad gateway</h1>"}, false, 3},
		{"408", reply{status: 408}, false, 3},
		{"404 html", reply{status: 404, contentType: "text/html", body: "<h1>not found</h1>"}, false, 1},
		{"401 without a code", reply{status: 401, contentType: "text/plain", body: "nope"}, false, 1},
		{"200 unknown error", jsonReply(200, `{"error":"weird"}`), false, 3},
		{"200 not JSON", reply{status: 200, contentType: "application/json", body: "{not json"}, false, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tokenURL, n := scripted(t, tt.reply)
			_, err := newClient(oauth.Options{}).Token(context.Background(), ccConn(tokenURL), creds(""))
			pe := asProviderError(t, err)
			if pe.Permanent != tt.permanent || pe.StatusCode != tt.reply.status {
				t.Errorf("error = %+v, want status %d permanent %v", pe, tt.reply.status, tt.permanent)
			}
			if n.Load() != tt.requests {
				t.Errorf("requests = %d, want %d", n.Load(), tt.requests)
			}
			if pe.Code == "" && pe.Description == "" {
				t.Error("error says nothing about what happened")
			}
		})
	}
}

func TestDescriptionIsSanitised(t *testing.T) {
	tests := []struct {
		name string
		desc string // JSON string contents
		want func(string) bool
	}{
		{"trimmed", strings.Repeat("a", 1000), func(s string) bool {
			return utf8.RuneCountInString(s) == 301 && strings.HasSuffix(s, "…")
		}},
		{"control characters", `line1\nline2\u001b[31m\u0007end`, func(s string) bool { return s == "line1 line2[31mend" }},
		{"bidi override", "abc\u202edef", func(s string) bool { return s == "abcdef" }},
		{"invalid UTF-8", "ok\xff\xfe", func(s string) bool { return utf8.ValidString(s) && strings.HasPrefix(s, "ok") }},
		{"echoed secrets", "refresh token rt-secret-value for client " + clientSecret + " is invalid", func(s string) bool {
			return s == "refresh token [redacted] for client [redacted] is invalid"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tokenURL, _ := scripted(t, jsonReply(400, `{"error":"invalid_grant","error_description":"`+tt.desc+`"}`))
			_, err := newClient(oauth.Options{}).Token(context.Background(), refreshConn(tokenURL, broker.AuthBasic, true, 0), creds("rt-secret-value"))
			pe := asProviderError(t, err)
			if !tt.want(pe.Description) {
				t.Errorf("description = %q", pe.Description)
			}
			for _, r := range pe.Description {
				if unicode.IsControl(r) {
					t.Errorf("description keeps control character %U", r)
				}
			}
		})
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// countingTransport counts the requests handed to the network.
func countingTransport(n *atomic.Int64) http.RoundTripper {
	base := http.DefaultTransport.(*http.Transport).Clone()
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		n.Add(1)
		return base.RoundTrip(r)
	})
}

func TestConnectionRefusedIsRetriedEvenWhenRotating(t *testing.T) {
	var n atomic.Int64
	c := newClient(oauth.Options{Transport: countingTransport(&n)})
	_, err := c.Token(context.Background(), refreshConn("http://"+freeAddr(t)+"/token", broker.AuthBasic, true, 0), creds("rt-1"))
	pe := asProviderError(t, err)
	var op *net.OpError
	if pe.StatusCode != 0 || pe.Permanent || !errors.As(err, &op) || op.Op != "dial" {
		t.Errorf("error = %+v, want a transient dial error", pe)
	}
	if n.Load() != oauth.DefaultMaxAttempts {
		t.Errorf("attempts = %d, want %d: a refused connection never reached the provider", n.Load(), oauth.DefaultMaxAttempts)
	}
}

func TestResponseSizeLimit(t *testing.T) {
	// body returns a token response padded to exactly size bytes.
	body := func(size int) string {
		head := `{"access_token":"at-1","expires_in":60,"pad":"`
		return head + strings.Repeat("x", size-len(head)-2) + `"}`
	}
	tests := []struct {
		name   string
		limit  int64
		size   int
		wantOK bool
	}{
		{"at the limit", 512, 512, true},
		{"one byte over", 512, 513, false},
		{"default limit", 0, 2 << 20, false},
		{"limits above 1 MiB are capped", 8 << 20, (1 << 20) + 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tokenURL, _ := scripted(t, jsonReply(200, body(tt.size)))
			_, err := newClient(oauth.Options{MaxResponseBytes: tt.limit, MaxAttempts: 1}).Token(context.Background(), ccConn(tokenURL), creds(""))
			if tt.wantOK {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			pe := asProviderError(t, err)
			if !errors.Is(err, oauth.ErrResponseTooLarge) || pe.Permanent || !strings.Contains(pe.Description, "bytes") {
				t.Errorf("error = %+v, want a clear too-large error", pe)
			}
		})
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	p, srv := startProvider(t, testprovider.Config{})
	var hits atomic.Int64
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, srv.URL+"/token", http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()

	_, err := newClient(oauth.Options{}).Token(context.Background(), ccConn(redirector.URL+"/token"), creds(""))
	pe := asProviderError(t, err)
	if pe.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(pe.Description, "redirect") {
		t.Errorf("error = %+v", pe)
	}
	if hits.Load() != 1 || p.Stats().TokenRequests != 0 {
		t.Errorf("redirector hits = %d, provider requests = %d; want 1 and 0", hits.Load(), p.Stats().TokenRequests)
	}
}

// cannedTransport answers every request with a valid token response, without
// a network, and counts requests.
func cannedTransport(n *atomic.Int64) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		n.Add(1)
		return &http.Response{
			StatusCode: 200, Request: r,
			Header: http.Header{"Content-Type": {"application/json"}},
			Body:   io.NopCloser(strings.NewReader(`{"access_token":"at","token_type":"Bearer","expires_in":60}`)),
		}, nil
	})
}

func TestTokenURL(t *testing.T) {
	tests := []struct {
		url string
		ok  bool
	}{
		{"https://login.example.com/oauth2/token", true},
		{"http://127.0.0.1:9/token", true},
		{"http://127.8.9.10/token", true},
		{"http://localhost:9/token", true},
		{"http://[::1]:9/token", true},
		{"http://login.example.com/token", false},
		{"http://localhost.example.com/token", false},
		{"http://10.0.0.1/token", false},
		{"ftp://127.0.0.1/token", false},
		{"/token", false},
		{"https://user:pw@login.example.com/token", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			var n atomic.Int64
			_, err := newClient(oauth.Options{Transport: cannedTransport(&n)}).Token(context.Background(), ccConn(tt.url), creds(""))
			if tt.ok {
				if err != nil || n.Load() != 1 {
					t.Errorf("err = %v, requests = %d; want success", err, n.Load())
				}
				return
			}
			pe := asProviderError(t, err)
			if !errors.Is(err, oauth.ErrInvalidConnection) || !pe.Permanent || n.Load() != 0 {
				t.Errorf("err = %v, requests = %d; want ErrInvalidConnection before any request", err, n.Load())
			}
		})
	}
}

func TestInvalidConnection(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*broker.Connection, *broker.Credentials)
	}{
		{"no auth style", func(c *broker.Connection, _ *broker.Credentials) { c.AuthStyle = "" }},
		{"unknown auth style", func(c *broker.Connection, _ *broker.Credentials) { c.AuthStyle = "auto" }},
		{"no client id", func(_ *broker.Connection, cr *broker.Credentials) { cr.ClientID = "" }},
		{"no refresh token", func(_ *broker.Connection, cr *broker.Credentials) { cr.RefreshToken = "" }},
		{"unsupported grant", func(c *broker.Connection, _ *broker.Credentials) { c.Grant = "password" }},
		{"grant_type in params", func(c *broker.Connection, _ *broker.Credentials) { c.Params = map[string]string{"grant_type": "x"} }},
		{"scope in params", func(c *broker.Connection, _ *broker.Credentials) { c.Params = map[string]string{"scope": "x"} }},
		{"client_secret in params", func(c *broker.Connection, _ *broker.Credentials) { c.Params = map[string]string{"client_secret": "x"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int64
			conn := refreshConn("https://login.example.com/token", broker.AuthBasic, true, 0)
			cred := creds("rt-1")
			tt.modify(conn, &cred)
			_, err := newClient(oauth.Options{Transport: cannedTransport(&n)}).Token(context.Background(), conn, cred)
			pe := asProviderError(t, err)
			if !errors.Is(err, oauth.ErrInvalidConnection) || !pe.Permanent || pe.Description == "" || n.Load() != 0 {
				t.Errorf("err = %v, requests = %d; want ErrInvalidConnection before any request", err, n.Load())
			}
		})
	}
}

func TestCancelledContext(t *testing.T) {
	p, srv := startProvider(t, testprovider.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := newClient(oauth.Options{}).Token(ctx, ccConn(srv.URL+"/token"), creds(""))
	asProviderError(t, err)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want it to wrap context.Canceled", err)
	}
	if n := p.Stats().TokenRequests; n != 0 {
		t.Errorf("token requests = %d, want 0", n)
	}
}

func TestConcurrentUse(t *testing.T) {
	p, srv := startProvider(t, testprovider.Config{})
	c := newClient(oauth.Options{})
	conn := ccConn(srv.URL + "/token")
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			if _, err := c.Token(context.Background(), conn, creds("")); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := p.Stats(); s.TokenRequests != 16 || s.Issued != 16 {
		t.Errorf("stats = %+v, want 16 requests and tokens", s)
	}
}

// TestNoSecretsInLogsOrErrors runs successes and every kind of failure with
// debug logging on, and checks that no secret value shows up in the logs or
// in any rendering of the errors.
func TestNoSecretsInLogsOrErrors(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newClient(oauth.Options{Logger: logger, AttemptTimeout: 100 * time.Millisecond})
	p, srv := startProvider(t, testprovider.Config{Rotate: true})

	var secrets []string
	var rendered strings.Builder
	record := func(tok *broker.Token, err error) {
		if tok != nil {
			secrets = append(secrets, tok.AccessToken.Reveal(), tok.RefreshToken.Reveal())
			fmt.Fprintf(&rendered, "%v %+v %#v\n", tok, tok, tok)
		}
		if err != nil {
			fmt.Fprintf(&rendered, "%v %+v %#v %s\n", err, err, err, err.Error())
			if pe := (*broker.ProviderError)(nil); errors.As(err, &pe) {
				rendered.WriteString(pe.Description + pe.Code + "\n")
			}
		}
	}

	rt := p.IssueRefreshToken()
	secrets = append(secrets, clientSecret, rt)
	conn := refreshConn(srv.URL+"/token", broker.AuthBasic, true, 0)
	for range 2 { // two successful rotations
		tok, err := c.Token(context.Background(), conn, creds(rt))
		record(tok, err)
		if err != nil {
			t.Fatal(err)
		}
		rt = tok.RefreshToken.Reveal()
	}
	for _, k := range []testprovider.FaultKind{
		testprovider.FaultServerError, testprovider.FaultHTML, testprovider.FaultNoAccessToken,
		testprovider.FaultInvalidGrant, testprovider.FaultErrorIn200, testprovider.FaultProcessedButLost,
	} {
		p.InjectFault(testprovider.Fault{Kind: k, Delay: time.Hour})
		tok, err := c.Token(context.Background(), conn, creds(rt))
		record(tok, err)
		if cur, ok := p.CurrentRefreshToken(rt); ok && cur != rt {
			secrets = append(secrets, cur)
			rt = cur
		}
	}
	// Wrong auth style: the provider's invalid_client answer.
	tok, err := c.Token(context.Background(), refreshConn(srv.URL+"/token", broker.AuthBody, true, 0), creds(rt))
	record(tok, err)
	// A provider that echoes the credentials back in its error.
	echo, _ := scripted(t, jsonReply(400, `{"error":"invalid_grant","error_description":"token `+rt+` / secret `+clientSecret+`"}`))
	tok, err = c.Token(context.Background(), refreshConn(echo, broker.AuthBasic, true, 0), creds(rt))
	record(tok, err)
	// A provider that answers a success with the tokens in an unusable body.
	bad, _ := scripted(t, jsonReply(200, `{"access_token":"at-in-bad-body","refresh_token":"rt-in-bad-body","expires_in":0}`))
	secrets = append(secrets, "at-in-bad-body", "rt-in-bad-body")
	tok, err = c.Token(context.Background(), ccConn(bad), creds(""))
	record(tok, err)

	if logs.Len() == 0 || !strings.Contains(logs.String(), "token request failed") {
		t.Fatal("the run logged nothing; the check would prove nothing")
	}
	out := logs.String() + rendered.String()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(out, s) {
			t.Errorf("a secret value (%d chars) appears in logs or errors", len(s))
		}
		// Basic auth sends the secret form-encoded; that form must not leak either.
		if enc := strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D", "!", "%21").Replace(s); enc != s && strings.Contains(out, enc) {
			t.Errorf("an encoded secret value appears in logs or errors")
		}
	}
}

// A refresh token in an answer the client cannot use is the only live one
// on a rotating provider: it must reach the broker, and no further attempt
// may be made with the redeemed token.
func TestRefreshTokenInUnusableAnswerIsKept(t *testing.T) {
	tests := []struct {
		name      string
		replies   []reply
		grace     time.Duration
		wantCalls int64
	}{
		{"expires_in of the wrong type (x/oauth2 refuses the body)",
			[]reply{jsonReply(200, `{"access_token":"at","refresh_token":"rt-new","expires_in":"3600s"}`)}, 0, 1},
		{"expires_in zero, then the retries meet an outage",
			[]reply{jsonReply(200, `{"access_token":"at","refresh_token":"rt-new","expires_in":0}`), jsonReply(503, `{"error":"temporarily_unavailable"}`)}, 30 * time.Minute, 1},
		{"form-encoded with a bad expires_in",
			[]reply{{status: 200, contentType: "application/x-www-form-urlencoded", body: "access_token=at&refresh_token=rt-new&expires_in=-4"}}, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url, n := scripted(t, tt.replies...)
			_, err := newClient(oauth.Options{}).Token(context.Background(), refreshConn(url, broker.AuthBasic, true, tt.grace), creds("rt-old"))
			pe := asProviderError(t, err)
			if pe.IssuedRefreshToken.Reveal() != "rt-new" {
				t.Fatalf("IssuedRefreshToken not kept: %v", pe)
			}
			if n.Load() != tt.wantCalls {
				t.Fatalf("%d requests, want %d", n.Load(), tt.wantCalls)
			}
		})
	}
}

// TestTransportErrorsShowNoQuery: a token request that gets no response
// reports the token URL as scheme, host and path (issue 16 §6), never its
// query, whatever the grant; the *url.Error and the dial error beneath stay
// reachable with errors.As.
func TestTransportErrorsShowNoQuery(t *testing.T) {
	base := "http://" + freeAddr(t) + "/tenant-a/token"
	tokenURL := base + "?tenant=query-marker-x"
	tests := []struct {
		name string
		call func(c *oauth.Client) error
	}{
		{"refresh_token", func(c *oauth.Client) error {
			_, err := c.Token(context.Background(), refreshConn(tokenURL, broker.AuthBasic, true, 0), creds("rt-1"))
			return err
		}},
		{"client_credentials", func(c *oauth.Client) error {
			_, err := c.Token(context.Background(), ccConn(tokenURL), creds(""))
			return err
		}},
		{"authorization_code", func(c *oauth.Client) error {
			_, err := c.Exchange(context.Background(), refreshConn(tokenURL, broker.AuthBody, false, 0), creds(""), "code-1", "verifier-1", "http://127.0.0.1:1/callback")
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(newClient(oauth.Options{}))
			if err == nil {
				t.Fatal("no error from a closed port")
			}
			if s := err.Error(); strings.Contains(s, "query-marker-x") || strings.Contains(s, "?") || !strings.Contains(s, base) {
				t.Errorf("error = %q; want the token URL %s without its query", s, base)
			}
			var ue *url.Error
			var op *net.OpError
			if !errors.As(err, &ue) || ue.URL != base || !errors.As(err, &op) || op.Op != "dial" {
				t.Errorf("error %v: want a *url.Error for %s over the dial error", err, base)
			}
		})
	}
}
