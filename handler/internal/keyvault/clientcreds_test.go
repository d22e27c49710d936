package keyvault_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault/kvtest"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testclock"
)

// TestRefreshReusesTheClientSecret (issue 20 §1): a refresh reads the
// client secret from the vault only when the one read last is over 90
// minutes old, or the provider refused it (then read again, and sent once
// more only if the vault holds another), or the connection has a failure
// recorded; the refresh token and the access token are read on every
// refresh. Counted at the Key Vault double, through the real azsecrets
// client and keyvault.Store.
func TestRefreshReusesTheClientSecret(t *testing.T) {
	clk := testclock.New(clock)
	v := kvtest.New(t, &kvtest.Options{Now: clk.Now, InProcess: true})
	c := broker.Connection{Name: "crm", Provider: "test", Grant: broker.GrantRefreshToken, TokenURL: "https://provider.invalid/token",
		AuthStyle: broker.AuthBasic, ClientID: "client", Secrets: broker.DefaultSecretNames("crm"),
		RefreshBefore: 5 * time.Minute, DefaultLifetime: time.Hour}
	v.Put(c.Secrets.ClientSecret, "s1", time.Time{})
	v.Put(c.Secrets.RefreshToken, "rt", time.Time{})
	g := &secretGrant{now: clk.Now, accepted: []string{"s1"}}
	b, err := broker.New(broker.Options{Store: keyvault.New(v.Client, keyvault.Options{}), Locker: memLocker{&sync.Map{}},
		Grant: g, Connections: []broker.Connection{c}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })

	steps := []struct {
		name     string
		advance  time.Duration // before the step; tokens live an hour
		vault    string        // the client secret stored before the step, if any
		accepted []string      // the provider's client secrets from this step on
		// What the step costs and sends.
		wantSecretGets, wantRequests, wantRefused int
		wantSent                                  []string // the client secrets sent, in order
		wantErr                                   bool
	}{
		{name: "the first refresh reads it", accepted: []string{"s1"},
			wantSecretGets: 1, wantRequests: 1, wantSent: []string{"s1"}},
		{name: "replaced in the vault, the old one still accepted: the one read 56 minutes ago is sent",
			advance: 56 * time.Minute, vault: "s2", accepted: []string{"s1", "s2"},
			wantSecretGets: 0, wantRequests: 1, wantSent: []string{"s1"}},
		{name: "112 minutes after the read: read again, the new one sent",
			advance: 56 * time.Minute, accepted: []string{"s2"},
			wantSecretGets: 1, wantRequests: 1, wantSent: []string{"s2"}},
		{name: "refused while the vault holds another: read again, sent once more",
			advance: 56 * time.Minute, vault: "s3", accepted: []string{"s3"},
			wantSecretGets: 1, wantRequests: 2, wantRefused: 1, wantSent: []string{"s2", "s3"}},
		{name: "refused, and the vault holds the same: no second request",
			advance: 56 * time.Minute, accepted: []string{"nothing"},
			wantSecretGets: 1, wantRequests: 1, wantRefused: 1, wantSent: []string{"s3"}, wantErr: true},
		{name: "in the cool-down: the vault is read to compare, the provider not called",
			advance:        time.Minute,
			wantSecretGets: 1, wantRequests: 0, wantErr: true},
		{name: "a new secret stored in the cool-down is seen at once",
			advance: time.Minute, vault: "s4", accepted: []string{"s4"},
			wantSecretGets: 2, wantRequests: 1, wantSent: []string{"s4"}},
	}
	ctx := t.Context()
	for _, s := range steps {
		clk.Advance(s.advance)
		if s.vault != "" {
			v.Put(c.Secrets.ClientSecret, s.vault, time.Time{})
		}
		if s.accepted != nil {
			g.accept(s.accepted...)
		}
		gets, rtGets := v.GetsOf(c.Secrets.ClientSecret), v.GetsOf(c.Secrets.RefreshToken)
		sent, refused := g.snapshot()
		_, err := b.Token(ctx, c.Name, 0)
		if (err != nil) != s.wantErr {
			t.Fatalf("%s: Token error %v, want error %v", s.name, err, s.wantErr)
		}
		now, nowRefused := g.snapshot()
		got := now[len(sent):]
		if d := v.GetsOf(c.Secrets.ClientSecret) - gets; d != s.wantSecretGets {
			t.Errorf("%s: %d reads of the client secret, want %d", s.name, d, s.wantSecretGets)
		}
		if len(got) != s.wantRequests || nowRefused-refused != s.wantRefused || (s.wantSent != nil && !slices.Equal(got, s.wantSent)) {
			t.Errorf("%s: token requests with %q (%d refused); want %q (%d refused)", s.name, got, nowRefused-refused, s.wantSent, s.wantRefused)
		}
		if s.wantRequests > 0 && v.GetsOf(c.Secrets.RefreshToken) == rtGets {
			t.Errorf("%s: the refresh token was not read; another instance may have rotated it", s.name)
		}
	}
}

// secretGrant accepts the client secrets it is told and answers
// invalid_client to any other; it issues hour-long tokens and never
// rotates the refresh token. It records the client secret of each request.
type secretGrant struct {
	now      func() time.Time
	mu       sync.Mutex
	accepted []string
	sent     []string
	refused  int
}

func (g *secretGrant) accept(secrets ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.accepted = secrets
}

func (g *secretGrant) snapshot() (sent []string, refused int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.sent), g.refused
}

func (g *secretGrant) Token(ctx context.Context, c *broker.Connection, cred broker.Credentials) (*broker.Token, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	secret := cred.ClientSecret.Reveal()
	g.sent = append(g.sent, secret)
	if !slices.Contains(g.accepted, secret) {
		g.refused++
		return nil, &broker.ProviderError{StatusCode: 401, Code: "invalid_client", Permanent: true}
	}
	if cred.RefreshToken.Reveal() != "rt" {
		return nil, errors.New("secretGrant: unexpected refresh token")
	}
	now := g.now()
	return &broker.Token{AccessToken: broker.Secret("at-" + now.Format(time.RFC3339)), TokenType: "Bearer",
		Expiry: now.Add(time.Hour), IssuedAt: now}, nil
}
