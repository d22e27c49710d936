package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// standbyConn is a refresh-token connection with a standby grant.
func (e *env) standbyConn(name string) broker.Connection {
	c := e.conn(name, broker.GrantRefreshToken)
	c.Standby = true
	c.Secrets.StandbyRefreshToken = broker.DefaultStandbySecretName(name)
	return c
}

// seedStandby stores a refresh token of a second chain (a second consent
// of the same user and client) as c's standby, and returns it.
func (e *env) seedStandby(c broker.Connection) string {
	e.t.Helper()
	rt := e.provider.IssueRefreshToken()
	if err := e.store.SecretStore.Set(context.Background(), c.Secrets.StandbyRefreshToken,
		broker.StoredSecret{Value: broker.Secret(rt), UpdatedOn: e.clock.Now()}); err != nil {
		e.t.Fatal(err)
	}
	return rt
}

func (e *env) stored(name string) broker.StoredSecret {
	e.t.Helper()
	s, err := e.store.SecretStore.Get(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// TestStandbyPromotedWhenThePrimaryFamilyIsLost: whatever revokes the
// primary grant (the user, or reuse detection after a lost rotation), the
// standby takes its place under the lock, durably, the caller is served,
// an ERROR line and the status say so, and the next loss, with no standby
// left, is a 424 again.
func TestStandbyPromotedWhenThePrimaryFamilyIsLost(t *testing.T) {
	tests := []struct {
		name string
		// lose revokes the primary family; it may fail one call, never
		// with a 424.
		lose func(t *testing.T, e *env, b *broker.Broker, c broker.Connection)
	}{
		{"revoked at the provider", func(t *testing.T, e *env, b *broker.Broker, c broker.Connection) {
			if !e.provider.Revoke(e.storedRefreshToken(c).Reveal()) {
				t.Fatal("the primary refresh token is unknown to the provider")
			}
		}},
		{"reuse after a rotation whose answer was lost", func(t *testing.T, e *env, b *broker.Broker, c broker.Connection) {
			// The provider rotates, the answer never arrives: the new
			// refresh token is lost, and the next redemption of the old
			// one is reuse, which revokes the family.
			e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultProcessedButLost})
			if _, err := b.Token(context.Background(), c.Name, 0); err == nil || code(err) == broker.CodeRejected {
				t.Fatalf("the lost answer: %v, want a failure other than 424", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, testprovider.Config{Rotate: true, AccessTokenLifetime: 30 * time.Minute})
			c := e.standbyConn("xero")
			e.seed(c)
			standby := e.seedStandby(c)
			var logs syncBuffer
			b := e.broker([]broker.Connection{c}, withLogs(&logs))
			ctx := context.Background()
			if _, err := b.Token(ctx, "xero", 0); err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(time.Hour)
			tc.lose(t, e, b, c)
			e.clock.Advance(time.Hour)

			tok, err := b.Token(ctx, "xero", 0)
			if err != nil {
				t.Fatalf("after the primary family was lost: %v; want the standby promoted and a token", err)
			}
			if !e.provider.ValidAccessToken(tok.Value.Reveal()) {
				t.Fatal("the token served is not valid at the provider")
			}
			// The primary is now the standby's chain, durably; the
			// standby is used up.
			live, ok := e.provider.CurrentRefreshToken(standby)
			if !ok || e.storedRefreshToken(c).Reveal() != live {
				t.Fatal("the stored primary refresh token is not the standby chain's current one")
			}
			if s := e.stored(c.Secrets.StandbyRefreshToken); !s.Value.IsZero() {
				t.Fatal("the standby secret still holds a token after its promotion")
			}
			if !strings.Contains(logs.String(), `"level":"ERROR","msg":"the primary grant was revoked by the provider; the standby grant was promoted`) ||
				!strings.Contains(logs.String(), `"event":"standby.promoted"`) {
				t.Fatalf("no ERROR standby.promoted line in\n%s", logs.String())
			}
			st, _ := b.ConnectionStatus(ctx, "xero")
			if st.State != broker.StateStandbyUsed || st.Standby != broker.StandbyUsed || !strings.Contains(st.NextAction, `secret "xero-standby-refresh-token"`) {
				t.Fatalf("status %+v, want standby_used with the consent link", st)
			}
			if strings.Contains(logs.String(), standby) || strings.Contains(logs.String(), live) {
				t.Fatal("a refresh token reached the logs")
			}

			// Still served after the promotion, without the provider
			// seeing reuse of the promoted family.
			e.clock.Advance(time.Hour)
			if _, err := b.Token(ctx, "xero", 0); err != nil {
				t.Fatal(err)
			}
			if !e.provider.Revoke(e.storedRefreshToken(c).Reveal()) {
				t.Fatal("the promoted chain is unknown")
			}
			e.clock.Advance(time.Hour)
			if _, err := b.Token(ctx, "xero", 0); code(err) != broker.CodeRejected {
				t.Fatalf("second loss without a standby: %v, want 424", err)
			}
		})
	}
}

// TestWithoutStandbyTheLossIsA424: the same loss without a standby grant
// is what it was: 424.
func TestWithoutStandbyTheLossIsA424(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	b := e.broker([]broker.Connection{c})
	e.provider.Revoke(e.storedRefreshToken(c).Reveal())
	if _, err := b.Token(context.Background(), "xero", 0); code(err) != broker.CodeRejected {
		t.Fatalf("got %v, want 424", err)
	}
}

// TestInterruptedPromotionIsFinished: a process killed after the promotion
// wrote the primary and before it emptied the standby leaves both with the
// same token. The next refresh empties the standby before it redeems, so
// the standby is never redeemed as a second copy (reuse, which would
// revoke the promoted family).
func TestInterruptedPromotionIsFinished(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.standbyConn("xero")
	c.IdleExpiry = 60 * 24 * time.Hour
	e.seed(c)
	same := e.storedRefreshToken(c)
	if err := e.store.SecretStore.Set(context.Background(), c.Secrets.StandbyRefreshToken, broker.StoredSecret{Value: same, UpdatedOn: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	b := e.broker([]broker.Connection{c})
	ctx := context.Background()
	if _, err := b.Token(ctx, "xero", 0); err != nil {
		t.Fatal(err)
	}
	if s := e.stored(c.Secrets.StandbyRefreshToken); !s.Value.IsZero() {
		t.Fatal("the standby still holds the promoted token")
	}
	// A sweep long after finds nothing to keep alive, and redeems nothing
	// twice.
	e.clock.Advance(40 * 24 * time.Hour)
	for _, r := range b.Sweep(ctx, 10*time.Minute) {
		if r.Standby != "" {
			t.Errorf("sweep standby: %s (%v), want nothing", r.Standby, r.StandbyErr)
		}
	}
	if st := e.provider.Stats(); st.ReuseDetected != 0 || st.ChainsRevoked != 0 {
		t.Fatalf("provider stats %+v: a token was redeemed twice", st)
	}
}

// TestSweepKeepsTheStandbyAlive: the sweep redeems a standby idle for half
// its idle expiry, keeps the rotated token through the write-ahead path,
// and never serves its access token; a standby the provider refuses is
// emptied and reported.
func TestSweepKeepsTheStandbyAlive(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true, AccessTokenLifetime: time.Hour})
	c := e.standbyConn("xero")
	c.IdleExpiry = 60 * 24 * time.Hour
	e.seed(c)
	standby := e.seedStandby(c)
	var logs syncBuffer
	b := e.broker([]broker.Connection{c}, withLogs(&logs))
	ctx := context.Background()

	sweep := func() broker.SweepResult {
		t.Helper()
		res := b.Sweep(ctx, 10*time.Minute)
		if len(res) != 1 {
			t.Fatalf("%d results", len(res))
		}
		return res[0]
	}
	if r := sweep(); r.Standby != "" {
		t.Fatalf("fresh standby: %s, want nothing", r.Standby)
	}
	tok, err := b.Token(ctx, "xero", 0)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(31 * 24 * time.Hour)
	r := sweep()
	if r.Standby != broker.SweepKeptAlive {
		t.Fatalf("standby idle 31 of 60 days: %s (%v), want kept_alive", r.Standby, r.StandbyErr)
	}
	live, ok := e.provider.CurrentRefreshToken(standby)
	if s := e.stored(c.Secrets.StandbyRefreshToken); !ok || live == standby || s.Value.Reveal() != live || !s.UpdatedOn.Equal(e.clock.Now()) {
		t.Fatal("the standby's rotated refresh token was not stored")
	}
	if e.storedRefreshToken(c).Reveal() == live {
		t.Fatal("the standby's token went to the primary")
	}
	if got, err := b.Token(ctx, "xero", 0); err != nil || got.Value == tok.Value && !strings.Contains(logs.String(), `"event":"standby.kept_alive"`) {
		t.Fatalf("Token after keep-alive: %v; logs:\n%s", err, logs.String())
	}
	if r := sweep(); r.Standby != "" {
		t.Fatalf("just kept alive: %s, want nothing", r.Standby)
	}

	// A standby the provider refuses is emptied, so that it is never
	// promoted for nothing, and said so.
	e.provider.Revoke(live)
	e.clock.Advance(31 * 24 * time.Hour)
	if r := sweep(); r.Standby != broker.SweepFailed || r.StandbyErr == nil {
		t.Fatalf("dead standby: %s, want failed", r.Standby)
	}
	if s := e.stored(c.Secrets.StandbyRefreshToken); !s.Value.IsZero() {
		t.Fatal("the dead standby was kept")
	}
	if !strings.Contains(logs.String(), `"event":"standby.lost"`) {
		t.Fatal("no standby.lost line")
	}
	if st, _ := b.ConnectionStatus(ctx, "xero"); st.State != broker.StateStandbyUsed {
		t.Fatalf("status %+v, want standby_used", st)
	}
	if st := e.provider.Stats(); st.ReuseDetected != 0 {
		t.Fatalf("provider stats %+v", st)
	}
}

// TestStandbyStatus: the status names the standby's state and how to mint
// one.
func TestStandbyStatus(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.standbyConn("xero")
	plain := e.conn("plain", broker.GrantRefreshToken)
	e.seed(c)
	e.seed(plain)
	b := e.broker([]broker.Connection{c, plain})
	ctx := context.Background()
	st, _ := b.ConnectionStatus(ctx, "xero")
	if st.Standby != broker.StandbyMissing || !strings.Contains(st.NextAction, "handler consent-link xero") {
		t.Fatalf("no standby stored: %+v", st)
	}
	e.seedStandby(c)
	if st, _ := b.ConnectionStatus(ctx, "xero"); st.Standby != broker.StandbyReady || st.State == broker.StateStandbyUsed {
		t.Fatalf("standby stored: %+v", st)
	}
	if st, _ := b.ConnectionStatus(ctx, "plain"); st.Standby != "" {
		t.Fatalf("no standby configured: %+v", st)
	}
}
