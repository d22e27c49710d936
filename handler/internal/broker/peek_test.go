package broker_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// TestPeekIsTokensFirstStep: Peek answers exactly when Token would serve
// from memory, with the same token and the same observation, and does no
// I/O either way; when it misses, it observes nothing and Token answers as
// it always has (a refresh, the store, or its error).
func TestPeekIsTokensFirstStep(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// arrange sets up the world and returns the broker and connection
		// name to peek at.
		arrange     func(t *testing.T, e *env, rec *recorder) (*broker.Broker, string)
		minValidity time.Duration
		hit         bool
		// tokenCode is Token's error code after a miss ("" for a token),
		// tokenSource where it came from.
		tokenCode   broker.ErrorCode
		tokenSource broker.Source
	}{
		{name: "hit", minValidity: 10 * time.Minute, hit: true,
			arrange: func(t *testing.T, e *env, rec *recorder) (*broker.Broker, string) {
				b := warm(t, e, rec)
				e.clock.Advance(20 * time.Minute)
				return b, "xero"
			}},
		{name: "near expiry: inside the refresh margin", tokenSource: broker.SourceRefresh,
			arrange: func(t *testing.T, e *env, rec *recorder) (*broker.Broker, string) {
				b := warm(t, e, rec)
				e.clock.Advance(56 * time.Minute) // 4 minutes left, margin 5
				return b, "xero"
			}},
		{name: "minValidity beyond what is left", minValidity: 45 * time.Minute, tokenSource: broker.SourceRefresh,
			arrange: func(t *testing.T, e *env, rec *recorder) (*broker.Broker, string) {
				b := warm(t, e, rec)
				e.clock.Advance(30 * time.Minute)
				return b, "xero"
			}},
		{name: "minValidity beyond what the provider grants", minValidity: 59*time.Minute + 30*time.Second, tokenCode: broker.CodeBadRequest,
			arrange: func(t *testing.T, e *env, rec *recorder) (*broker.Broker, string) {
				return warm(t, e, rec), "xero"
			}},
		{name: "minValidity out of range", minValidity: broker.MaxMinValidity + time.Second, tokenCode: broker.CodeBadRequest,
			arrange: func(t *testing.T, e *env, rec *recorder) (*broker.Broker, string) {
				return warm(t, e, rec), "xero"
			}},
		{name: "failure recorded, token still valid: served", hit: true,
			arrange: func(t *testing.T, e *env, rec *recorder) (*broker.Broker, string) {
				b := failAfterWarm(t, e, rec)
				return b, "xero"
			}},
		{name: "failure recorded, cool-down refuses what memory cannot give", minValidity: 45 * time.Minute, tokenCode: broker.CodeRejected,
			arrange: func(t *testing.T, e *env, rec *recorder) (*broker.Broker, string) {
				return failAfterWarm(t, e, rec), "xero"
			}},
		{name: "not configured", tokenCode: broker.CodeNotConfigured,
			arrange: func(t *testing.T, e *env, rec *recorder) (*broker.Broker, string) {
				return e.broker([]broker.Connection{e.conn("xero", broker.GrantRefreshToken)}, observed(rec)), "xero"
			}},
		{name: "unknown connection", tokenCode: broker.CodeNotFound,
			arrange: func(t *testing.T, e *env, rec *recorder) (*broker.Broker, string) {
				return warm(t, e, rec), "nope"
			}},
		{name: "cold instance: the store's token is not peeked at", tokenSource: broker.SourceStore,
			arrange: func(t *testing.T, e *env, rec *recorder) (*broker.Broker, string) {
				warm(t, e, &recorder{})
				return e.broker([]broker.Connection{e.conn("xero", broker.GrantRefreshToken)}, observed(rec)), "xero"
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testprovider.Config{Rotate: true, AccessTokenLifetime: time.Hour})
			rec := &recorder{}
			b, name := tt.arrange(t, e, rec)
			rec.take()
			gets, calls := e.store.gets.Load(), e.provider.Stats().TokenRequests

			tok, ok := b.Peek(name, tt.minValidity, e.clock.Now())
			if ok != tt.hit {
				t.Fatalf("Peek hit = %v, want %v", ok, tt.hit)
			}
			if g, c := e.store.gets.Load(), e.provider.Stats().TokenRequests; g != gets || c != calls {
				t.Fatalf("Peek did I/O: %d store reads, %d token requests", g-gets, c-calls)
			}
			peeked := rec.take()
			if want := servedLines(name, broker.SourceMemory, tt.hit); !slices.Equal(peeked, want) {
				t.Fatalf("Peek observed %q, want %q", peeked, want)
			}

			got, err := b.Token(ctx, name, tt.minValidity)
			observedByToken := rec.take()
			if tt.hit {
				if err != nil || got.Value != tok.Value || !got.Expiry.Equal(tok.Expiry) || got.TokenType != tok.TokenType {
					t.Fatalf("Token after a hit: %v (same token: %v); Peek and Token disagree", err, got.Value == tok.Value)
				}
				if !slices.Equal(observedByToken, peeked) {
					t.Fatalf("Token observed %q, Peek %q", observedByToken, peeked)
				}
				return
			}
			if tt.tokenCode != "" {
				if code(err) != tt.tokenCode {
					t.Fatalf("Token after a miss: %v, want %s", err, tt.tokenCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("Token after a miss: %v", err)
			}
			if !slices.Contains(observedByToken, "served "+name+" "+string(tt.tokenSource)) {
				t.Fatalf("Token observed %q, want a token served from %s", observedByToken, tt.tokenSource)
			}
		})
	}
}

// servedLines is what the recorder holds after a peek.
func servedLines(name string, s broker.Source, hit bool) []string {
	if !hit {
		return nil
	}
	return []string{"served " + name + " " + string(s)}
}

func observed(rec *recorder) brokerOption {
	return func(o *broker.Options) { o.Observer = rec }
}

// warm returns a broker holding a fresh one-hour token for xero.
func warm(t *testing.T, e *env, rec *recorder) *broker.Broker {
	t.Helper()
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	b := e.broker([]broker.Connection{c}, observed(rec))
	if _, err := b.Token(context.Background(), "xero", 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// failAfterWarm returns a broker whose xero token has 30 minutes left and
// whose last refresh (asked for 45 minutes) was refused: a failure is
// recorded and its cool-down runs.
func failAfterWarm(t *testing.T, e *env, rec *recorder) *broker.Broker {
	t.Helper()
	b := warm(t, e, rec)
	e.clock.Advance(30 * time.Minute)
	e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultInvalidGrant})
	if _, err := b.Token(context.Background(), "xero", 45*time.Minute); code(err) != broker.CodeRejected {
		t.Fatalf("refused refresh: %v", err)
	}
	return b
}
