package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// TestProviderTimeoutBoundsTheCall: a token endpoint that never answers
// costs the caller PROVIDER_TIMEOUT at most, retries included, and then a
// 502: each attempt is cut at PROVIDER_ATTEMPT_TIMEOUT, and the retries
// stop when the whole budget is spent.
func TestProviderTimeoutBoundsTheCall(t *testing.T) {
	t.Parallel()
	var attempts atomic.Int64
	hang := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		// Read first: the server notices the client leaving only once
		// the body is consumed.
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	t.Cleanup(hang.Close)
	dir := t.TempDir()
	store, err := local.NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	locker, err := local.NewLocker(dir, local.LockerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conn := broker.Connection{Name: "hang", Provider: "test", Grant: broker.GrantClientCredentials, TokenURL: hang.URL + "/token",
		AuthStyle: broker.AuthBody, ClientID: "hang-client", Secrets: broker.DefaultSecretNames("hang"), DefaultLifetime: time.Hour}
	if err := store.Set(context.Background(), conn.Secrets.ClientSecret, broker.StoredSecret{Value: "cs_" + broker.Secret(rand.Text())}); err != nil {
		t.Fatal(err)
	}
	const budget, perAttempt = 900 * time.Millisecond, 250 * time.Millisecond
	b, err := broker.New(broker.Options{Store: store, Locker: locker, Connections: []broker.Connection{conn},
		Grant: oauth.New(oauth.Options{Timeout: budget, AttemptTimeout: perAttempt, MaxAttempts: 100, Backoff: 10 * time.Millisecond})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	srv := httptest.NewServer(functions.NewServer(b, functions.Options{}))
	t.Cleanup(srv.Close)

	began := time.Now()
	res, err := http.Get(srv.URL + "/api/token/hang")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	elapsed := time.Since(began)
	var body struct{ Error, Message string }
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil || res.StatusCode != http.StatusBadGateway || body.Error != "provider_unavailable" {
		t.Fatalf("%d %+v %v; want 502 provider_unavailable", res.StatusCode, body, err)
	}
	if elapsed > budget+500*time.Millisecond {
		t.Errorf("the caller waited %v; PROVIDER_TIMEOUT is %v", elapsed, budget)
	}
	if n := attempts.Load(); n < 2 || n > int64(budget/perAttempt)+1 {
		t.Errorf("%d attempts; want the retries (at least 2) to stop when the %v budget is spent", n, budget)
	}
}

// TestStandaloneBeyondLoopbackNeedsAPIKey runs the binary as an operator
// would to serve other machines: LISTEN_ADDR on every interface. Without
// API_KEY_SECRET it refuses to start, naming both settings; with a key it
// refuses to start while the secret is missing or short; with a good key
// it serves callers that present it, in the header or as ?code=, and only
// them, and never writes it out.
func TestStandaloneBeyondLoopbackNeedsAPIKey(t *testing.T) {
	t.Parallel()
	const conn, keyName = "erp", "tokenrefresher-api-key"
	clientSecret := "cs_" + rand.Text()
	provider := testprovider.New(testprovider.Config{ClientID: "erp-client", ClientSecret: clientSecret, AuthStyle: broker.AuthBody})
	ps := httptest.NewServer(provider)
	t.Cleanup(ps.Close)
	dir := t.TempDir()
	env := []string{"LOCAL_STATE_DIR=" + filepath.Join(dir, "state"), "LISTEN_ADDR=0.0.0.0:0", "SWEEP_INTERVAL=24h", "LOG_LEVEL=debug",
		"CONNECTIONS=" + fmt.Sprintf(`{"connections": [{"name": %q, "grant": "client_credentials", "tokenUrl": %q, "clientAuth": "body", "clientId": "erp-client"},
			{"name": "restricted", "grant": "client_credentials", "tokenUrl": %q, "clientAuth": "body", "clientId": "erp-client",
			 "allowedCallers": ["00000000-0000-0000-0000-0000000000ad"]}]}`, conn, ps.URL+"/token", ps.URL+"/token")}
	if r := runHandler(t, env, dir, clientSecret+"\n", "secret", "set", conn+"-client-secret"); r.code != 0 {
		t.Fatalf("handler secret set: exit %d: %s", r.code, redact(r.stderr))
	}

	refusals := []struct {
		name, key string // key: the value stored under keyName; empty stores none
		env       []string
		want      string
	}{
		{name: "no API_KEY_SECRET", want: `LISTEN_ADDR and API_KEY_SECRET: LISTEN_ADDR "0.0.0.0:0" accepts connections from other machines, and API_KEY_SECRET is not set`},
		{name: "the secret is missing", env: []string{"API_KEY_SECRET=" + keyName}, want: `API_KEY_SECRET: the store has no secret named "` + keyName + `"`},
		{name: "the key is short", key: "fk_SHORT", env: []string{"API_KEY_SECRET=" + keyName}, want: `API_KEY_SECRET: secret "` + keyName + `" holds a key of 8 characters`},
	}
	for _, tt := range refusals {
		if tt.key != "" {
			if r := runHandler(t, env, dir, tt.key+"\n", "secret", "set", keyName); r.code != 0 {
				t.Fatalf("handler secret set: exit %d: %s", r.code, redact(r.stderr))
			}
		}
		r := runHandler(t, append(slices.Clone(env), tt.env...), dir, "")
		if r.code != 2 || !strings.Contains(r.stderr, tt.want) || strings.Contains(r.stdout, "handler.start") {
			t.Errorf("%s: exit %d, stderr %q; want exit 2 before listening, saying %q", tt.name, r.code, r.stderr, tt.want)
		}
		if tt.key != "" && strings.Contains(r.stdout+r.stderr, tt.key) {
			t.Errorf("%s: the output shows the key", tt.name)
		}
	}

	key := "fk_" + rand.Text() + rand.Text()
	if r := runHandler(t, env, dir, key+"\n", "secret", "set", keyName); r.code != 0 {
		t.Fatalf("handler secret set: exit %d: %s", r.code, redact(r.stderr))
	}
	p := startHandler(t, "handler", append(slices.Clone(env), "API_KEY_SECRET="+keyName), dir)
	start := p.waitEvent(t, "handler.start", 30*time.Second)
	if start["api_key"] != true {
		t.Errorf("handler.start says api_key %v, want true", start["api_key"])
	}
	if w := p.waitEvent(t, "config.allowed_callers_unenforced", time.Second); !reflect.DeepEqual(w["connections"], []any{"restricted"}) {
		t.Errorf("config.allowed_callers_unenforced names %v, want [restricted]", w["connections"])
	}
	_, port, err := net.SplitHostPort(start["addr"].(string))
	if err != nil {
		t.Fatal(err)
	}
	p.addr = net.JoinHostPort("127.0.0.1", port)
	client := newClient(t, 2)
	waitReady(t, client, p, 30*time.Second)

	calls := []struct {
		path, header string
		want         int
	}{
		{"/", "", http.StatusOK},
		{"/api/token/" + conn, "", http.StatusUnauthorized},
		{"/api/token/" + conn, "fk_" + rand.Text() + rand.Text(), http.StatusUnauthorized},
		{"/api/connections", "", http.StatusUnauthorized},
		{"/api/token/" + conn, key, http.StatusOK},
		{"/api/token/" + conn + "?code=" + key, "", http.StatusOK},
		{"/api/connections", key, http.StatusOK},
		{"/api/token/restricted", key, http.StatusForbidden},
	}
	for _, c := range calls {
		req, err := http.NewRequest(http.MethodGet, "http://"+p.addr+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.header != "" {
			req.Header.Set("x-functions-key", c.header)
		}
		status, body := do(t, client, req)
		if status != c.want {
			t.Errorf("GET %s (key in the header: %v): %d %s, want %d", strings.Split(c.path, "?")[0], c.header != "", status, redact(string(body)), c.want)
		}
		if status == http.StatusOK && strings.HasPrefix(c.path, "/api/token/") {
			var tok tokenBody
			if json.Unmarshal(body, &tok) != nil || !provider.ValidAccessToken(tok.AccessToken) {
				t.Errorf("GET %s: the answer is not a valid token", strings.Split(c.path, "?")[0])
			}
		}
	}
	p.stop(t, syscall.SIGTERM, 30*time.Second)
	if out := p.output(); strings.Contains(out, key) || strings.Contains(out, clientSecret) {
		t.Errorf("the handler's output contains the API key or the client secret")
	}
}

// TestSecretNeverPrints: a broker.Secret shows as "[redacted]" however it
// is printed, encoded or logged; only Reveal gives the value.
func TestSecretNeverPrints(t *testing.T) {
	value := "rt_" + rand.Text() + rand.Text()
	s := broker.Secret(value)
	holder := struct {
		Token broker.Secret
		Ptr   *broker.Secret
	}{s, &s}
	var logs strings.Builder
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("m", "secret", s, "holder", holder)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("m", "secret", s, "holder", holder)
	js, err := json.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{logs.String(), string(js)}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%10.40s"} {
		out = append(out, fmt.Sprintf(verb, s), fmt.Sprintf(verb, holder), fmt.Sprintf(verb, &s))
	}
	for _, o := range out {
		if strings.Contains(o, value) || strings.Contains(o, value[:16]) || strings.Contains(o, fmt.Sprintf("%x", value[:8])) {
			t.Errorf("a rendering shows the secret: %s", strings.ReplaceAll(o, value, "<secret>"))
		}
	}
	if s.Reveal() != value {
		t.Error("Reveal does not give the value")
	}
}
