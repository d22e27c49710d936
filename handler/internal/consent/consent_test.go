package consent_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

const (
	clientID     = "client-1"
	clientSecret = "s3cr+t/=!"
)

// world is a provider with the consent page, a redirect URI that records
// what it is sent, and a local store holding the client secret.
type world struct {
	provider *testprovider.Provider
	srv      *httptest.Server
	redirect string
	got      chan url.Values
	store    *local.Store
	conn     broker.Connection
}

func newWorld(t *testing.T, style broker.AuthStyle) *world {
	t.Helper()
	w := &world{got: make(chan url.Values, 4)}
	w.provider = testprovider.New(testprovider.Config{ClientID: clientID, ClientSecret: clientSecret, AuthStyle: style, Rotate: true})
	w.srv = httptest.NewServer(w.provider)
	t.Cleanup(w.srv.Close)
	cb := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.got <- r.URL.Query()
		_, _ = io.WriteString(rw, "ok")
	}))
	t.Cleanup(cb.Close)
	w.redirect = cb.URL + "/callback"
	w.provider.AllowRedirectURIs(w.redirect)
	store, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w.store = store
	w.conn = broker.Connection{
		Name: "demo", Provider: "generic", Grant: broker.GrantRefreshToken,
		TokenURL: w.srv.URL + "/token", AuthStyle: style, Scopes: []string{"api"},
		ClientID: clientID, Secrets: broker.DefaultSecretNames("demo"), DefaultLifetime: time.Hour,
	}
	if err := store.Set(context.Background(), w.conn.Secrets.ClientSecret, broker.StoredSecret{Value: clientSecret}); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) flow(t *testing.T) *consent.Flow {
	t.Helper()
	id, secret, err := consent.ClientCredentials(context.Background(), w.store, w.conn)
	if err != nil {
		t.Fatal(err)
	}
	scopes, err := consent.Scopes(w.conn)
	if err != nil {
		t.Fatal(err)
	}
	return &consent.Flow{
		Connection: w.conn, AuthorizationURL: w.srv.URL + "/authorize", RedirectURL: w.redirect,
		ClientID: id, ClientSecret: secret, Scopes: scopes,
	}
}

// consentQuery runs the consent page through Allow and returns what the
// redirect URI received.
func (w *world) consentQuery(t *testing.T, authURL string) url.Values {
	t.Helper()
	resp, err := testprovider.Approve(context.Background(), w.srv.Client(), authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case q := <-w.got:
		return q
	case <-time.After(5 * time.Second):
		t.Fatal("the redirect URI was not reached")
		return nil
	}
}

func TestFlowStoresTheConsentedGrant(t *testing.T) {
	for _, style := range []broker.AuthStyle{broker.AuthBasic, broker.AuthBody} {
		t.Run(string(style), func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, style)
			f := w.flow(t)
			state, verifier := consent.NewState(), consent.NewVerifier()
			authURL, err := f.AuthCodeURL(state, verifier)
			if err != nil {
				t.Fatal(err)
			}
			u, _ := url.Parse(authURL)
			if q := u.Query(); q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("state") != state ||
				q.Get("client_id") != clientID || q.Get("redirect_uri") != w.redirect || q.Get("scope") != "api" {
				t.Fatalf("authorization URL query %v", q)
			}
			if strings.Contains(authURL, verifier.Reveal()) {
				t.Fatal("the authorization URL carries the verifier itself")
			}

			code, err := consent.ParseCallback(w.consentQuery(t, authURL), state)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := f.Exchange(ctx, code, verifier)
			if err != nil {
				t.Fatal(err)
			}
			if err := consent.Save(ctx, w.store, w.conn, tok); err != nil {
				t.Fatal(err)
			}

			rt, err := w.store.Get(ctx, w.conn.Secrets.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			if cur, ok := w.provider.CurrentRefreshToken(rt.Value.Reveal()); !ok || cur != rt.Value.Reveal() {
				t.Fatal("the stored refresh token is not the provider's current one")
			}
			at, err := w.store.Get(ctx, w.conn.Secrets.AccessToken)
			if err != nil {
				t.Fatal(err)
			}
			if !w.provider.ValidAccessToken(at.Value.Reveal()) {
				t.Fatal("the stored access token is not valid at the provider")
			}
			if d := at.ExpiresOn.Sub(tok.IssuedAt); d < testprovider.DefaultAccessTokenLifetime-time.Minute || d > testprovider.DefaultAccessTokenLifetime+time.Minute {
				t.Fatalf("access token stored with expiry %v after issue, want about %v", d, testprovider.DefaultAccessTokenLifetime)
			}
			last, _ := w.provider.LastRequest()
			if last.Grant != "authorization_code" || last.BasicAuth != (style == broker.AuthBasic) || last.BodyAuth != (style == broker.AuthBody) {
				t.Fatalf("token request %q basic=%v body=%v; want authorization_code in the %s style only", last.Grant, last.BasicAuth, last.BodyAuth, style)
			}
		})
	}
}

func TestExchangeFailures(t *testing.T) {
	tests := []struct {
		name     string
		change   func(f *consent.Flow, verifier *broker.Secret)
		wantCode string
	}{
		{"wrong verifier", func(_ *consent.Flow, v *broker.Secret) { *v = consent.NewVerifier() }, "invalid_grant"},
		{"other redirect URI", func(f *consent.Flow, _ *broker.Secret) { f.RedirectURL += "/other" }, "invalid_grant"},
		{"wrong client secret", func(f *consent.Flow, _ *broker.Secret) { f.ClientSecret = "wrong" }, "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, broker.AuthBasic)
			f := w.flow(t)
			state, verifier := consent.NewState(), consent.NewVerifier()
			authURL, err := f.AuthCodeURL(state, verifier)
			if err != nil {
				t.Fatal(err)
			}
			code, err := consent.ParseCallback(w.consentQuery(t, authURL), state)
			if err != nil {
				t.Fatal(err)
			}
			tt.change(f, &verifier)
			tok, err := f.Exchange(context.Background(), code, verifier)
			var ee *consent.ExchangeError
			if !errors.As(err, &ee) || ee.Code != tt.wantCode || ee.Connection != "demo" || tok != nil {
				t.Fatalf("got %v, %v; want an *ExchangeError %s", tok, err, tt.wantCode)
			}
			if ee.Remediation() == "" {
				t.Error("no remediation")
			}
			for _, s := range []string{code, verifier.Reveal(), clientSecret} {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("the error %q shows a secret", err)
				}
			}
			if s := w.provider.Stats(); s.Issued != 0 {
				t.Fatalf("provider stats %+v: tokens were issued", s)
			}
		})
	}
}

// tokenEndpoint answers every token request with body.
func tokenEndpoint(t *testing.T, status int, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/token"
}

func TestExchangeAnswers(t *testing.T) {
	const echoed = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
	tests := []struct {
		name    string
		status  int
		body    string
		check   func(t *testing.T, tok *broker.Token, err error)
		secrets []string
	}{
		{"no refresh token", 200, `{"access_token":"at-1","token_type":"Bearer","expires_in":3600}`,
			func(t *testing.T, tok *broker.Token, err error) {
				if !errors.Is(err, consent.ErrNoRefreshToken) || tok != nil {
					t.Fatalf("got %v, %v; want ErrNoRefreshToken", tok, err)
				}
			}, nil},
		{"no expires_in: the connection's default lifetime", 200, `{"access_token":"at-1","token_type":"Bearer","refresh_token":"rt-1"}`,
			func(t *testing.T, tok *broker.Token, err error) {
				if err != nil || tok.Expiry.Sub(tok.IssuedAt) != 2*time.Hour || tok.RefreshToken.Reveal() != "rt-1" {
					t.Fatalf("got %+v, %v; want a token expiring 2h after issue", tok, err)
				}
			}, nil},
		{"a description echoing a secret is sanitised", 400, `{"error":"invalid_grant<b>","error_description":"bad code_verifier=` + echoed + ` for <script>x</script>"}`,
			func(t *testing.T, tok *broker.Token, err error) {
				var ee *consent.ExchangeError
				// Markup does not look like an error code
				// (diagnose.ErrorCode): the code is left out, never
				// trimmed into shape.
				if !errors.As(err, &ee) || ee.Code != "" || ee.StatusCode != 400 {
					t.Fatalf("got %v; want an *ExchangeError 400 without the code", err)
				}
			}, []string{echoed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &consent.Flow{
				Connection: broker.Connection{Name: "demo", TokenURL: tokenEndpoint(t, tt.status, tt.body), AuthStyle: broker.AuthBody, DefaultLifetime: 2 * time.Hour},
				ClientID:   clientID, ClientSecret: clientSecret, RedirectURL: "http://127.0.0.1:1/callback",
			}
			tok, err := f.Exchange(context.Background(), "code-1", consent.NewVerifier())
			tt.check(t, tok, err)
			for _, s := range tt.secrets {
				if err != nil && strings.Contains(err.Error(), s) {
					t.Fatalf("the error %q shows %q", err, s)
				}
			}
		})
	}
}

func TestBadConnectionsSendNothing(t *testing.T) {
	var sent atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { sent.Add(1) }))
	defer srv.Close()
	tests := []struct {
		name string
		f    consent.Flow
	}{
		{"no auth style", consent.Flow{Connection: broker.Connection{TokenURL: srv.URL}, ClientID: "id"}},
		{"no client id", consent.Flow{Connection: broker.Connection{TokenURL: srv.URL, AuthStyle: broker.AuthBody}}},
		{"http token URL off this machine", consent.Flow{Connection: broker.Connection{TokenURL: "http://id.example.com/token", AuthStyle: broker.AuthBody}, ClientID: "id"}},
		{"a parameter the exchange sets", consent.Flow{Connection: broker.Connection{TokenURL: srv.URL, AuthStyle: broker.AuthBody, Params: map[string]string{"redirect_uri": "x"}}, ClientID: "id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.f.Exchange(context.Background(), "code", consent.NewVerifier())
			if !errors.Is(err, consent.ErrBadConnection) {
				t.Fatalf("err = %v; want ErrBadConnection", err)
			}
		})
	}
	if n := sent.Load(); n != 0 {
		t.Fatalf("%d requests sent", n)
	}
}

func TestAuthCodeURLRefusesAnInsecureEndpoint(t *testing.T) {
	f := consent.Flow{Connection: broker.Connection{Name: "c", TokenURL: "https://id.example.com/token", AuthStyle: broker.AuthBody},
		ClientID: "id", AuthorizationURL: "http://id.example.com/authorize"}
	if _, err := f.AuthCodeURL("s", consent.NewVerifier()); !errors.Is(err, consent.ErrInsecureURL) {
		t.Fatalf("err = %v; want ErrInsecureURL", err)
	}
}

// TestAuthCodeURLRefusesWhatCannotBeRedeemed: nobody is sent to the
// consent page for a code the exchange would refuse; the check is the
// token client's own (before, a reserved parameter passed here and failed
// only at the exchange, after the person had consented).
func TestAuthCodeURLRefusesWhatCannotBeRedeemed(t *testing.T) {
	f := consent.Flow{Connection: broker.Connection{Name: "c", TokenURL: "https://id.example.com/token", AuthStyle: broker.AuthBody,
		Params: map[string]string{"redirect_uri": "https://elsewhere.example/cb"}},
		ClientID: "id", AuthorizationURL: "https://id.example.com/authorize"}
	if u, err := f.AuthCodeURL("s", consent.NewVerifier()); !errors.Is(err, consent.ErrBadConnection) {
		t.Fatalf("got %q, %v; want ErrBadConnection", u, err)
	}
}

func TestAuthCodeURLAsksGoogleForOfflineAccess(t *testing.T) {
	f := consent.Flow{Connection: broker.Connection{Name: "g", Provider: "google", TokenURL: "https://oauth2.googleapis.com/token", AuthStyle: broker.AuthBody},
		ClientID: "id", AuthorizationURL: "https://accounts.google.com/o/oauth2/v2/auth", RedirectURL: "http://127.0.0.1:8765/callback"}
	u, err := f.AuthCodeURL("s", consent.NewVerifier())
	if err != nil {
		t.Fatal(err)
	}
	q, _ := url.ParseQuery(strings.SplitN(u, "?", 2)[1])
	if q.Get("access_type") != "offline" || q.Get("prompt") != "consent" {
		t.Fatalf("query %v; want access_type=offline and prompt=consent", q)
	}
}
