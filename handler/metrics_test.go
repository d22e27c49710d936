package main

import (
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/metrics/promtext"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// TestStandaloneMetrics runs the handler standalone and scrapes /metrics
// after a refresh, a cache hit and a failure: each shows in its counter,
// the latencies in their histograms, the exposition parses strictly, and
// no secret is in it.
func TestStandaloneMetrics(t *testing.T) {
	t.Parallel()
	clientSecret := "cs_" + rand.Text()
	provider := testprovider.New(testprovider.Config{ClientID: "client", ClientSecret: clientSecret, AuthStyle: broker.AuthBasic, Rotate: true})
	ps := httptest.NewServer(provider)
	t.Cleanup(ps.Close)
	rt := provider.IssueRefreshToken()

	dir := t.TempDir()
	connFile := writeFile(t, dir, "connections.json", fmt.Sprintf(`{"connections": [
  {"name": "xero", "tokenUrl": %q, "clientAuth": "basic", "clientId": "client", "rotating": true},
  {"name": "broken", "tokenUrl": %q, "clientAuth": "basic", "clientId": "client", "rotating": true}
]}`, ps.URL+"/token", ps.URL+"/token"))
	env := []string{"LOCAL_STATE_DIR=" + filepath.Join(dir, "state"), "CONNECTIONS_FILE=" + connFile}
	for _, s := range []struct{ name, value string }{
		{"xero-client-secret", clientSecret}, {"xero-refresh-token", rt},
		{"broken-client-secret", clientSecret}, {"broken-refresh-token", "rt_revoked_" + rand.Text()},
	} {
		if r := runHandler(t, env, dir, s.value+"\n", "secret", "set", s.name); r.code != 0 {
			t.Fatalf("secret set: %d %s", r.code, redact(r.stderr))
		}
	}
	p := startHandler(t, "server", append(env, "LISTEN_ADDR=127.0.0.1:0", "SWEEP_INTERVAL=24h"), dir)
	p.waitListening(t, 30*time.Second)
	client := newClient(t, 1)
	waitReady(t, client, p, 30*time.Second)
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get("http://" + p.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/api/token/xero"); code != http.StatusOK { // a refresh
		t.Fatalf("first token: %d %s", code, redact(body))
	}
	if code, _ := get("/api/token/xero"); code != http.StatusOK { // a cache hit
		t.Fatalf("second token: %d", code)
	}
	if code, _ := get("/api/token/broken"); code == http.StatusOK { // a failure
		t.Fatal("a refresh token the provider never issued was accepted")
	}
	code, text := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, text)
	}
	fams, err := promtext.Parse(text)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, text)
	}
	for _, want := range []struct {
		family, sample string
		value          float64
	}{
		{"tokenrefresher_refreshes_total", `tokenrefresher_refreshes_total{connection="xero",outcome="success"}`, 1},
		{"tokenrefresher_refreshes_total", `tokenrefresher_refreshes_total{connection="broken",outcome="provider_rejected"}`, 1},
		{"tokenrefresher_tokens_served_total", `tokenrefresher_tokens_served_total{connection="xero",source="refresh"}`, 1},
		{"tokenrefresher_tokens_served_total", `tokenrefresher_tokens_served_total{connection="xero",source="memory"}`, 1},
		{"tokenrefresher_token_endpoint_duration_seconds", `tokenrefresher_token_endpoint_duration_seconds_count{connection="xero",outcome="success"}`, 1},
		{"tokenrefresher_refresh_duration_seconds", `tokenrefresher_refresh_duration_seconds_count{connection="broken",outcome="provider_rejected"}`, 1},
		{"tokenrefresher_lock_wait_seconds", `tokenrefresher_lock_wait_seconds_count{connection="xero",outcome="acquired"}`, 1},
		{"tokenrefresher_token_age_seconds", `tokenrefresher_token_age_seconds_count{connection="xero",source="memory"}`, 1},
	} {
		f := fams[want.family]
		if f == nil {
			t.Errorf("no family %s in\n%s", want.family, text)
			continue
		}
		if got, ok := f.Samples[want.sample]; !ok || got != want.value {
			t.Errorf("%s = %v (present %v), want %v", want.sample, got, ok, want.value)
		}
	}
	for _, secret := range []string{clientSecret, rt} {
		if strings.Contains(text, secret) {
			t.Error("/metrics shows a secret")
		}
	}
}
