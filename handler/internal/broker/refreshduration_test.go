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

// TestStatusSaysHowLongTheLastRefreshTook: the instance that refreshed
// and, through the status beside the lock, its peer report the refresh's
// duration (a provider that takes 40ms makes it at least that, the call
// around it at most that); a failure later keeps the last success's; an
// instance whose locker keeps no status knows only its own.
func TestStatusSaysHowLongTheLastRefreshTook(t *testing.T) {
	const slow = 40 * time.Millisecond
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	a, b := e.peersSharingStatus(c)
	blind := e.broker([]broker.Connection{c}) // the plain locker: no shared status
	ctx := context.Background()

	if st, _ := a.ConnectionStatus(ctx, "xero"); st.LastRefreshMs != 0 {
		t.Fatalf("before any refresh: LastRefreshMs = %d; want 0 (unknown)", st.LastRefreshMs)
	}
	e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultSlow, Delay: slow})
	began := time.Now()
	if _, err := a.Token(ctx, "xero", 0); err != nil {
		t.Fatal(err)
	}
	upper := time.Since(began)
	inRange := func(who string, st broker.ConnectionStatus) {
		t.Helper()
		got := time.Duration(st.LastRefreshMs) * time.Millisecond
		if got < slow || got > upper+time.Millisecond {
			t.Errorf("%s: LastRefreshMs = %d; want between %v and %v", who, st.LastRefreshMs, slow, upper)
		}
	}
	for _, v := range []struct {
		who string
		b   *broker.Broker
	}{{"the refreshing instance", a}, {"its peer", b}} {
		st, _ := v.b.ConnectionStatus(ctx, "xero")
		inRange(v.who, st)
		raw, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), `"lastRefreshDurationMs":`) {
			t.Errorf("%s: JSON %s has no lastRefreshDurationMs", v.who, raw)
		}
	}
	if st, _ := blind.ConnectionStatus(ctx, "xero"); st.LastRefreshMs != 0 {
		t.Errorf("an instance that cannot read the shared status: LastRefreshMs = %d; want 0", st.LastRefreshMs)
	}

	// A failure on a: both still report the last success's duration.
	e.clock.Advance(2 * time.Hour)
	e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultServerError})
	if _, err := a.Token(ctx, "xero", 0); code(err) != broker.CodeProviderFailed {
		t.Fatalf("got %v, want provider_failed", err)
	}
	for _, v := range []struct {
		who string
		b   *broker.Broker
	}{{"the failing instance", a}, {"its peer", b}} {
		st, _ := v.b.ConnectionStatus(ctx, "xero")
		inRange(v.who+" after a failure", st)
	}
}
