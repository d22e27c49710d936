package functions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

const (
	consentClientID     = "client-1"
	consentClientSecret = "s3cr+t/=!"
)

// storeBroker is the broker with the accessor the consent routes need.
type storeBroker struct {
	*broker.Broker
	store broker.SecretStore
}

func (b storeBroker) Store() broker.SecretStore { return b.store }

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// consentWorld is a function app with the consent routes, a real broker on a
// local store, and the test provider with its consent page.
type consentWorld struct {
	t        *testing.T
	provider *testprovider.Provider
	psrv     *httptest.Server
	srv      *httptest.Server
	store    *local.Store
	broker   *broker.Broker
	routes   *consentRoutes
	conn     broker.Connection
	logs     *lockedBuffer
	clock    struct {
		sync.Mutex
		now time.Time
	}
}

func newConsentWorld(t *testing.T) *consentWorld { return newConsentWorldWith(t, nil) }

// newConsentWorldWith is newConsentWorld with the xero connection changed
// by change first.
func newConsentWorldWith(t *testing.T, change func(*broker.Connection)) *consentWorld {
	t.Helper()
	w := &consentWorld{t: t, logs: &lockedBuffer{}}
	w.clock.now = time.Now()
	w.provider = testprovider.New(testprovider.Config{ClientID: consentClientID, ClientSecret: consentClientSecret, AuthStyle: broker.AuthBasic, Rotate: true})
	w.psrv = httptest.NewServer(w.provider)
	t.Cleanup(w.psrv.Close)
	dir := t.TempDir()
	var err error
	if w.store, err = local.NewStore(dir); err != nil {
		t.Fatal(err)
	}
	locker, err := local.NewLocker(dir, local.LockerOptions{PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w.conn = broker.Connection{Name: "xero", Provider: "test", Grant: broker.GrantRefreshToken, TokenURL: w.psrv.URL + "/token",
		AuthStyle: broker.AuthBasic, Scopes: []string{"api"}, ClientID: consentClientID, Secrets: broker.DefaultSecretNames("xero"),
		Rotating: true, RefreshBefore: 5 * time.Minute, DefaultLifetime: time.Hour}
	if change != nil {
		change(&w.conn)
	}
	cc := broker.Connection{Name: "ilevel", Provider: "test", Grant: broker.GrantClientCredentials, TokenURL: w.psrv.URL + "/token",
		AuthStyle: broker.AuthBasic, ClientID: consentClientID, Secrets: broker.DefaultSecretNames("ilevel"), DefaultLifetime: time.Hour}
	nosecret := w.conn
	nosecret.Name, nosecret.Secrets = "nosecret", broker.DefaultSecretNames("nosecret")
	w.set(w.conn.Secrets.ClientSecret, consentClientSecret)
	log := slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w.broker, err = broker.New(broker.Options{
		Store: w.store, Locker: locker, Connections: []broker.Connection{w.conn, cc, nosecret}, Logger: log,
		Grant: oauth.New(oauth.Options{Timeout: 5 * time.Second, AttemptTimeout: 2 * time.Second}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.broker.Close(context.Background()) })
	w.routes = &consentRoutes{
		b: storeBroker{w.broker, w.store}, log: log, now: w.now,
		authorizationURL: func(broker.Connection) (string, error) { return w.psrv.URL + "/authorize", nil },
		keys:             keySource(nil), limit: newAddrLimiter(), tickets: &usedTickets{},
	}
	mux := http.NewServeMux()
	w.routes.register(mux)
	w.srv = httptest.NewServer(mux)
	t.Cleanup(w.srv.Close)
	w.provider.AllowRedirectURIs(w.srv.URL + callbackPath)
	return w
}

func (w *consentWorld) now() time.Time {
	w.clock.Lock()
	defer w.clock.Unlock()
	return w.clock.now
}

func (w *consentWorld) advance(d time.Duration) {
	w.clock.Lock()
	defer w.clock.Unlock()
	w.clock.now = w.clock.now.Add(d)
}

func (w *consentWorld) set(name, value string) {
	w.t.Helper()
	if err := w.store.Set(context.Background(), name, broker.StoredSecret{Value: broker.Secret(value)}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *consentWorld) get(name string) string {
	w.t.Helper()
	s, err := w.store.Get(context.Background(), name)
	if errors.Is(err, broker.ErrSecretNotFound) {
		return ""
	}
	if err != nil {
		w.t.Fatal(err)
	}
	return s.Value.Reveal()
}

// browserTransport sends what a browser sends: Accept text/html.
type browserTransport struct{ base http.RoundTripper }

func (b browserTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Accept", "text/html,application/xhtml+xml")
	return b.base.RoundTrip(r)
}

// browser is an HTTP client that keeps cookies and asks for pages.
func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Transport: browserTransport{http.DefaultTransport}, Timeout: 10 * time.Second}
}

type page struct {
	status int
	body   string
	url    *url.URL
}

// read reads the answer to a request.
func (w *consentWorld) read(resp *http.Response, err error) page {
	w.t.Helper()
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return page{status: resp.StatusCode, body: string(b), url: resp.Request.URL}
}

// checkNoSecretIn fails if text holds a token, the code, the state's
// random part or the verifier.
func (w *consentWorld) checkNoSecretIn(what, text string, extra ...string) {
	w.t.Helper()
	for _, s := range append(extra, w.get(w.conn.Secrets.RefreshToken), w.get(w.conn.Secrets.AccessToken), consentClientSecret) {
		if s != "" && strings.Contains(text, s) {
			w.t.Fatalf("%s shows a secret (%d characters)", what, len(s))
		}
	}
}

func TestConsentReauthorizesAfterInvalidGrant(t *testing.T) {
	w := newConsentWorld(t)
	ctx := context.Background()
	w.set(w.conn.Secrets.RefreshToken, "rt-revoked-long-ago")
	_, err := w.broker.Token(ctx, "xero", 0)
	var be *broker.Error
	if !errors.As(err, &be) || be.Code != broker.CodeRejected {
		t.Fatalf("before consent: %v; want the grant rejected", err)
	}

	// The start route: a redirect to the provider, with PKCE and a state
	// bound to this browser.
	c := browser(t)
	noFollow := *c
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noFollow.Get(w.srv.URL + "/api/consent/xero?scope=accounting")
	start := w.read(resp, err)
	loc, _ := url.Parse(resp.Header.Get("Location"))
	q := loc.Query()
	if start.status != http.StatusFound || !strings.HasPrefix(loc.String(), w.psrv.URL+"/authorize?") ||
		q.Get("code_challenge_method") != "S256" || q.Get("redirect_uri") != w.srv.URL+callbackPath || q.Get("scope") != "api accounting" {
		t.Fatalf("start: %d Location %s", start.status, loc)
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == cookieName("xero") {
			cookie = ck
		}
	}
	if cookie == nil || cookie.Value != q.Get("state") || !cookie.HttpOnly || cookie.SameSite != http.SameSiteLaxMode || cookie.Path != callbackPath {
		t.Fatalf("cookie %+v; want the state, HttpOnly, SameSite=Lax, on the callback's path", cookie)
	}
	if w.get(consent.StateSecretName("xero")) == "" {
		t.Fatal("the pending authorization is not in the store")
	}

	// The provider's page, Allow, the callback.
	done := w.read(testprovider.Approve(ctx, c, loc.String()))
	if done.status != http.StatusOK || !strings.Contains(done.body, "Connection xero re-authorized") {
		t.Fatalf("callback: %d %s", done.status, done.body)
	}
	rt := w.get(w.conn.Secrets.RefreshToken)
	if cur, ok := w.provider.CurrentRefreshToken(rt); !ok || cur != rt {
		t.Fatal("the stored refresh token is not the provider's current one")
	}
	w.checkNoSecretIn("the page", done.body, done.url.Query().Get("code"), done.url.Query().Get("state"))
	w.checkNoSecretIn("the logs", w.logs.String(), done.url.Query().Get("code"), done.url.Query().Get("state"))

	// The broker serves from the new grant at once, and can refresh it.
	tok, err := w.broker.Token(ctx, "xero", 0)
	if err != nil || tok.Value.Reveal() != w.get(w.conn.Secrets.AccessToken) {
		t.Fatalf("after consent: %v; want the consented access token", err)
	}
	if _, err := w.broker.ForceRefresh(ctx, "xero"); err != nil {
		t.Fatalf("refresh with the consented refresh token: %v", err)
	}
	if s := w.provider.AuthorizationStats(); s.Consents != 1 || s.CodesRedeemed != 1 {
		t.Fatalf("provider saw %+v", s)
	}

	// The same redirect again, cookie and all: refused, nothing redeemed.
	replay, _ := http.NewRequest(http.MethodGet, done.url.String(), nil)
	replay.AddCookie(&http.Cookie{Name: cookieName("xero"), Value: done.url.Query().Get("state")})
	before := w.get(w.conn.Secrets.RefreshToken)
	r := w.read((&http.Client{}).Do(replay))
	var body errorBody
	if err := json.Unmarshal([]byte(r.body), &body); err != nil || r.status != http.StatusBadRequest || body.Error != "invalid_state" ||
		!strings.Contains(body.Message, "already used") {
		t.Fatalf("replay: %d %s; want 400 invalid_state, already used", r.status, r.body)
	}
	if w.get(w.conn.Secrets.RefreshToken) != before || w.provider.AuthorizationStats().CodesRefused != 0 {
		t.Fatal("the replay reached the store or the provider")
	}
}

func TestConsentCallbackRefusals(t *testing.T) {
	tests := []struct {
		name string
		// run finishes a consent of xero started in c somehow, and returns
		// the callback's answer.
		run        func(w *consentWorld, c *http.Client) page
		wantStatus int
		wantText   string
	}{
		{"provider denial", func(w *consentWorld, c *http.Client) page {
			return w.read(testprovider.Deny(context.Background(), c, w.srv.URL+"/api/consent/xero"))
		}, http.StatusBadRequest, "access_denied: The user denied the request"},
		{"another browser", func(w *consentWorld, c *http.Client) page {
			return w.finishElsewhere(c)
		}, http.StatusBadRequest, stateRefused},
		{"expired", func(w *consentWorld, c *http.Client) page {
			return w.finishAfter(c, func() { w.advance(consent.PendingTTL) })
		}, http.StatusBadRequest, stateRefused},
		{"superseded by a later start", func(w *consentWorld, c *http.Client) page {
			return w.finishAfter(c, func() {
				w.read(browser(w.t).Get(w.srv.URL + "/api/consent/xero"))
			})
		}, http.StatusBadRequest, stateRefused},
		{"wrong verifier", func(w *consentWorld, c *http.Client) page {
			return w.finishAfter(c, func() { w.swapVerifier() })
		}, http.StatusBadGateway, "code_verifier does not match"},
		{"client secret gone", func(w *consentWorld, c *http.Client) page {
			return w.finishAfter(c, func() { w.set(w.conn.Secrets.ClientSecret, "wrong") })
		}, http.StatusBadGateway, "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newConsentWorld(t)
			w.set(w.conn.Secrets.RefreshToken, "rt-before")
			got := tt.run(w, browser(t))
			if got.status != tt.wantStatus || !strings.Contains(got.body, tt.wantText) || !strings.Contains(got.body, "<h1") {
				t.Fatalf("got %d %s; want a %d page saying %q", got.status, got.body, tt.wantStatus, tt.wantText)
			}
			if rt := w.get(w.conn.Secrets.RefreshToken); rt != "rt-before" || w.get(w.conn.Secrets.AccessToken) != "" {
				t.Fatal("a refused consent stored tokens")
			}
			if s := w.provider.Stats(); s.Issued != 0 {
				t.Fatalf("provider issued tokens: %+v", s)
			}
			w.checkNoSecretIn("the page", got.body, got.url.Query().Get("code"))
		})
	}
}

// stateRefused is in the one answer to every state the callback refuses.
const stateRefused = "not started here, has expired or was already used"

// consentCallback runs a consent of xero in c up to the provider's
// redirect back, which it returns without following.
func (w *consentWorld) consentCallback(c *http.Client) *url.URL {
	w.t.Helper()
	stop := *c
	var callback *url.URL
	stop.CheckRedirect = func(r *http.Request, _ []*http.Request) error {
		if r.URL.Path == callbackPath {
			callback = r.URL
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, err := testprovider.Approve(context.Background(), &stop, w.srv.URL+"/api/consent/xero")
	w.read(resp, err)
	if callback == nil {
		w.t.Fatal("the provider did not redirect to the callback")
	}
	return callback
}

// finishAfter runs the consent in c, does meanwhile, then follows the
// provider's redirect back.
func (w *consentWorld) finishAfter(c *http.Client, meanwhile func()) page {
	w.t.Helper()
	cb := w.consentCallback(c)
	meanwhile()
	return w.read(c.Get(cb.String()))
}

// finishElsewhere runs the consent in c and follows the redirect back in
// another browser.
func (w *consentWorld) finishElsewhere(c *http.Client) page {
	w.t.Helper()
	return w.read(browser(w.t).Get(w.consentCallback(c).String()))
}

// swapVerifier replaces the pending authorization's verifier, as if the
// code came from an authorization with another one.
func (w *consentWorld) swapVerifier() {
	w.t.Helper()
	name := consent.StateSecretName("xero")
	var rec map[string]any
	if err := json.Unmarshal([]byte(w.get(name)), &rec); err != nil {
		w.t.Fatal(err)
	}
	rec["verifier"] = consent.NewVerifier().Reveal()
	b, _ := json.Marshal(rec)
	exp, _ := time.Parse(time.RFC3339Nano, rec["expiry"].(string))
	if err := w.store.Set(context.Background(), name, broker.StoredSecret{Value: broker.Secret(b), ExpiresOn: exp}); err != nil {
		w.t.Fatal(err)
	}
}

// A redirect that reaches another browser claims nothing: the browser that
// started the consent still finishes it.
func TestConsentFinishesInTheBrowserThatStartedIt(t *testing.T) {
	w := newConsentWorld(t)
	c := browser(t)
	cb := w.consentCallback(c)
	if other := w.read(browser(t).Get(cb.String())); other.status != http.StatusBadRequest || w.get(w.conn.Secrets.RefreshToken) != "" {
		t.Fatalf("another browser: %d, or tokens stored", other.status)
	}
	if mine := w.read(c.Get(cb.String())); mine.status != http.StatusOK || w.get(w.conn.Secrets.RefreshToken) == "" {
		t.Fatalf("the starting browser: %d %s; want it re-authorized", mine.status, mine.body)
	}
}

func TestConsentStartRefusals(t *testing.T) {
	tests := []struct {
		name       string
		path       string
		change     func(w *consentWorld)
		wantStatus int
		wantError  string
	}{
		{"unknown connection", "/api/consent/nope", nil, http.StatusNotFound, "unknown_connection"},
		{"client credentials need no consent", "/api/consent/ilevel", nil, http.StatusBadRequest, "bad_request"},
		{"no client secret", "/api/consent/nosecret", nil, http.StatusFailedDependency, "provider_rejected"},
		{"a bad scope", "/api/consent/xero?scope=%22", nil, http.StatusBadRequest, "bad_request"},
		{"scope given twice", "/api/consent/xero?scope=a&scope=b", nil, http.StatusBadRequest, "bad_request"},
		{"no authorization URL", "/api/consent/xero", func(w *consentWorld) {
			w.routes.authorizationURL = consent.AuthorizationURL
		}, http.StatusBadRequest, "bad_request"},
		{"a broker without a store", "/api/consent/xero", func(w *consentWorld) {
			// Only the methods of Broker: no Store.
			w.routes.b = struct{ Broker }{w.broker}
		}, http.StatusNotImplemented, "not_implemented"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newConsentWorld(t)
			if tt.change != nil {
				tt.change(w)
			}
			resp, err := http.Get(w.srv.URL + tt.path)
			got := w.read(resp, err)
			var body errorBody
			if err := json.Unmarshal([]byte(got.body), &body); err != nil || got.status != tt.wantStatus || body.Error != tt.wantError || body.Remediation == "" {
				t.Fatalf("got %d %s; want %d %s with a remediation", got.status, got.body, tt.wantStatus, tt.wantError)
			}
			if w.get(consent.StateSecretName("xero")) != "" {
				t.Fatal("a refused start left a pending authorization")
			}
		})
	}
}

// A program (no Accept: text/html) gets the surface's JSON errors; a bad
// state reads nothing from the store.
func TestConsentCallbackAnswersProgramsInJSON(t *testing.T) {
	w := newConsentWorld(t)
	for _, q := range []string{"", "?state=xero", "?state=nope.ABCDEFGHIJKLMNOPQRSTUVWXYZ&code=c", "?state=xero.ABCDEFGHIJKLMNOPQRSTUVWXYZ&state=x"} {
		resp, err := http.Get(w.srv.URL + callbackPath + q)
		got := w.read(resp, err)
		var body errorBody
		if err := json.Unmarshal([]byte(got.body), &body); err != nil || got.status != http.StatusBadRequest || body.Error != "invalid_state" {
			t.Errorf("%q: got %d %s; want a JSON 400 invalid_state", q, got.status, got.body)
		}
	}
}

// TestConsentStartBehindTheProxyingHost: proxied by the host
// (enableProxyingHttpRequest), the start route sees Host 127.0.0.1:<port>
// and the public host in X-Forwarded-Host, as YARP's default transforms
// send them (here httputil.ReverseProxy with SetURL and SetXForwarded, which
// do the same); the redirect URI and the cookie are the public host's.
func TestConsentStartBehindTheProxyingHost(t *testing.T) {
	w := newConsentWorld(t)
	w.routes.forwardedByHost = true
	backend, err := url.Parse(w.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var seenHost, seenForwarded string
	front := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(backend)
		pr.SetXForwarded()
		seenHost, seenForwarded = pr.Out.Host, pr.Out.Header.Get("X-Forwarded-Host")
	}})
	t.Cleanup(front.Close)
	req, err := http.NewRequest(http.MethodGet, front.URL+"/api/consent/xero", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "myapp.azurewebsites.net"
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if seenHost != "" || seenForwarded != "myapp.azurewebsites.net" {
		t.Fatalf("the double sent Host %q (empty: the destination's) and X-Forwarded-Host %q", seenHost, seenForwarded)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("status %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if got := loc.Query().Get("redirect_uri"); got != "https://myapp.azurewebsites.net/api/consent/callback" {
		t.Errorf("redirect_uri %q", got)
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 || !cookies[0].Secure {
		t.Errorf("cookies %v; want one Secure cookie", cookies)
	}
}

func TestCallbackURL(t *testing.T) {
	tests := []struct {
		host            string
		forwardedHost   []string // X-Forwarded-Host values
		forwardedByHost bool
		want            string
		wantSecure      bool
		wantErr         bool
	}{
		{host: "myapp.azurewebsites.net", want: "https://myapp.azurewebsites.net/api/consent/callback", wantSecure: true},
		{host: "tokens.example.com:8443", want: "https://tokens.example.com:8443/api/consent/callback", wantSecure: true},
		{host: "127.0.0.1:8080", want: "http://127.0.0.1:8080/api/consent/callback"},
		{host: "localhost:7071", want: "http://localhost:7071/api/consent/callback"},
		{host: "[::1]:8080", want: "http://[::1]:8080/api/consent/callback"},
		{host: "", wantErr: true},
		{host: "evil.example.com/path", wantErr: true},
		{host: "user@evil.example.com", wantErr: true},
		// Proxied by the host (enableProxyingHttpRequest): Host is the
		// handler's loopback address, the public host is forwarded.
		{host: "127.0.0.1:41234", forwardedHost: []string{"myapp.azurewebsites.net"}, forwardedByHost: true,
			want: "https://myapp.azurewebsites.net/api/consent/callback", wantSecure: true},
		{host: "127.0.0.1:41234", forwardedHost: []string{"evil.example.com, myapp.azurewebsites.net"}, forwardedByHost: true,
			want: "https://myapp.azurewebsites.net/api/consent/callback", wantSecure: true},
		{host: "127.0.0.1:41234", forwardedHost: []string{"localhost:7071"}, forwardedByHost: true,
			want: "http://localhost:7071/api/consent/callback"},
		{host: "127.0.0.1:41234", forwardedHost: []string{"evil.example.com/x"}, forwardedByHost: true, wantErr: true},
		// Standalone: nothing in front sets the header, so it is not read.
		{host: "127.0.0.1:8080", forwardedHost: []string{"evil.example.com"},
			want: "http://127.0.0.1:8080/api/consent/callback"},
		// Forwarded by an older host: Host is the original one; a client's
		// X-Forwarded-Host is not read.
		{host: "myapp.azurewebsites.net", forwardedHost: []string{"evil.example.com"}, forwardedByHost: true,
			want: "https://myapp.azurewebsites.net/api/consent/callback", wantSecure: true},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/api/consent/xero", nil)
		r.Host = tt.host
		for _, v := range tt.forwardedHost {
			r.Header.Add("X-Forwarded-Host", v)
		}
		got, secure, err := callbackURL(r, tt.forwardedByHost)
		if (err != nil) != tt.wantErr || got != tt.want || secure != tt.wantSecure {
			t.Errorf("host %q, X-Forwarded-Host %q, forwardedByHost %v: got %q, %v, %v; want %q, %v",
				tt.host, tt.forwardedHost, tt.forwardedByHost, got, secure, err, tt.want, tt.wantSecure)
		}
	}
}
