package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// connectWorld is a workstation: the test provider with its consent page,
// a connections file naming it, and the local store with the client secret.
type connectWorld struct {
	t            *testing.T
	provider     *testprovider.Provider
	psrv         *httptest.Server
	env          map[string]string
	store        *local.Store
	clientSecret string
}

func newConnectWorld(t *testing.T, style broker.AuthStyle) *connectWorld {
	t.Helper()
	w := &connectWorld{t: t, clientSecret: "cs_" + rand.Text()}
	w.provider = testprovider.New(testprovider.Config{ClientID: "client", ClientSecret: w.clientSecret, AuthStyle: style, Rotate: true})
	w.psrv = httptest.NewServer(w.provider)
	t.Cleanup(w.psrv.Close)
	state := filepath.Join(t.TempDir(), "state")
	w.env = map[string]string{
		"LOCAL_STATE_DIR": state,
		"CONNECTIONS": fmt.Sprintf(`{"connections": [
  {"name": "demo", "tokenUrl": %q, "clientAuth": %q, "clientId": "client", "scopes": ["api"], "rotating": true},
  {"name": "nosecret", "tokenUrl": %q, "clientAuth": %q, "clientId": "client"},
  {"name": "machine", "grant": "client_credentials", "tokenUrl": %q, "clientAuth": %q, "clientId": "client"}
]}`, w.psrv.URL+"/token", style, w.psrv.URL+"/token", style, w.psrv.URL+"/token", style),
	}
	var err error
	if w.store, err = local.NewStore(state); err != nil {
		t.Fatal(err)
	}
	if err := w.store.Set(context.Background(), "demo-client-secret", broker.StoredSecret{Value: broker.Secret(w.clientSecret)}); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *connectWorld) getenv(k string) string { return w.env[k] }

func (w *connectWorld) secret(name string) string {
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

// connectRun is `handler connect` running in this process.
type connectRun struct {
	t              *testing.T
	stdout, stderr *lineLog
	exit           chan int
	// redirect and authURL are what it printed for the person.
	redirect, authURL string
}

// connect starts `handler connect` with args (-no-browser is added) and
// waits until it has printed the redirect URI and the address to open.
// The provider accepts that redirect URI, as if it had been registered.
func (w *connectWorld) connect(args ...string) *connectRun {
	w.t.Helper()
	r := &connectRun{t: w.t, stdout: newLineLog(), stderr: newLineLog(), exit: make(chan int, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	w.t.Cleanup(func() {
		cancel()
		<-r.exit
	})
	go func() {
		r.exit <- run(ctx, append([]string{"connect", "-no-browser"}, args...), w.getenv, strings.NewReader(""), r.stdout, r.stderr)
	}()
	indented := r.waitIndented(2)
	if len(indented) < 2 {
		w.t.Fatalf("handler connect ended before printing the URLs:\n%s%s", r.stdout, redact(r.stderr.String()))
	}
	r.redirect, r.authURL = indented[0], indented[1]
	w.provider.AllowRedirectURIs(r.redirect)
	return r
}

// waitIndented waits for n indented lines (the URLs printed for the
// person), or for the command to end, and returns them.
func (r *connectRun) waitIndented(n int) []string {
	r.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		lines, changed := r.stdout.snapshot()
		var got []string
		for _, l := range lines {
			if strings.HasPrefix(l, "    ") {
				got = append(got, strings.TrimSpace(l))
			}
		}
		if len(got) >= n {
			return got
		}
		select {
		case <-changed:
		case code := <-r.exit:
			r.exit <- code
			return got
		case <-deadline:
			r.t.Fatalf("handler connect printed no URLs:\n%s%s", r.stdout, r.stderr)
		}
	}
}

// wait returns the exit code.
func (r *connectRun) wait() int {
	r.t.Helper()
	select {
	case code := <-r.exit:
		r.exit <- code
		return code
	case <-time.After(20 * time.Second):
		r.t.Fatalf("handler connect did not finish:\n%s%s", r.stdout, r.stderr)
		return 0
	}
}

// read reads the answer to a request.
func (w *connectWorld) read(resp *http.Response, err error) (int, string) {
	w.t.Helper()
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// checkNothingLeaks fails if any output holds a secret of the run.
func (w *connectWorld) checkNothingLeaks(texts ...string) {
	w.t.Helper()
	for _, text := range texts {
		if tokenPattern.MatchString(text) || strings.Contains(text, w.clientSecret) {
			w.t.Fatalf("a secret shows in:\n%s", redact(text))
		}
	}
}

func TestConnectStoresTheConsentedGrant(t *testing.T) {
	for _, style := range []broker.AuthStyle{broker.AuthBasic, broker.AuthBody} {
		t.Run(string(style), func(t *testing.T) {
			w := newConnectWorld(t, style)
			r := w.connect("demo", "-scope", "offline_access", "-authorization-url", w.psrv.URL+"/authorize")
			if !strings.HasPrefix(r.redirect, "http://127.0.0.1:") || !strings.HasSuffix(r.redirect, "/callback") {
				t.Fatalf("redirect URI %q", r.redirect)
			}
			u, _ := url.Parse(r.authURL)
			if q := u.Query(); q.Get("scope") != "api offline_access" || q.Get("code_challenge_method") != "S256" || q.Get("redirect_uri") != r.redirect {
				t.Fatalf("authorization URL %s", redact(r.authURL))
			}

			status, page := w.read(testprovider.Approve(context.Background(), w.psrv.Client(), r.authURL))
			if status != http.StatusOK || !strings.Contains(page, "Connection demo is connected") {
				t.Fatalf("callback page: %d %s", status, redact(page))
			}
			if code := r.wait(); code != 0 {
				t.Fatalf("exit %d:\n%s%s", code, r.stdout, redact(r.stderr.String()))
			}
			rt := w.secret("demo-refresh-token")
			if cur, ok := w.provider.CurrentRefreshToken(rt); !ok || cur != rt {
				t.Fatal("the stored refresh token is not the provider's current one")
			}
			if !w.provider.ValidAccessToken(w.secret("demo-access-token")) {
				t.Fatal("the stored access token is not valid")
			}
			if out := r.stdout.String(); !strings.Contains(out, `"demo-refresh-token"`) || !strings.Contains(out, "the local store") {
				t.Fatalf("stdout does not say where the tokens went:\n%s", redact(out))
			}
			w.checkNothingLeaks(page, r.stdout.String(), r.stderr.String())
		})
	}
}

func TestConnectStoresNothing(t *testing.T) {
	tests := []struct {
		name string
		// answer plays the browser's part, given the run.
		answer     func(w *connectWorld, r *connectRun) (int, string)
		wantPage   int
		wantStderr string
	}{
		{"state mismatch", func(w *connectWorld, r *connectRun) (int, string) {
			return w.read(http.Get(r.redirect + "?code=code_x&state=forged"))
		}, http.StatusBadRequest, "state parameter does not match"},
		{"provider denial", func(w *connectWorld, r *connectRun) (int, string) {
			return w.read(testprovider.Deny(context.Background(), w.psrv.Client(), r.authURL))
		}, http.StatusBadRequest, "access_denied"},
		{"a code bound to another verifier", func(w *connectWorld, r *connectRun) (int, string) {
			u, _ := url.Parse(r.authURL)
			q := u.Query()
			sum := sha256.Sum256([]byte(strings.Repeat("another-verifier", 3)))
			q.Set("code_challenge", base64.RawURLEncoding.EncodeToString(sum[:]))
			u.RawQuery = q.Encode()
			return w.read(testprovider.Approve(context.Background(), w.psrv.Client(), u.String()))
		}, http.StatusBadGateway, "code_verifier does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newConnectWorld(t, broker.AuthBasic)
			r := w.connect("demo", "-authorization-url", w.psrv.URL+"/authorize")
			status, page := tt.answer(w, r)
			if status != tt.wantPage || !strings.Contains(page, "Connection demo was not connected") {
				t.Fatalf("page: %d %s", status, page)
			}
			if code := r.wait(); code != 1 || !strings.Contains(r.stderr.String(), tt.wantStderr) {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 and %q", code, redact(r.stderr.String()), tt.wantStderr)
			}
			if w.secret("demo-refresh-token") != "" || w.secret("demo-access-token") != "" {
				t.Fatal("tokens were stored")
			}
			if s := w.provider.Stats(); s.Issued != 0 {
				t.Fatalf("the provider issued tokens: %+v", s)
			}
			w.checkNothingLeaks(page, r.stdout.String(), r.stderr.String())
		})
	}
}

func TestConnectRefusals(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantExit   int
		wantStderr string
	}{
		{"no connection named", []string{"connect"}, 2, "usage: handler connect CONNECTION"},
		{"unknown connection", []string{"connect", "nope"}, 2, `no connection is named "nope"`},
		{"client credentials", []string{"connect", "machine"}, 2, "needs no consent"},
		{"no authorization URL", []string{"connect", "demo"}, 2, "-authorization-url"},
		{"no client secret", []string{"connect", "nosecret", "-authorization-url", "https://id.example.com/authorize"}, 1, "handler secret set nosecret-client-secret"},
		{"a bad scope", []string{"connect", "demo", "-scope", `a"b`, "-authorization-url", "https://id.example.com/authorize"}, 2, "-scope"},
		{"an insecure authorization URL", []string{"connect", "demo", "-authorization-url", "http://id.example.com/authorize"}, 2, "https"},
		{"nobody comes back", []string{"connect", "demo", "-no-browser", "-timeout", "100ms", "-authorization-url", "https://id.example.com/authorize"}, 1, "no answer from the provider within 100ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newConnectWorld(t, broker.AuthBasic)
			var stdout, stderr strings.Builder
			code := run(context.Background(), tt.args, w.getenv, strings.NewReader(""), &stdout, &stderr)
			if code != tt.wantExit || !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit %d and %q", code, stderr.String(), tt.wantExit, tt.wantStderr)
			}
			if w.secret("demo-refresh-token") != "" {
				t.Fatal("a refresh token was stored")
			}
		})
	}
}
