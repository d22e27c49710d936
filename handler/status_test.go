package main

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// TestStatusCommand runs `handler status` beside a serving handler: healthy
// after a refresh, then, once the provider has revoked the grant and the
// server has seen it, "needs_reauthorization" with the secret to replace,
// exit code 1, and never a secret in the output.
func TestStatusCommand(t *testing.T) {
	t.Parallel()
	clientSecret := "cs_" + rand.Text()
	provider := testprovider.New(testprovider.Config{ClientID: "client", ClientSecret: clientSecret, AuthStyle: broker.AuthBasic, Rotate: true})
	ps := httptest.NewServer(provider)
	t.Cleanup(ps.Close)
	rt := provider.IssueRefreshToken()

	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	connFile := writeFile(t, dir, "connections.json", fmt.Sprintf(`{"connections": [
  {"name": "xero", "tokenUrl": %q, "clientAuth": "basic", "clientId": "client", "rotating": true, "idleExpiry": "1440h"}
]}`, ps.URL+"/token"))
	env := []string{"LOCAL_STATE_DIR=" + state, "CONNECTIONS_FILE=" + connFile}
	expires := time.Now().Add(10 * 24 * time.Hour).UTC().Truncate(time.Second)
	for _, s := range []struct{ name, value, expires string }{
		{"xero-client-secret", clientSecret, expires.Format(time.RFC3339)},
		{"xero-refresh-token", rt, ""},
	} {
		args := []string{"secret", "set", s.name}
		if s.expires != "" {
			args = append(args, "-expires", s.expires)
		}
		if r := runHandler(t, env, dir, s.value+"\n", args...); r.code != 0 {
			t.Fatalf("secret set: %d %s", r.code, redact(r.stderr))
		}
	}

	r := runHandler(t, env, dir, "", "status")
	if r.code != 0 || !strings.Contains(r.stdout, "expiring") {
		t.Fatalf("before any refresh: exit %d, want 0 and state expiring:\n%s%s", r.code, r.stdout, redact(r.stderr))
	}

	p := startHandler(t, "server", append(env, "LISTEN_ADDR=127.0.0.1:0", "SWEEP_INTERVAL=24h"), dir)
	p.waitListening(t, 30*time.Second)
	client := newClient(t, 1)
	waitReady(t, client, p, 30*time.Second)
	get := func() int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.addr+"/api/token/xero", nil)
		code, _ := do(t, client, req)
		return code
	}
	if code := get(); code != http.StatusOK {
		t.Fatalf("token: %d", code)
	}

	tests := []struct {
		args     []string
		wantCode int
		want     []string
	}{
		{[]string{"status"}, 0, []string{"xero", "healthy", "Rotate the client secret before " + expires.Format(time.DateOnly), "xero-client-secret"}},
		{[]string{"status", "-json", "xero"}, 0, []string{`"state": "healthy"`, `"clientSecretExpiresOn": "` + expires.Format(time.RFC3339), `"refreshTokenIdleExpiresOn"`}},
		{[]string{"status", "nope"}, 2, nil},
	}
	for _, tt := range tests {
		r := runHandler(t, env, dir, "", tt.args...)
		if r.code != tt.wantCode {
			t.Errorf("%v: exit %d, want %d:\n%s%s", tt.args, r.code, tt.wantCode, r.stdout, redact(r.stderr))
		}
		for _, w := range tt.want {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("%v: output lacks %q:\n%s", tt.args, w, r.stdout)
			}
		}
	}

	// The grant dies; the server sees it on its next refresh.
	cur, _ := provider.CurrentRefreshToken(rt)
	provider.Revoke(cur)
	p.stop(t, syscall.SIGTERM, 30*time.Second)
	p = startHandler(t, "server 2", append(env, "LISTEN_ADDR=127.0.0.1:0", "SWEEP_INTERVAL=24h"), dir)
	p.waitListening(t, 30*time.Second)
	waitReady(t, client, p, 30*time.Second)
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.addr+"/api/connections/xero/refresh", nil)
	if code, body := do(t, client, req); code != http.StatusFailedDependency || !strings.Contains(string(body), "xero-refresh-token") {
		t.Fatalf("force refresh after revocation: %d %s; want 424 naming the secret to replace", code, body)
	}
	r = runHandler(t, env, dir, "", "status")
	if r.code != 1 || !strings.Contains(r.stdout, "needs_reauthorization") || !strings.Contains(r.stdout, "xero-refresh-token") {
		t.Fatalf("after the grant died: exit %d, want 1, needs_reauthorization and the secret to replace:\n%s%s", r.code, r.stdout, redact(r.stderr))
	}
	for _, secret := range []string{clientSecret, rt, cur} {
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Fatal("handler status printed a secret")
		}
	}
}
