package broker_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// TestTokenRefreshedLineSaysHowLongItTook: the token.refreshed line
// carries duration_ms, the time from the token-endpoint call until the
// result was durable, which the workbook's latency percentiles read
// (infra/modules/workbook/refresh-percentiles.kql): a provider that takes
// 40ms makes it at least that, the call around it at most that. Both
// writers of the line are timed: a refresh, and an imported refresh token's
// validating refresh.
func TestTokenRefreshedLineSaysHowLongItTook(t *testing.T) {
	const slow = 40 * time.Millisecond
	tests := []struct {
		name string
		run  func(ctx context.Context, e *env, c broker.Connection, b *broker.Broker) error
	}{
		{"refresh", func(ctx context.Context, e *env, c broker.Connection, b *broker.Broker) error {
			_, err := b.Token(ctx, c.Name, 0)
			return err
		}},
		{"import", func(ctx context.Context, e *env, c broker.Connection, b *broker.Broker) error {
			_, err := b.ImportRefreshToken(ctx, c.Name, broker.Secret(e.provider.IssueRefreshToken()))
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testprovider.Config{Rotate: true})
			c := e.conn("xero", broker.GrantRefreshToken)
			e.seed(c)
			var logs syncBuffer
			b := e.broker([]broker.Connection{c}, withLogs(&logs))
			e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultSlow, Delay: slow})
			began := time.Now()
			if err := tt.run(context.Background(), e, c, b); err != nil {
				t.Fatal(err)
			}
			upper := time.Since(began)
			var found int
			for line := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				if m["event"] != "token.refreshed" {
					continue
				}
				found++
				ms, ok := m["duration_ms"].(float64)
				if got := time.Duration(ms) * time.Millisecond; !ok || got < slow || got > upper {
					t.Errorf("token.refreshed duration_ms = %v; want a number of milliseconds between %v and %v", m["duration_ms"], slow, upper)
				}
			}
			if found != 1 {
				t.Errorf("%d token.refreshed lines, want 1:\n%s", found, logs.String())
			}
		})
	}
}
