package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// TestClientSecretRotationEndToEnd: the built handler, a connection naming
// two client secrets (secrets.clientSecrets), and a provider that accepts
// the old and the new one, then only the new one (an operator retiring the
// old secret at the provider). No caller's request fails, the rotating
// refresh token is never redeemed twice (the provider would revoke the
// chain), and the refused secret costs exactly one invalid_client.
func TestClientSecretRotationEndToEnd(t *testing.T) {
	t.Parallel()
	oldSecret, newSecret := "cs_old_"+rand.Text(), "cs_new_"+rand.Text()
	provider := testprovider.New(testprovider.Config{ClientID: "client", ClientSecret: oldSecret, ClientSecrets: []string{newSecret},
		AuthStyle: broker.AuthBasic, Rotate: true})
	ps := httptest.NewServer(provider)
	t.Cleanup(ps.Close)

	dir := t.TempDir()
	connFile := writeFile(t, dir, "connections.json", fmt.Sprintf(`{"connections": [
  {"name": "crm", "tokenUrl": %q, "clientAuth": "basic", "clientId": "client", "rotating": true,
   "secrets": {"clientSecrets": ["crm-client-secret", "crm-client-secret-2"]}}
]}`, ps.URL+"/token"))
	env := []string{"LOCAL_STATE_DIR=" + filepath.Join(dir, "state"), "CONNECTIONS_FILE=" + connFile}
	for name, value := range map[string]string{"crm-client-secret": oldSecret, "crm-client-secret-2": newSecret, "crm-refresh-token": provider.IssueRefreshToken()} {
		if r := runHandler(t, env, dir, value+"\n", "secret", "set", name); r.code != 0 {
			t.Fatalf("secret set %s: %d %s", name, r.code, redact(r.stderr))
		}
	}
	p := startHandler(t, "server", append(env, "LISTEN_ADDR=127.0.0.1:0", "SWEEP_INTERVAL=24h"), dir)
	p.waitListening(t, 30*time.Second)
	client := newClient(t, 1)
	waitReady(t, client, p, 30*time.Second)

	call := func(method, path string) tokenBody {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+p.addr+path, nil)
		code, body := do(t, client, req)
		if code != http.StatusOK {
			t.Fatalf("%s %s: %d %s", method, path, code, redact(string(body)))
		}
		var tok tokenBody
		_ = json.Unmarshal(body, &tok)
		return tok
	}
	first := call(http.MethodGet, "/api/token/crm")
	if !provider.ValidAccessToken(first.AccessToken) {
		t.Fatal("the first token is not valid at the provider")
	}
	// The operator retires the old secret at the provider.
	provider.SetClientSecrets(newSecret)
	call(http.MethodPost, "/api/connections/crm/refresh")
	second := call(http.MethodGet, "/api/token/crm")
	if second.AccessToken == first.AccessToken || !provider.ValidAccessToken(second.AccessToken) {
		t.Fatal("the forced refresh did not bring a new token the provider accepts")
	}
	st := provider.Stats()
	if st.TokenRequests != 3 || st.InvalidClient != 1 || st.ReuseDetected != 0 || st.ChainsRevoked != 0 {
		t.Fatalf("provider stats %+v; want 3 requests, 1 invalid_client (the retired secret, once), no reuse", st)
	}
	if lines, _, _ := p.logLines(); findEvent(lines, "client_secret.switched") == nil {
		t.Error("no client_secret.switched record")
	}
	if out := p.output(); strings.Contains(out, oldSecret) || strings.Contains(out, newSecret) {
		t.Fatal("a client secret reached the handler's output")
	}
}
