package broker_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// syncBuffer is a log sink safe for the broker's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func withLogs(buf *syncBuffer) brokerOption {
	return func(o *broker.Options) { o.Logger = slog.New(slog.NewJSONHandler(buf, nil)) }
}

// TestForceRefresh: an operator's force-refresh ends a failure's cool-down,
// refreshes a token that is still valid, and is rate-limited.
func TestForceRefresh(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	b := e.broker([]broker.Connection{c})
	ctx := context.Background()

	// A permanent failure, then its cool-down: no provider call.
	e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultInvalidGrant})
	if _, err := b.Token(ctx, "xero", 0); code(err) != broker.CodeRejected {
		t.Fatalf("got %v, want provider_rejected", err)
	}
	if _, err := b.Token(ctx, "xero", 0); code(err) != broker.CodeRejected || e.provider.Stats().TokenRequests != 1 {
		t.Fatalf("during the cool-down: %v after %d calls; want the record, 1 call", err, e.provider.Stats().TokenRequests)
	}

	st, err := b.ForceRefresh(ctx, "xero")
	if err != nil || st.State != broker.StateHealthy || st.LastError != nil {
		t.Fatalf("ForceRefresh: %+v, %v; want healthy", st, err)
	}
	if n := e.provider.Stats().TokenRequests; n != 2 {
		t.Fatalf("%d token requests, want 2", n)
	}

	// Too soon: refused with the wait, no call.
	_, err = b.ForceRefresh(ctx, "xero")
	var be *broker.Error
	if !errors.As(err, &be) || be.Code != broker.CodeTooManyRequests || be.RetryAfter <= 0 || be.RetryAfter > time.Minute {
		t.Fatalf("second ForceRefresh: %v; want too_many_requests with a Retry-After up to a minute", err)
	}
	// Later, a valid token is refreshed all the same.
	e.clock.Advance(time.Minute)
	if _, err := b.ForceRefresh(ctx, "xero"); err != nil {
		t.Fatal(err)
	}
	if st := e.provider.Stats(); st.TokenRequests != 3 || st.ReuseDetected != 0 {
		t.Fatalf("provider %+v; want 3 requests, no reuse", st)
	}
	if _, err := b.ForceRefresh(ctx, "nope"); code(err) != broker.CodeNotFound {
		t.Fatalf("unknown connection: %v", err)
	}
}

// TestSweepKeepsIdleRefreshTokensAlive: a connection not kept warm is left
// alone by the sweep until its refresh token has been idle for half the
// provider's limit, then redeemed once.
func TestSweepKeepsIdleRefreshTokensAlive(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true, AccessTokenLifetime: 30 * time.Minute})
	c := e.conn("xero", broker.GrantRefreshToken)
	c.KeepWarm = false
	c.IdleExpiry = 60 * 24 * time.Hour
	e.seed(c)
	var logs syncBuffer
	b := e.broker([]broker.Connection{c}, withLogs(&logs))
	ctx := context.Background()
	if _, err := b.Token(ctx, "xero", 0); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		after     time.Duration
		want      broker.SweepAction
		wantCalls int
	}{
		{time.Hour, broker.SweepFresh, 1},           // expired, but not kept warm
		{29 * 24 * time.Hour, broker.SweepFresh, 1}, // idle 29 days: under half of 60
		{2 * 24 * time.Hour, broker.SweepKeptAlive, 2},
		{time.Hour, broker.SweepFresh, 2}, // just redeemed
	}
	for _, tt := range tests {
		e.clock.Advance(tt.after)
		r := b.Sweep(ctx, 10*time.Minute)[0]
		if r.Action != tt.want || e.provider.Stats().TokenRequests != tt.wantCalls {
			t.Fatalf("after another %v: %s (%v), %d calls; want %s, %d calls", tt.after, r.Action, r.Err, e.provider.Stats().TokenRequests, tt.want, tt.wantCalls)
		}
		if r.Action == broker.SweepKeptAlive && !strings.Contains(r.Reason, "60 days") {
			t.Errorf("reason %q does not name the provider's limit", r.Reason)
		}
	}
	st, _ := b.ConnectionStatus(ctx, "xero")
	if want := e.clock.Now().Add(-time.Hour).Add(c.IdleExpiry); !st.RefreshTokenIdleExpiresOn.Equal(want) {
		t.Errorf("refreshTokenIdleExpiresOn %v, want %v", st.RefreshTokenIdleExpiresOn, want)
	}
	if !strings.Contains(logs.String(), `"event":"sweep.kept_alive"`) {
		t.Error("no sweep.kept_alive log record")
	}
}

// TestClientSecretExpiryWarnings: the sweep warns about a client secret
// expiring within 30 days on every run, and logs each threshold once;
// status names the date and what to do.
func TestClientSecretExpiryWarnings(t *testing.T) {
	e := newEnv(t, testprovider.Config{})
	c := e.conn("ilevel", broker.GrantClientCredentials)
	e.seed(c)
	ctx := context.Background()
	expires := e.clock.Now().Add(20 * 24 * time.Hour)
	if err := e.store.SecretStore.Set(ctx, c.Secrets.ClientSecret, broker.StoredSecret{Value: clientSecret, ExpiresOn: expires}); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	b := e.broker([]broker.Connection{c}, withLogs(&logs))

	tests := []struct {
		advance  time.Duration
		wantWarn string // in the sweep's warning
		wantLogs int    // secret.expiring records so far
	}{
		{0, "in 20 days", 1},
		{time.Hour, "in 19 days", 1}, // same threshold: not logged again
		{7 * 24 * time.Hour, "in 12 days", 2},
		{13 * 24 * time.Hour, "expired on", 3}, // 7 and 0 crossed at once: logged once
	}
	for _, tt := range tests {
		e.clock.Advance(tt.advance)
		r := b.Sweep(ctx, 10*time.Minute)[0]
		if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], tt.wantWarn) || !strings.Contains(r.Warnings[0], c.Secrets.ClientSecret) {
			t.Fatalf("warnings %q; want one naming %s and %q", r.Warnings, c.Secrets.ClientSecret, tt.wantWarn)
		}
		if n := strings.Count(logs.String(), `"event":"secret.expiring"`); n != tt.wantLogs {
			t.Fatalf("%d secret.expiring records, want %d", n, tt.wantLogs)
		}
	}
	st, _ := b.ConnectionStatus(ctx, "ilevel")
	if !st.ClientSecretExpiresOn.Equal(expires) || !strings.Contains(st.NextAction, c.Secrets.ClientSecret) {
		t.Errorf("status %+v: want the client secret's expiry and a next action naming it", st)
	}
}

// TestStatusShowsTheDiagnosis: a dead grant shows as needing
// reauthorization, with the category and a next action that names the
// secret to replace.
func TestStatusShowsTheDiagnosis(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	b := e.broker([]broker.Connection{c})
	ctx := context.Background()
	e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultInvalidGrant})
	if _, err := b.Token(ctx, "xero", 0); code(err) != broker.CodeRejected {
		t.Fatalf("got %v", err)
	}
	st, _ := b.ConnectionStatus(ctx, "xero")
	if st.State != broker.StateNeedsReauthorization || st.LastError == nil || st.LastError.Category != "reauthorize" ||
		!strings.Contains(st.NextAction, c.Secrets.RefreshToken) || st.RefreshTokenUpdatedOn.IsZero() {
		t.Fatalf("status %+v (last error %+v)", st, st.LastError)
	}
}
