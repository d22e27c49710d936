package broker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

const interruptedPhrase = "was interrupted after the provider may have rotated the token"

// TestInterruptedRedemptionIsReportedPrecisely: a redemption whose answer
// never arrived leaves its mark beside the lock. The next refresh sends the
// same refresh token once more (the provider may never have received it)
// and, when the provider refuses it, says which refresh was interrupted,
// when and where: in the 424, in status and in an ERROR line. Without the
// mark it said "re-authorize", as for a grant revoked by its user.
func TestInterruptedRedemptionIsReportedPrecisely(t *testing.T) {
	tests := []struct {
		name string
		// lost: the provider commits the rotation and the answer is lost
		// (the mark stays); otherwise the provider refuses the first
		// attempt outright (the mark is settled).
		lost  bool
		grace time.Duration
		// wantInterrupted: the second call reports the interruption;
		// wantOK: it is served.
		wantInterrupted, wantOK bool
		// wantRequests is the provider's token requests over both calls.
		wantRequests int
	}{
		{name: "lost answer, no grace", lost: true, wantInterrupted: true, wantRequests: 2},
		// The provider's grace accepts the old token; the oauth client
		// retries a lost answer inside the grace itself, so the first call
		// is served already.
		{name: "lost answer, reuse grace", lost: true, grace: 30 * time.Minute, wantOK: true, wantRequests: 2},
		{name: "refused outright: no interruption", wantRequests: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testprovider.Config{Rotate: true, ReuseGrace: tt.grace})
			c := e.conn("xero", broker.GrantRefreshToken)
			c.ReuseGrace = tt.grace
			e.seed(c)
			ctx := context.Background()
			if tt.lost {
				e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultProcessedButLost})
			} else {
				e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultInvalidGrant})
			}
			var logs syncBuffer
			b := e.broker([]broker.Connection{c}, withLogs(&logs), func(o *broker.Options) { o.Instance = "instance-a" })
			_, first := b.Token(ctx, "xero", 0)
			if tt.wantOK {
				if first != nil {
					t.Fatalf("first call: %v; want the reuse grace to serve it", first)
				}
			} else if first == nil {
				t.Fatal("first call served; want the injected fault to fail it")
			}
			_, err := b.Token(ctx, "xero", 0)
			if got := e.provider.Stats().TokenRequests; got != tt.wantRequests {
				t.Errorf("%d token requests, want %d (the old token is tried once)", got, tt.wantRequests)
			}
			var be *broker.Error
			switch {
			case tt.wantOK:
				if err != nil {
					t.Fatalf("second call: %v", err)
				}
			case tt.wantInterrupted:
				if !errors.As(err, &be) || be.Code != broker.CodeRejected || !strings.Contains(be.Message, "on instance instance-a "+interruptedPhrase) {
					t.Fatalf("second call: %v; want a 424 saying the refresh on instance-a %s", err, interruptedPhrase)
				}
				if st, _ := b.ConnectionStatus(ctx, "xero"); st.LastError == nil || !strings.Contains(st.LastError.Message, interruptedPhrase) {
					t.Errorf("status %+v does not say so", st.LastError)
				}
				if !strings.Contains(logs.String(), `"level":"ERROR"`) || !strings.Contains(logs.String(), `"event":"refresh.interrupted_lost"`) {
					t.Errorf("no ERROR refresh.interrupted_lost line:\n%s", logs.String())
				}
			default:
				if err == nil || strings.Contains(err.Error(), interruptedPhrase) {
					t.Fatalf("second call: %v; want the cool-down's answer, not an interruption", err)
				}
			}
		})
	}
}

// TestRedemptionMarkLifecycle: the mark is in place while the provider
// holds the request, names a hash of the token and the instance (never
// the token), and is gone once the answer is durable.
func TestRedemptionMarkLifecycle(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	rt := e.storedRefreshToken(c)
	committed, release := make(chan struct{}), make(chan struct{})
	e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultCommitThenHold, Committed: committed, Release: release})
	b := e.broker([]broker.Connection{c}, func(o *broker.Options) { o.Instance = "instance-a" })
	done := make(chan error, 1)
	go func() { _, err := b.Token(context.Background(), "xero", 0); done <- err }()
	<-committed
	mark := filepath.Join(e.dir, "locks", "xero.mark")
	data, err := os.ReadFile(mark)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"instance":"instance-a"`) || strings.Contains(string(data), rt.Reveal()) {
		t.Fatalf("mark while the provider holds the answer: %s; want the instance and no token", data)
	}
	if fi, err := os.Stat(e.journal(c)); err != nil || fi.Size() != 0 {
		t.Fatalf("the journal must exist, empty, before the answer arrives (so the record is one append): %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(mark); len(data) != 0 {
		t.Errorf("mark left after a refresh that succeeded: %s", data)
	}
}

// TestCallerThatGivesUpKeepsItsInvocationOpen: a caller whose context ends
// while the provider is answering returns only once the new refresh token
// is durable, so the host, which drains invocations before it kills a
// worker, does not kill it in the window. Before, the caller returned at
// once and the refresh went on outside any invocation.
func TestCallerThatGivesUpKeepsItsInvocationOpen(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	seeded := e.storedRefreshToken(c)
	committed, release := make(chan struct{}), make(chan struct{})
	e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultCommitThenHold, Committed: committed, Release: release})
	b := e.broker([]broker.Connection{c})
	ctx, cancel := context.WithCancel(context.Background())
	type outcome struct {
		err     error
		durable bool // the new refresh token was durable when the caller returned
	}
	done := make(chan outcome, 1)
	go func() {
		_, err := b.Token(ctx, "xero", 0)
		has, _ := e.locker.(broker.WriteAheadChecker).HasWriteAhead(context.Background(), "xero")
		s, _ := e.store.SecretStore.Get(context.Background(), c.Secrets.RefreshToken)
		done <- outcome{err: err, durable: has || s.Value != seeded}
	}()
	<-committed
	cancel()
	close(release)
	o := <-done
	if !o.durable {
		t.Fatalf("the caller returned (%v) before the rotated refresh token was durable: its invocation could end, and the host kill the worker, inside the window", o.err)
	}
}

// TestNoRedemptionWithoutACaller: a flight that every caller left before
// the provider was called redeems nothing: no invocation would cover it.
func TestNoRedemptionWithoutACaller(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	b := e.broker([]broker.Connection{c})
	held, err := e.locker.Lock(context.Background(), "xero")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := b.Token(ctx, "xero", 0); done <- err }()
	cancel()
	if err := <-done; code(err) != broker.CodeUnavailable {
		t.Fatalf("caller: %v; want 503", err)
	}
	_ = held.Release(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := b.ConnectionStatus(context.Background(), "xero")
		if st.LastError != nil && strings.Contains(st.LastError.Message, "every caller gave up") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the flight did not end as expected; status %+v", st.LastError)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := e.provider.Stats().TokenRequests; n != 0 {
		t.Errorf("%d token requests after every caller left; want 0", n)
	}
}
