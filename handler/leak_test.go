package main

// The leak test: the main scenarios, success and every kind of failure a
// provider or the store can produce, run through the real broker, grant,
// stores and HTTP surface, with everything anyone could read captured: the
// logs (JSON, at debug), every HTTP answer with its headers, the output of
// `handler status` and `handler status -json`, and the status files kept
// beside the locks. No secret may appear in any of it, whole or in part,
// except the access token in the body of a successful token answer.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault/kvtest"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	redaction "github.com/tokenrefresher/tokenrefresher/handler/internal/redact"
)

const (
	leakConn     = "leak"
	leakClientID = "leak-client"
)

// tokenRequest is what the scripted provider received.
type tokenRequest struct {
	refreshToken, clientSecret, basic string
	// gone is closed when the client has gone away.
	gone <-chan struct{}
}

// providerScript answers one token request. mint makes a new secret
// value (registered as one) with the given prefix.
type providerScript func(w http.ResponseWriter, r tokenRequest, mint func(prefix string) string)

// leakWorld is one handler, wired as serve wires it, with everything that
// leaves it captured.
type leakWorld struct {
	t      *testing.T
	dir    string
	env    map[string]string
	logs   lockedBuffer
	srv    *httptest.Server
	b      *broker.Broker
	apiKey string

	mu sync.Mutex
	// secrets are every secret value in play: client secret, API key, each
	// token minted, and the encodings a request carries them in.
	secrets []leakSecret
	// served are the access tokens handed to callers in 200 answers.
	served []string
	// corpus is everything readable: logs are added at the end.
	corpus strings.Builder
	calls  int
}

// lockedBuffer is a bytes.Buffer safe for the concurrent writes of a
// logger shared by the broker, the grant and the server.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// leakSecret is a value that must not appear in the output.
type leakSecret struct {
	value string
	// whole: only the whole value counts. Pieces of an encoding of
	// several values may be an encoding of a value that is no secret,
	// such as the client id that starts a Basic credential.
	whole bool
}

// secretValue is a random value with a prefix: long and distinctive, so a
// match in the output cannot be a coincidence. It holds characters that
// form encoding changes (+, /, =), as client secrets often do, so that an
// encoded echo is not the raw value.
func secretValue(prefix string) string { return prefix + "_" + rand.Text() + "+/=" + rand.Text() }

// addSecret registers s, and the forms a token request carries it in.
func (w *leakWorld) addSecret(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.secrets = append(w.secrets, leakSecret{value: s}, leakSecret{value: url.QueryEscape(s)},
		leakSecret{value: base64.StdEncoding.EncodeToString([]byte(s)), whole: true})
}

// addBasic registers the Basic credential of id and secret, in both the
// form RFC 6749 §2.3.1 asks for (form-encoded first) and the raw one.
func (w *leakWorld) addBasic(id, secret string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, cred := range []string{url.QueryEscape(id) + ":" + url.QueryEscape(secret), id + ":" + secret} {
		w.secrets = append(w.secrets, leakSecret{value: base64.StdEncoding.EncodeToString([]byte(cred)), whole: true})
	}
}

func (w *leakWorld) mint(prefix string) string {
	s := secretValue(prefix)
	w.addSecret(s)
	return s
}

// newLeakWorld starts a scripted provider and a handler on the local store
// (vault nil) or on a Key Vault double. The connection's client secret and
// first refresh token are in the store.
//
// grant, when given, is the connection's grant (client_credentials: no
// refresh token).
func newLeakWorld(t *testing.T, script providerScript, vault *kvtest.Vault, grant ...broker.GrantType) *leakWorld {
	t.Helper()
	w := &leakWorld{t: t, dir: t.TempDir()}
	clientSecret := w.mint("cs")
	firstRT := w.mint("rt")
	w.apiKey = w.mint("fk")
	w.addBasic(leakClientID, clientSecret)

	provider := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(rw, "bad form", http.StatusBadRequest)
			return
		}
		req := tokenRequest{refreshToken: r.PostForm.Get("refresh_token"), clientSecret: r.PostForm.Get("client_secret"),
			basic: strings.TrimPrefix(r.Header.Get("Authorization"), "Basic "), gone: r.Context().Done()}
		if _, pw, ok := r.BasicAuth(); ok {
			req.clientSecret, _ = url.QueryUnescape(pw)
		}
		w.mu.Lock()
		w.calls++
		w.mu.Unlock()
		script(rw, req, w.mint)
	}))
	t.Cleanup(provider.Close)

	connections := fmt.Sprintf(`{"connections": [{"name": %q, "tokenUrl": %q, "clientAuth": "basic", "clientId": %q, "rotating": true}]}`,
		leakConn, provider.URL+"/token", leakClientID)
	if len(grant) > 0 {
		connections = fmt.Sprintf(`{"connections": [{"name": %q, "grant": %q, "tokenUrl": %q, "clientAuth": "basic", "clientId": %q}]}`,
			leakConn, grant[0], provider.URL+"/token", leakClientID)
	}
	w.env = map[string]string{"CONNECTIONS": connections, "LOCAL_STATE_DIR": w.dir, "LOG_LEVEL": "debug"}
	settings, err := config.LoadSettings(func(k string) string { return w.env[k] })
	if err != nil {
		t.Fatal(err)
	}
	conns, err := settings.ReadConnections()
	if err != nil {
		t.Fatal(err)
	}

	var store broker.SecretStore
	if vault != nil {
		store = keyvault.New(vault.Client, keyvault.Options{VaultURL: vault.URL})
	} else if store, err = local.NewStore(w.dir); err != nil {
		t.Fatal(err)
	}
	names := conns[0].Secrets
	for name, value := range map[string]string{names.ClientSecret: clientSecret, names.RefreshToken: firstRT} {
		if name == "" {
			continue
		}
		if err := store.Set(context.Background(), name, broker.StoredSecret{Value: broker.Secret(value)}); err != nil {
			t.Fatal(err)
		}
	}
	locker, err := local.NewLocker(w.dir, local.LockerOptions{PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Wired as serve wires it: one redactor behind the log, the store, the
	// grant and the HTTP answers.
	red := redaction.New()
	log := slog.New(redaction.NewHandler(slog.NewJSONHandler(&w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}), red))
	store = redaction.Store(store, red)
	red.Remember("api-key", w.apiKey)
	w.b, err = broker.New(broker.Options{
		Store: store, Locker: locker, Connections: conns, Logger: log, Instance: "leak-test",
		WriteAheadKey: broker.StoredKey(store, locker),
		LockWait:      2 * time.Second, StoreRetries: 2, StoreRetryDelay: 5 * time.Millisecond,
		Grant: redaction.Grant(oauth.New(oauth.Options{Timeout: 2 * time.Second, AttemptTimeout: 300 * time.Millisecond, Backoff: 10 * time.Millisecond, Logger: log}), red),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.b.Close(context.Background()) })
	w.srv = httptest.NewServer(functions.NewServer(w.b, functions.Options{Logger: log, APIKey: broker.Secret(w.apiKey), SweepHorizon: 10 * time.Minute, Redactor: red}))
	t.Cleanup(w.srv.Close)
	return w
}

// call makes a request and adds the whole answer to the corpus, except the
// access token of a successful token answer, which it checks and records.
func (w *leakWorld) call(method, path, body string, header map[string]string) (int, map[string]any) {
	w.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, w.srv.URL+path, rd)
	if err != nil {
		w.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		w.t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		w.t.Fatalf("%s %s: %d, body is not a JSON object (%d bytes)", method, path, res.StatusCode, len(raw))
	}
	shown := string(raw)
	if at, ok := fields["access_token"].(string); ok && res.StatusCode == http.StatusOK && strings.HasPrefix(path, "/api/token/") {
		if len(fields) != 4 || fields["token_type"] != "Bearer" {
			w.t.Errorf("%s %s: the token answer has fields %v; want access_token, token_type, expires_in and expires_on only", method, path, keys(fields))
		}
		if strings.Contains(at, redaction.Placeholder) {
			w.t.Errorf("%s %s: the access token served was redacted: %q", method, path, at)
		}
		w.mu.Lock()
		w.served = append(w.served, at)
		w.mu.Unlock()
		shown = strings.Replace(shown, at, "[the access token served]", 1)
	}
	var dump bytes.Buffer
	// The request's query may hold the key: only the answer is output.
	fmt.Fprintf(&dump, "%s %s -> %s\n", method, req.URL.Path, res.Status)
	_ = res.Header.Write(&dump)
	dump.WriteString(shown + "\n")
	w.mu.Lock()
	w.corpus.Write(dump.Bytes())
	w.mu.Unlock()
	return res.StatusCode, fields
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// exercise calls every route the way callers, the timer and an operator
// do, and returns the status and body of the first token call.
func (w *leakWorld) exercise() (int, map[string]any) {
	w.t.Helper()
	withKey := map[string]string{"x-functions-key": w.apiKey}
	status, first := w.call(http.MethodGet, "/api/token/"+leakConn+"?minValidity=60&code="+url.QueryEscape(w.apiKey), "", nil)
	w.call(http.MethodPost, "/api/token/"+leakConn, `{"minValidity": "60"}`, map[string]string{"x-functions-key": w.apiKey, "Content-Type": "application/json"})
	w.call(http.MethodGet, "/api/connections", "", withKey)
	w.call(http.MethodGet, "/api/connections/"+leakConn, "", withKey)
	w.call(http.MethodPost, "/refresh", `{"Data":{"timer":{"IsPastDue":true}},"Metadata":{}}`, withKey)
	w.call(http.MethodPost, "/api/connections/"+leakConn+"/refresh", "", withKey)
	w.call(http.MethodGet, "/api/connections/"+leakConn, "", withKey)
	if s, _ := w.call(http.MethodGet, "/api/token/"+leakConn, "", nil); s != http.StatusUnauthorized {
		w.t.Errorf("a token call without the key: %d, want 401", s)
	}
	return status, first
}

// statusOutput runs `handler status` and `handler status -json` on the
// world's local store and adds their output, and the status files beside
// the locks, to the corpus. It returns the JSON output.
func (w *leakWorld) statusOutput() string {
	w.t.Helper()
	getenv := func(k string) string { return w.env[k] }
	var jsonOut string
	for _, args := range [][]string{{"-json"}, {}, {leakConn}} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), append([]string{"status"}, args...), getenv, nil, &stdout, &stderr)
		if code == 2 {
			w.t.Fatalf("handler status %v: exit 2: %s", args, stderr.String())
		}
		if len(args) == 1 && args[0] == "-json" {
			jsonOut = stdout.String()
		}
		w.mu.Lock()
		fmt.Fprintf(&w.corpus, "handler status %v -> %d\n%s%s", args, code, stdout.String(), stderr.String())
		w.mu.Unlock()
	}
	for _, f := range regularFiles(w.t, filepath.Join(w.dir, "locks")) {
		b, err := os.ReadFile(f)
		if err != nil {
			w.t.Fatal(err)
		}
		w.mu.Lock()
		fmt.Fprintf(&w.corpus, "%s:\n%s\n", f, b)
		w.mu.Unlock()
	}
	return jsonOut
}

// scrub replaces the secrets in s with their fingerprints, for test
// messages.
func (w *leakWorld) scrub(s string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.scrubLocked(s)
}

func (w *leakWorld) scrubLocked(s string) string {
	for _, sec := range w.secrets {
		s = strings.ReplaceAll(s, sec.value, "<secret "+fingerprint(sec.value)+">")
	}
	return s
}

// checkNoLeaks closes the broker (so background persisting has logged its
// last) and looks for every secret, and every 16-character piece of one,
// in the logs and the corpus.
func (w *leakWorld) checkNoLeaks() string {
	w.t.Helper()
	_ = w.b.Close(context.Background())
	w.mu.Lock()
	defer w.mu.Unlock()
	logs := w.logs.String()
	if !strings.Contains(logs, `"level":"DEBUG"`) || !strings.Contains(logs, `"event":"http.request"`) {
		w.t.Fatalf("the logs lack debug records; the check would prove little:\n%s", logs)
	}
	all := logs + "\n" + w.corpus.String()
	for _, sec := range w.secrets {
		s := sec.value
		if strings.Contains(all, s) {
			// Shown with every secret replaced, around the first one.
			scrubbed := w.scrubLocked(all)
			i := max(strings.Index(scrubbed, "<secret "+fingerprint(s)+">"), 0)
			w.t.Errorf("a secret (%s, %d characters) appears in the output: …%s…", fingerprint(s), len(s),
				strings.ToValidUTF8(scrubbed[max(0, i-160):min(len(scrubbed), i+120)], ""))
			continue
		}
		if sec.whole {
			continue
		}
		const piece = 16
		for i := 0; i+piece <= len(s); i++ {
			if strings.Contains(all, s[i:i+piece]) {
				w.t.Errorf("characters %d-%d of a secret (%s) appear in the output", i, i+piece, fingerprint(s))
				break
			}
		}
	}
	// Raw provider pages never reach a reader; only their content type
	// is named.
	lower := strings.ToLower(all)
	for _, tag := range []string{"<html", "<body", "<pre", "<title", "<!doctype"} {
		if strings.Contains(lower, tag) {
			w.t.Errorf("the output contains raw HTML (%s)", tag)
		}
	}
	return all
}

// TestNoSecretLeaks runs each scenario through the whole handler and
// checks that nothing anyone can read holds a secret; where the provider
// answered with an error, the caller's message carries its code and
// description, sanitised.
func TestNoSecretLeaks(t *testing.T) {
	t.Parallel()
	jsonError := func(status int, v map[string]any) func(http.ResponseWriter) {
		return func(rw http.ResponseWriter) {
			rw.Header().Set("Content-Type", "application/json")
			rw.WriteHeader(status)
			_ = json.NewEncoder(rw).Encode(v)
		}
	}
	success := func(rw http.ResponseWriter, _ tokenRequest, mint func(string) string) {
		jsonError(http.StatusOK, map[string]any{"access_token": mint("at"), "refresh_token": mint("rt"), "id_token": mint("id"),
			"token_type": "Bearer", "expires_in": 3600})(rw)
	}
	tests := []struct {
		name   string
		script providerScript
		// keyVault runs the scenario on the Key Vault double, and fault,
		// when set, is applied to it; otherwise the local store is used
		// and the status command is run too.
		keyVault bool
		fault    func(v *kvtest.Vault)
		// wantStatus is the first token call's status.
		wantStatus int
		// wantMessage must be in that call's message: the provider's
		// words, sanitised.
		wantMessage []string
		// check looks at the last status of the connection.
		check func(t *testing.T, status map[string]any)
	}{{
		name:       "success, rotating, with an id token",
		script:     success,
		wantStatus: http.StatusOK,
	}, {
		name: "invalid_grant whose description echoes the refresh token and the client secret",
		script: func(rw http.ResponseWriter, r tokenRequest, _ func(string) string) {
			jsonError(http.StatusBadRequest, map[string]any{"error": "invalid_grant",
				"error_description": "AADSTS70008: The refresh token " + r.refreshToken + " has expired due to inactivity. client_secret=" + r.clientSecret})(rw)
		},
		wantStatus:  http.StatusFailedDependency,
		wantMessage: []string{"HTTP 400 invalid_grant", "AADSTS70008: The refresh token [redacted] has expired due to inactivity. client_secret=[redacted]"},
	}, {
		name: "invalid_request quoting the request as sent: the form-encoded body and the Basic header",
		script: func(rw http.ResponseWriter, r tokenRequest, _ func(string) string) {
			jsonError(http.StatusBadRequest, map[string]any{"error": "invalid_request",
				"error_description": "cannot process grant_type=refresh_token&refresh_token=" + url.QueryEscape(r.refreshToken) + " with Authorization: Basic " + r.basic})(rw)
		},
		wantStatus:  http.StatusFailedDependency,
		wantMessage: []string{"HTTP 400 invalid_request", "cannot process grant_type=refresh_token&refresh_token=[redacted] with Authorization: Basic [redacted]"},
	}, {
		name: "invalid_client echoing the client secret",
		script: func(rw http.ResponseWriter, r tokenRequest, _ func(string) string) {
			jsonError(http.StatusUnauthorized, map[string]any{"error": "invalid_client",
				"error_description": "Client authentication failed for secret '" + r.clientSecret + "'"})(rw)
		},
		wantStatus:  http.StatusFailedDependency,
		wantMessage: []string{"HTTP 401 invalid_client", "Client authentication failed"},
	}, {
		name: "an HTML 500 page quoting the request",
		script: func(rw http.ResponseWriter, r tokenRequest, _ func(string) string) {
			rw.Header().Set("Content-Type", "text/html; charset=utf-8")
			rw.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(rw, "<!DOCTYPE html><html><head><title>Server Error</title></head><body><h1>500</h1><pre>POST /token\ngrant_type=refresh_token&refresh_token=%s&client_secret=%s\nAuthorization: Basic %s</pre></body></html>",
				r.refreshToken, url.QueryEscape(r.clientSecret), r.basic)
		},
		wantStatus:  http.StatusBadGateway,
		wantMessage: []string{"HTTP 500", "text/html"},
	}, {
		name: "a 200 with an error that echoes tokens and carries new ones",
		script: func(rw http.ResponseWriter, r tokenRequest, mint func(string) string) {
			jsonError(http.StatusOK, map[string]any{"error": "invalid_grant", "error_description": "refresh token " + r.refreshToken + " was already used",
				"access_token": mint("at"), "refresh_token": mint("rt")})(rw)
		},
		wantStatus:  http.StatusFailedDependency,
		wantMessage: []string{"invalid_grant", "refresh token [redacted] was already used"},
	}, {
		name: "the provider does not answer in time",
		script: func(_ http.ResponseWriter, r tokenRequest, _ func(string) string) {
			// Held until the client gives up (the attempt timeout).
			<-r.gone
		},
		wantStatus:  http.StatusBadGateway,
		wantMessage: []string{"did not answer within 300ms"},
	}, {
		name:     "Key Vault fails the writes: the rotated refresh token is kept in the write-ahead record",
		script:   success,
		keyVault: true,
		fault: func(v *kvtest.Vault) {
			f := kvtest.ServiceUnavailable
			f.Secret = leakConn + "-refresh-token"
			v.Fail(kvtest.OpSet, 1000, f)
		},
		wantStatus: http.StatusOK,
		check: func(t *testing.T, st map[string]any) {
			if st["persistPending"] != true {
				t.Errorf("status %v: want persistPending, or the scenario did not happen", st)
			}
		},
	}, {
		name:     "Key Vault refuses to read the client secret (403 ForbiddenByRbac)",
		script:   success,
		keyVault: true,
		fault: func(v *kvtest.Vault) {
			f := kvtest.ForbiddenByRbac
			f.Secret = leakConn + "-client-secret"
			v.Fail(kvtest.OpGet, 1000, f)
		},
		wantStatus:  http.StatusServiceUnavailable,
		wantMessage: []string{`could not read secret "leak-client-secret"`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var vault *kvtest.Vault
			if tt.keyVault {
				vault = kvtest.New(t, nil)
			}
			w := newLeakWorld(t, tt.script, vault)
			if tt.fault != nil {
				tt.fault(vault)
			}
			status, first := w.exercise()
			if status != tt.wantStatus {
				t.Errorf("first token call: %d %v, want %d", status, first["error"], tt.wantStatus)
			}
			msg, _ := first["message"].(string)
			for _, want := range tt.wantMessage {
				if !strings.Contains(msg, want) {
					t.Errorf("the caller's message %q lacks %q", w.scrub(msg), want)
				}
			}
			_, st := w.call(http.MethodGet, "/api/connections/"+leakConn, "", map[string]string{"x-functions-key": w.apiKey})
			if tt.check != nil {
				tt.check(t, st)
			}
			if !tt.keyVault {
				// Closed first, as the status command runs beside a
				// stopped handler on a workstation.
				_ = w.b.Close(context.Background())
				out := w.statusOutput()
				if !strings.Contains(out, `"name": "`+leakConn+`"`) {
					t.Errorf("handler status -json does not describe the connection:\n%s", out)
				}
			}
			w.checkNoLeaks()
			w.mu.Lock()
			calls, served := w.calls, len(w.served)
			w.mu.Unlock()
			if calls == 0 && !tt.keyVault {
				t.Error("the provider was never called; the scenario did not happen")
			}
			if (tt.wantStatus == http.StatusOK) != (served > 0) {
				t.Errorf("%d access tokens served, with a first answer of %d", served, status)
			}
		})
	}
}
