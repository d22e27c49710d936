package functions_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
)

// hitBroker answers every Token call from memory, as the broker does on a
// cache hit (55-61 ns, 0 allocs: BenchmarkTokenCacheHit), so that what the
// hit-path benchmarks measure is this package's own work.
type hitBroker struct {
	fakeBroker
	tok broker.AccessToken
}

func (b *hitBroker) Connection(name string) (broker.Connection, bool) {
	return broker.Connection{Name: name, Provider: "test", Grant: broker.GrantRefreshToken}, true
}

func (b *hitBroker) Token(context.Context, string, time.Duration) (broker.AccessToken, error) {
	return b.tok, nil
}

// discardWriter is the least a ResponseWriter can be: its header map is
// reused, so the allocations counted are the handler's.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// maxHitAllocs bounds the allocations of a token answered from memory, with
// or without the API key: the request's deadline (context and timer, 4),
// its copy with that context, the path value the router sets (2), and the
// status recorder of the request log. It was 43 before the hit path was
// pared down (issue 20 §4): a ServeMux lookup twice, a regular expression,
// encoding/json, header maps and the discarded log line's header read.
const maxHitAllocs = 8

// TestTokenHitAllocations holds the hit path to maxHitAllocs.
func TestTokenHitAllocations(t *testing.T) {
	now := time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)
	br := &hitBroker{tok: broker.AccessToken{Value: "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.hit-token-with-more-than-32-bytes", TokenType: "Bearer", Expiry: now.Add(time.Hour)}}
	for _, key := range []broker.Secret{"", "a-function-key-longer-than-32-bytes-0123456789"} {
		h := functions.NewServer(br, functions.Options{APIKey: key, Now: func() time.Time { return now }})
		req := hitRequest(key)
		w := &discardWriter{h: http.Header{}}
		allocs := testing.AllocsPerRun(200, func() {
			clear(w.h)
			h.ServeHTTP(w, req)
		})
		if w.status != http.StatusOK {
			t.Fatalf("key %t: status %d", key != "", w.status)
		}
		if allocs > maxHitAllocs {
			t.Errorf("key %t: a cache hit allocates %.0f times, want at most %d", key != "", allocs, maxHitAllocs)
		}
	}
}

// hitRequest is GET /api/token/c0000 as net/http hands it over, with the
// key in its header when there is one.
func hitRequest(key broker.Secret) *http.Request {
	u := &url.URL{Path: "/api/token/c0000"}
	req := &http.Request{Method: http.MethodGet, URL: u, RequestURI: u.Path, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"User-Agent": {"bench"}}, Host: "127.0.0.1"}
	if key != "" {
		req.Header.Set("X-Functions-Key", key.Reveal())
	}
	return req.WithContext(context.Background())
}

// BenchmarkTokenHit is the handler's own work on an HTTP cache hit: from
// the request as net/http hands it over to the last byte of the answer,
// without the socket. `go test -run '^$' -bench TokenHit -benchmem
// -cpuprofile cpu.out ./handler/internal/functions` shows where it goes.
func BenchmarkTokenHit(b *testing.B) {
	now := time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)
	br := &hitBroker{tok: broker.AccessToken{Value: "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.bench-token", TokenType: "Bearer", Expiry: now.Add(time.Hour)}}
	for _, c := range []struct {
		name string
		key  broker.Secret
	}{{"no-key", ""}, {"api-key", "bench-function-key-0123456789abcdef"}} {
		b.Run(c.name, func(b *testing.B) {
			h := functions.NewServer(br, functions.Options{APIKey: c.key, Now: func() time.Time { return now },
				Logger: slog.New(slog.DiscardHandler)})
			req := hitRequest(c.key)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				w.status, w.n = 0, 0
				h.ServeHTTP(w, req)
			}
			if w.status != http.StatusOK {
				b.Fatalf("status %d", w.status)
			}
		})
	}
}
