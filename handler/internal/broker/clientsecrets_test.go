package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// TestClientSecretRotation: a connection naming two client secrets keeps
// working while the provider accepts the old and the new one, then only the
// new one; the refresh token is never redeemed twice (a rotating provider
// would revoke the chain), each secret is sent at most once per refresh,
// and the one that worked is sent first afterwards.
func TestClientSecretRotation(t *testing.T) {
	const newSecret = "n3w-s3cr3t"
	e := newEnv(t, testprovider.Config{Rotate: true, AccessTokenLifetime: 30 * time.Minute, ClientSecrets: []string{newSecret}})
	c := e.conn("crm", broker.GrantRefreshToken)
	c.ClientSecrets = []string{c.Secrets.ClientSecret, "crm-client-secret-next"}
	e.seed(c)
	ctx := context.Background()
	if err := e.store.SecretStore.Set(ctx, "crm-client-secret-next", broker.StoredSecret{Value: newSecret}); err != nil {
		t.Fatal(err)
	}
	b := e.broker([]broker.Connection{c})

	steps := []struct {
		name         string
		accepted     []string // the provider's secrets from this step on
		wantRequests int      // token requests this step
		wantRefused  int      // of which invalid_client
	}{
		{"both accepted: the first is used", []string{clientSecret, newSecret}, 1, 0},
		{"old retired at the provider: the next one, without failing", []string{newSecret}, 2, 1},
		// Had the old one been sent first, this would be 2 and 1.
		{"the one that worked is sent first", []string{newSecret}, 1, 0},
	}
	for _, s := range steps {
		e.provider.SetClientSecrets(s.accepted...)
		before := e.provider.Stats()
		e.clock.Advance(26 * time.Minute) // inside the refresh margin
		if _, err := b.Token(ctx, "crm", 0); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		st := e.provider.Stats()
		if got := st.TokenRequests - before.TokenRequests; got != s.wantRequests {
			t.Errorf("%s: %d token requests, want %d", s.name, got, s.wantRequests)
		}
		if got := st.InvalidClient - before.InvalidClient; got != s.wantRefused {
			t.Errorf("%s: %d invalid_client, want %d", s.name, got, s.wantRefused)
		}
		if st.ReuseDetected != 0 || st.ChainsRevoked != 0 {
			t.Fatalf("%s: refresh token reused: %+v", s.name, st)
		}
		// The provider records the secret only by style; Basic carries it.
		reqs := e.provider.Requests()
		last := reqs[len(reqs)-1]
		if last.Fault != 0 || !last.BasicAuth {
			t.Fatalf("%s: last request %+v", s.name, last)
		}
	}
}

// TestAllClientSecretsRefused: when every secret is refused, each is sent
// once, the caller gets the provider's invalid_client, and the refresh
// token stays valid (it was never redeemed).
func TestAllClientSecretsRefused(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("crm", broker.GrantRefreshToken)
	c.ClientSecrets = []string{c.Secrets.ClientSecret, "crm-client-secret-next"}
	e.seed(c)
	ctx := context.Background()
	if err := e.store.SecretStore.Set(ctx, "crm-client-secret-next", broker.StoredSecret{Value: "also-wrong"}); err != nil {
		t.Fatal(err)
	}
	e.provider.SetClientSecrets("neither")
	b := e.broker([]broker.Connection{c})
	rt := e.storedRefreshToken(c)
	_, err := b.Token(ctx, "crm", 0)
	if code(err) != broker.CodeRejected {
		t.Fatalf("got %v, want provider_rejected", err)
	}
	if st := e.provider.Stats(); st.TokenRequests != 2 || st.InvalidClient != 2 {
		t.Fatalf("stats %+v: want each of the 2 secrets sent once", st)
	}
	if cur, ok := e.provider.CurrentRefreshToken(rt.Reveal()); !ok || cur != rt.Reveal() {
		t.Fatal("the refresh token was redeemed or revoked by refused requests")
	}
	// The cool-down holds: the same credentials are not sent again at once.
	if _, err := b.Token(ctx, "crm", 0); code(err) != broker.CodeRejected {
		t.Fatalf("second call: %v", err)
	}
	if st := e.provider.Stats(); st.TokenRequests != 2 {
		t.Fatalf("%d token requests after a second call; the cool-down did not hold", st.TokenRequests)
	}
}

// TestOneClientSecretUnchanged: with one secret, an invalid_client is one
// request, as before.
func TestOneClientSecretUnchanged(t *testing.T) {
	e := newEnv(t, testprovider.Config{})
	c := e.conn("crm", broker.GrantClientCredentials)
	e.seed(c)
	e.provider.SetClientSecrets("other")
	b := e.broker([]broker.Connection{c})
	if _, err := b.Token(context.Background(), "crm", 0); code(err) != broker.CodeRejected {
		t.Fatalf("got %v", err)
	}
	if st := e.provider.Stats(); st.TokenRequests != 1 {
		t.Fatalf("%d requests", st.TokenRequests)
	}
}

// TestEachClientSecretIsWarnedAbout: the sweep's expiry warning covers
// every secret a connection names, each logged once per threshold.
func TestEachClientSecretIsWarnedAbout(t *testing.T) {
	e := newEnv(t, testprovider.Config{})
	c := e.conn("ilevel", broker.GrantClientCredentials)
	c.ClientSecrets = []string{c.Secrets.ClientSecret, "ilevel-client-secret-next"}
	e.seed(c)
	ctx := context.Background()
	now := e.clock.Now()
	for name, days := range map[string]int{c.ClientSecrets[0]: 5, c.ClientSecrets[1]: 20} {
		if err := e.store.SecretStore.Set(ctx, name, broker.StoredSecret{Value: clientSecret, ExpiresOn: now.Add(time.Duration(days) * 24 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	var logs syncBuffer
	b := e.broker([]broker.Connection{c}, withLogs(&logs))
	for range 2 {
		r := b.Sweep(ctx, 10*time.Minute)[0]
		if len(r.Warnings) != 2 || !strings.Contains(r.Warnings[0], `"ilevel-client-secret" expires on`) || !strings.Contains(r.Warnings[0], "in 5 days") ||
			!strings.Contains(r.Warnings[1], `"ilevel-client-secret-next" expires on`) || !strings.Contains(r.Warnings[1], "in 20 days") {
			t.Fatalf("warnings %q; want one for each secret", r.Warnings)
		}
	}
	if n := strings.Count(logs.String(), `"event":"secret.expiring"`); n != 2 {
		t.Fatalf("%d secret.expiring records, want 2 (one per secret, not repeated)", n)
	}
}
