package functions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
)

// deadlineBroker is the fake broker, recording the deadline of the context
// each call gets; its sweep defers the connections in deferred.
type deadlineBroker struct {
	*fakeBroker
	deferred []string

	mu        sync.Mutex
	deadlines map[string]time.Time
}

func (b *deadlineBroker) record(call string, ctx context.Context) {
	d, ok := ctx.Deadline()
	if !ok {
		d = time.Time{}
	}
	b.mu.Lock()
	b.deadlines[call] = d
	b.mu.Unlock()
}

func (b *deadlineBroker) deadline(call string) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.deadlines[call]
	return d, ok
}

func (b *deadlineBroker) Token(ctx context.Context, name string, minValidity time.Duration) (broker.AccessToken, error) {
	b.record("token", ctx)
	return b.fakeBroker.Token(ctx, name, minValidity)
}

func (b *deadlineBroker) Status(ctx context.Context) []broker.ConnectionStatus {
	b.record("status", ctx)
	return b.fakeBroker.Status(ctx)
}

func (b *deadlineBroker) Sweep(ctx context.Context, horizon time.Duration) []broker.SweepResult {
	b.record("sweep", ctx)
	res := b.fakeBroker.Sweep(ctx, horizon)
	for _, name := range b.deferred {
		res = append(res, broker.SweepResult{Connection: name, Action: broker.SweepDeferred, ExpiresOn: b.now.Add(20 * time.Minute)})
	}
	return res
}

const timerEnvelope = `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":false}},"Metadata":{}}`

// TestEachRouteHasItsOwnDeadline: a token or status call must answer inside
// ADF's minute, the timer inside host.json's functionTimeout; each gets a
// context that ends then, whatever the server's own timeouts. (A client
// that stops reading is cut by the server's connection guard, not by a
// write deadline: server.TestStalledClientIsCut.)
func TestEachRouteHasItsOwnDeadline(t *testing.T) {
	const sweepTimeout = 29 * time.Minute
	tests := []struct {
		name, method, target, body string
		call                       string
		want                       time.Duration
	}{
		{"token", http.MethodGet, "/api/token/xero", "", "token", functions.DefaultRequestTimeout},
		{"token by POST", http.MethodPost, "/api/token/xero", `{"minValidity":60}`, "token", functions.DefaultRequestTimeout},
		{"status", http.MethodGet, "/api/connections", "", "status", functions.DefaultRequestTimeout},
		{"timer", http.MethodPost, "/refresh", timerEnvelope, "sweep", sweepTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &deadlineBroker{fakeBroker: &fakeBroker{now: time.Now()}, deadlines: map[string]time.Time{}}
			h := functions.NewServer(b, functions.Options{SweepTimeout: sweepTimeout})
			req := httptest.NewRequest(tt.method, tt.target, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			before := time.Now()
			h.ServeHTTP(w, req)
			after := time.Now()
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			got, ok := b.deadline(tt.call)
			if !ok {
				t.Fatalf("the broker's %s was not called", tt.call)
			}
			if got.IsZero() {
				t.Fatalf("%s ran without a deadline; want %v", tt.call, tt.want)
			}
			if got.Before(before.Add(tt.want)) || got.After(after.Add(tt.want)) {
				t.Errorf("%s's deadline is %v after the request; want %v", tt.call, got.Sub(before).Round(time.Second), tt.want)
			}
		})
	}
}

// slowBody is a request body that arrives after a pause.
type slowBody struct {
	pause time.Duration
	body  *strings.Reader
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.pause > 0 {
		time.Sleep(b.pause)
		b.pause = 0
	}
	return b.body.Read(p)
}

// TestTokenDeadlineCountsFromArrival: a token call's deadline counts from
// when the route is reached, not from when its body has been read; ADF's
// minute runs while the body trickles in. A call without a body reads the
// clock only when it misses memory, microseconds later (tokenRoute.serveParam).
// synctest's clock: the body's pause takes no real time.
func TestTokenDeadlineCountsFromArrival(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &deadlineBroker{fakeBroker: &fakeBroker{now: time.Now()}, deadlines: map[string]time.Time{}}
		h := functions.NewServer(b, functions.Options{})
		req := httptest.NewRequest(http.MethodPost, "/api/token/xero", &slowBody{pause: 20 * time.Second, body: strings.NewReader(`{"minValidity":60}`)})
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		arrived := time.Now()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		got, ok := b.deadline("token")
		if !ok {
			t.Fatal("the broker's Token was not called")
		}
		if want := arrived.Add(functions.DefaultRequestTimeout); !got.Equal(want) {
			t.Errorf("deadline %v after arrival; want %v, counted from arrival and not from the body's end", got.Sub(arrived), functions.DefaultRequestTimeout)
		}
	})
}

// TestTimerReportsWhatIsLeft: when the sweep defers connections, the
// invocation still answers 200 (the host would otherwise record a failed
// run), with one line per deferred connection and a summary of how many
// were done and how many are left.
func TestTimerReportsWhatIsLeft(t *testing.T) {
	tests := []struct {
		name     string
		deferred []string
		summary  string
	}{
		{"complete", nil, "sweep done: 3 connections, 1 failed, 0 warnings"},
		{"stopped", []string{"late-a", "late-b"}, "sweep stopped at the end of its period or before its deadline: 3 of 5 connections done, 2 left for the next tick"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &deadlineBroker{fakeBroker: &fakeBroker{now: time.Now()}, deadlines: map[string]time.Time{}, deferred: tt.deferred}
			rec := serve(functions.NewServer(b, functions.Options{}), http.MethodPost, "/refresh", []byte(timerEnvelope), http.Header{"Content-Type": {"application/json"}})
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			var inv struct{ Logs []string }
			if err := json.Unmarshal(rec.Body.Bytes(), &inv); err != nil {
				t.Fatal(err)
			}
			if last := inv.Logs[len(inv.Logs)-1]; !strings.HasPrefix(last, tt.summary) {
				t.Errorf("summary %q; want it to start %q", last, tt.summary)
			}
			for _, name := range tt.deferred {
				if !containsPrefix(inv.Logs, fmt.Sprintf("%s: deferred to the next tick", name)) {
					t.Errorf("no line says %s was deferred: %q", name, inv.Logs)
				}
			}
		})
	}
}

func containsPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// memProvider is a provider in memory that takes took to answer each
// token request and rotates refresh tokens strictly. Inside a synctest
// bubble took passes on the bubble's clock: parallel requests end
// together, as in real time, and nothing waits.
type memProvider struct {
	took time.Duration

	mu       sync.Mutex
	current  map[string]broker.Secret
	requests int
	reused   int
}

func (p *memProvider) issue(name string) broker.Secret {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.current[name] = broker.Secret("rt-" + name + "-0")
	return p.current[name]
}

func (p *memProvider) Token(ctx context.Context, c *broker.Connection, cred broker.Credentials) (*broker.Token, error) {
	select {
	case <-time.After(p.took):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	if cred.RefreshToken != p.current[c.Name] {
		p.reused++
		return nil, &broker.ProviderError{StatusCode: 400, Code: "invalid_grant", Permanent: true}
	}
	p.current[c.Name] = broker.Secret(fmt.Sprintf("rt-%s-%d", c.Name, p.requests))
	now := time.Now()
	return &broker.Token{AccessToken: broker.Secret(fmt.Sprintf("at-%s-%d", c.Name, p.requests)), TokenType: "Bearer",
		RefreshToken: p.current[c.Name], Expiry: now.Add(time.Hour), IssuedAt: now}, nil
}

// TestLongSweepAnswersInsideItsDeadline: the timer invocation, wired as
// main wires it, over 20 connections that all need a refresh from a
// provider that takes 40 s a request: 200 s of work at 4 at a time, in a
// 3-minute SweepTimeout (synctest's clock: nothing waits). The first
// invocation answers 200 inside its deadline and says how many are left;
// the next tick refreshes the rest and answers "sweep done".
func TestLongSweepAnswersInsideItsDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			n            = 20
			sweepTimeout = 3 * time.Minute
		)
		p := &memProvider{took: 40 * time.Second, current: map[string]broker.Secret{}}
		store, locker := localBackends(t)
		var conns []broker.Connection
		for i := range n {
			name := fmt.Sprintf("c%02d", i)
			c := broker.Connection{Name: name, Provider: "test", Grant: broker.GrantRefreshToken, TokenURL: "https://provider.invalid/token",
				AuthStyle: broker.AuthBasic, ClientID: clientID, Secrets: broker.DefaultSecretNames(name), Rotating: true,
				RefreshBefore: 5 * time.Minute, DefaultLifetime: time.Hour, KeepWarm: true}
			for secret, v := range map[string]broker.Secret{c.Secrets.ClientSecret: clientSecret, c.Secrets.RefreshToken: p.issue(name)} {
				if err := store.Set(context.Background(), secret, broker.StoredSecret{Value: v}); err != nil {
					t.Fatal(err)
				}
			}
			conns = append(conns, c)
		}
		// RefreshTimeout 50 s: the sweep keeps two of them, 100 s, in reserve.
		b, err := broker.New(broker.Options{Store: store, Locker: locker, Grant: p, Connections: conns,
			LockWait: time.Second, RefreshTimeout: 50 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close(context.Background())
		h := functions.NewServer(b, functions.Options{SweepTimeout: sweepTimeout, SweepHorizon: 10 * time.Minute})

		tick := func() []string {
			t.Helper()
			start := time.Now()
			rec := serve(h, http.MethodPost, "/refresh", []byte(timerEnvelope), http.Header{"Content-Type": {"application/json"}})
			if spent := time.Since(start); spent > sweepTimeout {
				t.Fatalf("the invocation took %v; its deadline was %v", spent, sweepTimeout)
			}
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d; the host records any non-2xx as a failed invocation", rec.Code)
			}
			var inv struct{ Logs []string }
			if err := json.Unmarshal(rec.Body.Bytes(), &inv); err != nil {
				t.Fatal(err)
			}
			return inv.Logs
		}

		logs := tick()
		summary := logs[len(logs)-1]
		var done, total, left int
		if _, err := fmt.Sscanf(summary, "sweep stopped at the end of its period or before its deadline: %d of %d connections done, %d left", &done, &total, &left); err != nil {
			t.Fatalf("first tick's summary %q: want it to say how many are left (%v)", summary, err)
		}
		if total != n || done+left != n || done == 0 || left == 0 {
			t.Fatalf("first tick: %q", summary)
		}

		time.Sleep(5 * time.Minute)
		logs = tick()
		if summary := logs[len(logs)-1]; !strings.HasPrefix(summary, fmt.Sprintf("sweep done: %d connections, 0 failed", n)) {
			t.Fatalf("second tick's summary %q; want every connection done\n%s", summary, strings.Join(logs, "\n"))
		}
		// A connection the first tick refreshed may come up again at its
		// own point in the refresh cycle (broker/sweep.go spreads a
		// cohort that way); every other refresh is one the first left.
		refreshed, turns := 0, 0
		for _, l := range logs {
			switch {
			case strings.Contains(l, ": refreshed (its turn in the refresh cycle"):
				turns++
			case strings.Contains(l, ": refreshed ("):
				refreshed++
			}
		}
		if refreshed != left {
			t.Errorf("the second tick refreshed %d connections for want of a token; want the %d the first left", refreshed, left)
		}
		if p.requests != n+turns || p.reused != 0 {
			t.Errorf("%d token requests (%d of them turns in the cycle), %d reused refresh tokens; want one request per connection and turn", p.requests, turns, p.reused)
		}
	})
}

// waitingBroker is a miss that never comes back: its Token waits for the
// request's context, as a flight the broker joins does.
type waitingBroker struct{ *fakeBroker }

func (b waitingBroker) Token(ctx context.Context, name string, _ time.Duration) (broker.AccessToken, error) {
	<-ctx.Done()
	return broker.AccessToken{}, &broker.Error{Code: broker.CodeUnavailable, Connection: name, Message: "gave up waiting: " + ctx.Err().Error(), RetryAfter: 5 * time.Second}
}

// TestAMissStillEndsAtTheDeadline: the token route arms its deadline only
// when something waits (requestDeadline), and a miss that waits is
// answered 503 with Retry-After at RequestTimeout, not later.
func TestAMissStillEndsAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 7 * time.Second
		h := functions.NewServer(waitingBroker{&fakeBroker{now: time.Now()}}, functions.Options{RequestTimeout: timeout})
		w := httptest.NewRecorder()
		began := time.Now()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/api/token/xero", nil))
		if took := time.Since(began); took != timeout {
			t.Errorf("answered after %v; want %v", took, timeout)
		}
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
			t.Errorf("status %d, Retry-After %q; want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"))
		}
	})
}
