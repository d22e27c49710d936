package functions

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// countingStore counts the reads and writes that reach the store.
type countingStore struct {
	broker.SecretStore
	gets, sets atomic.Int64
}

func (s *countingStore) Get(ctx context.Context, name string) (broker.StoredSecret, error) {
	s.gets.Add(1)
	return s.SecretStore.Get(ctx, name)
}

func (s *countingStore) Set(ctx context.Context, name string, v broker.StoredSecret) error {
	s.sets.Add(1)
	return s.SecretStore.Set(ctx, name, v)
}

// TestForgedCallbacksReadNothing: 1,000 forged callbacks, each with a
// cookie matching its state as any script can send, make no store call,
// and all get the same answer, whatever the connection they name and
// whether it exists; so do a used and an expired genuine state.
func TestForgedCallbacksReadNothing(t *testing.T) {
	w := newConsentWorld(t)
	store := &countingStore{SecretStore: w.store}
	w.routes.b = storeBroker{w.broker, store}
	w.routes.limit = &addrLimiter{burst: 5000, every: time.Millisecond, max: 10, buckets: map[string]bucket{}}

	// A genuine consent first, so that the key is in memory as it is in
	// any instance that has served a consent or a refresh.
	c := browser(t)
	genuine := w.consentCallback(c)
	if got := w.read(c.Get(genuine.String())); got.status != http.StatusOK {
		t.Fatalf("the genuine consent: %d %s", got.status, got.body)
	}

	forged := func(i int) string {
		payload := strings.Repeat("A", 64)
		switch i % 5 {
		case 0: // the shape of a signed state, for a connection that exists
			return "xero." + payload
		case 1: // for one that does not
			return "nope." + payload
		case 2: // a genuine state's connection, payload changed: the last
			// character replaced by one of four others (never by itself,
			// which would be the genuine state again)
			s := genuine.Query().Get("state")
			others := strings.ReplaceAll("ABCDE", s[len(s)-1:], "")
			return s[:len(s)-1] + string(others[i%4])
		case 3: // an old-style state
			return "xero." + consent.NewState()
		default: // another connection's name on a genuine payload
			s := genuine.Query().Get("state")
			return "nosecret" + s[strings.IndexByte(s, '.'):]
		}
	}
	call := func(state string) (int, string) {
		req := httptest.NewRequest("GET", callbackPath+"?code=c&state="+url.QueryEscape(state), nil)
		name, _, _ := strings.Cut(state, ".")
		req.AddCookie(&http.Cookie{Name: cookieName(name), Value: state})
		rec := httptest.NewRecorder()
		w.routes.callback(rec, req)
		return rec.Code, rec.Body.String()
	}
	gets, sets := store.gets.Load(), store.sets.Load()
	wantCode, wantBody := call(forged(0))
	for i := range 1000 {
		code, body := call(forged(i))
		if code != wantCode || body != wantBody {
			t.Fatalf("forged state %d: %d %s; want the same answer as the others: %d %s", i, code, body, wantCode, wantBody)
		}
	}
	if n, m := store.gets.Load()-gets, store.sets.Load()-sets; n != 0 || m != 0 {
		t.Fatalf("1,000 forged callbacks made %d store reads and %d writes; want none", n, m)
	}
	if wantCode != http.StatusBadRequest || !strings.Contains(wantBody, stateRefused) || strings.Contains(wantBody, "xero") {
		t.Fatalf("the answer %d %s should be a 400 that names no connection", wantCode, wantBody)
	}

	// A replayed genuine state, and an expired one, are answered the same.
	if code, body := call(genuine.Query().Get("state")); code != wantCode || body != wantBody {
		t.Fatalf("a used state: %d %s", code, body)
	}
	expired := w.consentCallback(browser(t)).Query().Get("state")
	w.advance(consent.PendingTTL)
	if code, body := call(expired); code != wantCode || body != wantBody {
		t.Fatalf("an expired state: %d %s", code, body)
	}
}

// TestCallbackRateIsBoundedPerAddress: past a burst, a client address gets
// 429 with Retry-After before anything is looked at, and other addresses
// are not affected. Behind the Functions host the address is the last
// X-Forwarded-For element.
func TestCallbackRateIsBoundedPerAddress(t *testing.T) {
	w := newConsentWorld(t)
	w.routes.forwardedByHost = true
	call := func(xff string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", callbackPath+"?state=xero."+strings.Repeat("A", 64), nil)
		req.RemoteAddr = "127.0.0.1:40000" // the host
		req.Header.Set("X-Forwarded-For", xff)
		rec := httptest.NewRecorder()
		w.routes.callback(rec, req)
		return rec
	}
	for i := range callbackBurst {
		if rec := call("198.51.100.7, 203.0.113.9"); rec.Code != http.StatusBadRequest {
			t.Fatalf("call %d: %d", i, rec.Code)
		}
	}
	rec := call("192.0.2.1, 203.0.113.9") // a forged first element changes nothing
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("past the burst: %d, Retry-After %q; want 429 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	if rec := call("203.0.113.10"); rec.Code != http.StatusBadRequest {
		t.Fatalf("another address: %d", rec.Code)
	}
	w.advance(callbackEvery)
	if rec := call("203.0.113.9"); rec.Code != http.StatusBadRequest {
		t.Fatalf("after %s: %d", callbackEvery, rec.Code)
	}
}

func TestAddrLimiterTableIsBounded(t *testing.T) {
	l := &addrLimiter{burst: 1, every: time.Minute, max: 3, buckets: map[string]bucket{}}
	now := time.Now()
	for i, a := range []string{"a", "b", "c"} {
		if ok, _ := l.allow(a, now); !ok {
			t.Fatalf("%d: refused", i)
		}
	}
	// The table is full of empty buckets: new addresses share one.
	if ok, _ := l.allow("d", now); !ok {
		t.Fatal("the shared bucket's first call refused")
	}
	if ok, _ := l.allow("e", now); ok {
		t.Fatal("the shared bucket allowed a second call")
	}
	if len(l.buckets) > 4 {
		t.Fatalf("%d buckets; want at most max+1", len(l.buckets))
	}
	// Refilled buckets make room again.
	if ok, _ := l.allow("f", now.Add(time.Minute)); !ok {
		t.Fatal("refused after the buckets refilled")
	}
}

func TestClientAddress(t *testing.T) {
	tests := []struct {
		remote, xff string
		hosted      bool
		want        string
	}{
		{"192.0.2.1:5000", "", false, "192.0.2.1"},
		{"192.0.2.1:5000", "198.51.100.1", false, "192.0.2.1"}, // standalone: the header is not read
		{"127.0.0.1:5000", "198.51.100.1, 203.0.113.5", true, "203.0.113.5"},
		{"127.0.0.1:5000", "203.0.113.5:61234", true, "203.0.113.5"},
		{"127.0.0.1:5000", "", true, "127.0.0.1"},
		{"[2001:db8:1:2:3:4:5:6]:5000", "", false, "2001:db8:1:2::/64"},
		{"127.0.0.1:5000", "2001:db8:1:2::9", true, "2001:db8:1:2::/64"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.remote
		if tt.xff != "" {
			r.Header.Set("X-Forwarded-For", tt.xff)
		}
		if got := clientAddress(r, tt.hosted); got != tt.want {
			t.Errorf("%s %q hosted %v: %q, want %q", tt.remote, tt.xff, tt.hosted, got, tt.want)
		}
	}
}

// TestConsentStartNeedsALink: the start route starts a consent only for a
// consent link's ticket signed for that connection and unexpired; its GET
// shows a page and spends nothing (a mail scanner may open it), its POST
// spends the link, once.
func TestConsentStartNeedsALink(t *testing.T) {
	w := newConsentWorld(t)
	w.routes.needTicket = true
	keys, err := w.routes.keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	start := func(method, ticket string) int {
		u := w.srv.URL + "/api/consent/xero"
		if ticket != "" {
			u += "?ticket=" + url.QueryEscape(ticket)
		}
		req, _ := http.NewRequest(method, u, nil)
		return w.read(noRedirect.Do(req)).status
	}
	sign := func(key []byte, name string, ttl time.Duration) string {
		ticket, _, err := consent.SignLink(key, name, w.now(), ttl)
		if err != nil {
			t.Fatal(err)
		}
		return ticket
	}
	valid := sign(keys.ticket, "xero", time.Hour)
	refused := []struct{ name, ticket string }{
		{"no ticket", ""},
		{"forged", "xero." + strings.Repeat("A", 64)},
		{"another connection's", sign(keys.ticket, "nosecret", time.Hour)},
		{"a state, not a ticket", consent.NewSignedPending(keys.state, "xero", "http://x/cb", w.now()).State},
		{"signed with another key", sign(consent.TicketKey([]byte("another")), "xero", time.Hour)},
	}
	for _, tt := range refused {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			if got := start(method, tt.ticket); got != http.StatusForbidden {
				t.Errorf("%s %s: %d, want 403", method, tt.name, got)
			}
		}
	}
	if w.get(consent.StateSecretName("xero")) != "" {
		t.Fatal("a refused start left a pending authorization")
	}
	for i := range 2 {
		if got := start(http.MethodGet, valid); got != http.StatusOK {
			t.Fatalf("GET %d of a valid link: %d, want 200 (the page with the button)", i+1, got)
		}
	}
	if w.get(consent.StateSecretName("xero")) != "" {
		t.Fatal("the link's GET began an authorization")
	}
	if got := start(http.MethodPost, valid); got != http.StatusSeeOther {
		t.Fatalf("POST of a valid link: %d, want 303 to the provider", got)
	}
	if got := start(http.MethodPost, valid); got != http.StatusForbidden {
		t.Fatalf("the same link again: %d, want 403", got)
	}
	late := sign(keys.ticket, "xero", time.Minute)
	w.advance(time.Minute)
	if got := start(http.MethodGet, late); got != http.StatusForbidden {
		t.Fatalf("an expired link: %d, want 403", got)
	}
	if _, _, err := consent.SignLink(keys.ticket, "xero", w.now(), consent.MaxLinkTTL+time.Second); !errors.Is(err, consent.ErrLinkTTL) {
		t.Fatalf("a link longer than MaxLinkTTL: %v, want ErrLinkTTL", err)
	}
}

// TestConsentLinkIsSingleUseAcrossInstances: two instances share the store
// and the locker, not their memory; a link spent on one is refused on the
// other, and of many simultaneous presses of one link exactly one starts.
func TestConsentLinkIsSingleUseAcrossInstances(t *testing.T) {
	w := newConsentWorld(t)
	locker, err := local.NewLocker(t.TempDir(), local.LockerOptions{PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	instances := make([]*httptest.Server, 4)
	for i := range instances {
		rt := *w.routes
		rt.needTicket, rt.tickets, rt.locker = true, &usedTickets{}, locker
		mux := http.NewServeMux()
		rt.register(mux)
		instances[i] = httptest.NewServer(mux)
		t.Cleanup(instances[i].Close)
	}
	keys, _ := w.routes.keys(context.Background())
	ticket, _, err := consent.SignLink(keys.ticket, "xero", w.now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	statuses := make(chan int, 4*len(instances))
	var wg sync.WaitGroup
	for range 4 {
		for _, srv := range instances {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := noRedirect.Post(srv.URL+"/api/consent/xero?ticket="+url.QueryEscape(ticket), "", nil)
				if err != nil {
					statuses <- 0
					return
				}
				resp.Body.Close()
				statuses <- resp.StatusCode
			}()
		}
	}
	wg.Wait()
	close(statuses)
	counts := map[int]int{}
	for s := range statuses {
		counts[s]++
	}
	if counts[http.StatusSeeOther] != 1 || counts[http.StatusForbidden] != 4*len(instances)-1 {
		t.Fatalf("answers %v; want one 303 and the rest 403", counts)
	}
	if s := w.get(consent.UsedLinksSecretName("xero")); s == "" || strings.Contains(s, ticket) {
		t.Fatalf("the record of used links is missing, or holds the ticket itself")
	}
}
