package functions_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/redact"
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

func (b *hitBroker) AllowedCallers(string) ([]string, bool) { return nil, true }

func (b *hitBroker) Token(context.Context, string, time.Duration) (broker.AccessToken, error) {
	return b.tok, nil
}

// Peek is broker.Broker.Peek on a hit: the route answers without its
// request deadline (token.go).
func (b *hitBroker) Peek(string, time.Duration, time.Time) (broker.AccessToken, bool) {
	return b.tok, true
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
// or without the API key: none. It was 43 before the hit path was pared
// down (issue 20 §4: a ServeMux lookup twice, a regular expression,
// encoding/json, header maps and the discarded log line's header read),
// then 8 (the deadline's context and timer, the path value table, the
// status recorder), then 2 (the request's deadline and the request's copy
// that carries it, made now only when Peek misses).
const maxHitAllocs = 0

// TestTokenHitAllocations holds the hit path to maxHitAllocs, in each way
// the binary is configured: standalone on loopback with and without the
// API key, and behind the host with App Service authentication and a
// status page group, where the token route serves TOKEN_CALLERS only
// (tokenCallersOnly).
func TestTokenHitAllocations(t *testing.T) {
	now := time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)
	br := &hitBroker{tok: broker.AccessToken{Value: "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.hit-token-with-more-than-32-bytes", TokenType: "Bearer", Expiry: now.Add(time.Hour)}}
	const factory = "5d7c1d2e-0000-4000-8000-00000000adf0"
	behindHost := hitOptions("", now)
	behindHost.ForwardedByHost, behindHost.LoopbackPort = true, 0
	behindHost.AuthEnabled, behindHost.StatusPageGroup, behindHost.TokenCallers = true, "0b5e7a1c-0000-4000-8000-000000000001", []string{factory}
	fromFactory := hitRequest("")
	fromFactory.Header.Set("X-MS-CLIENT-PRINCIPAL-ID", factory)
	key := broker.Secret("a-function-key-longer-than-32-bytes-0123456789")
	for _, tt := range []struct {
		name string
		o    functions.Options
		req  *http.Request
	}{
		{"standalone", hitOptions("", now), hitRequest("")},
		{"standalone with the API key", hitOptions(key, now), hitRequest(key)},
		{"behind the host, token callers only", behindHost, fromFactory},
	} {
		h := functions.NewServer(br, tt.o)
		w := &discardWriter{h: http.Header{}}
		allocs := testing.AllocsPerRun(200, func() {
			clear(w.h)
			h.ServeHTTP(w, tt.req)
		})
		if w.status != http.StatusOK {
			t.Fatalf("%s: status %d", tt.name, w.status)
		}
		if allocs > maxHitAllocs+poolMisses {
			t.Errorf("%s: a cache hit allocates %.0f times, want at most %d", tt.name, allocs, maxHitAllocs)
		}
	}
}

// hitPort is the loopback port the hit-path server is told it listens on.
const hitPort = 7071

// hitOptions are the options a standalone handler on loopback runs with
// (server.Run): every wrapper the real binary puts on a cache hit, the
// redactor holding a secret and the local-mode guard at its port
// included, so that what is measured and counted here is what the binary
// does per request.
func hitOptions(key broker.Secret, now time.Time) functions.Options {
	red := redact.New()
	red.Remember("c0000-client-secret", "a-client-secret-the-redactor-holds")
	return functions.Options{APIKey: key, Now: func() time.Time { return now }, Logger: slog.New(slog.DiscardHandler),
		Redactor: red, LoopbackPort: hitPort}
}

// hitRequest is GET /api/token/c0000 as net/http hands it over, with the
// key in its header when there is one.
func hitRequest(key broker.Secret) *http.Request {
	u := &url.URL{Path: "/api/token/c0000"}
	req := &http.Request{Method: http.MethodGet, URL: u, RequestURI: u.Path, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Body: http.NoBody,
		Header: http.Header{"User-Agent": {"bench"}}, Host: "127.0.0.1:" + strconv.Itoa(hitPort)}
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
	short := broker.Secret("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.bench-token")
	// An Entra or Xero access token is a JWT of 1-2 KB.
	jwt := broker.Secret("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + strings.Repeat("eyJhdWQiOiJodHRwczovL2FwaS54ZXJvLmNvbSJ9", 36) + ".c2lnbmF0dXJl")
	for _, c := range []struct {
		name  string
		key   broker.Secret
		token broker.Secret
	}{{"no-key", "", short}, {"api-key", "bench-function-key-0123456789abcdef", short}, {"no-key, 1.5 KB JWT", "", jwt}} {
		b.Run(c.name, func(b *testing.B) {
			br := &hitBroker{tok: broker.AccessToken{Value: c.token, TokenType: "Bearer", Expiry: now.Add(time.Hour)}}
			h := functions.NewServer(br, hitOptions(c.key, now))
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

// BenchmarkTokenHitHTTP is the hit path over loopback TCP, through
// net/http as the binary serves it (server.httpServer's timeouts), beside
// a bare net/http server answering the same bytes: what handler/cmd/bench
// compares across processes, in one process so that a CPU profile of both
// can be read side by side (`-cpuprofile`, then `go tool pprof -top
// -focus 'conn..serve'`). The client is 16 keep-alive connections, each
// sending the request and reading the whole answer.
func BenchmarkTokenHitHTTP(b *testing.B) {
	now := time.Now()
	br := &hitBroker{tok: broker.AccessToken{Value: "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.bench-token", TokenType: "Bearer", Expiry: now.Add(time.Hour)}}
	handler := functions.NewServer(br, hitOptions("", now))
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, hitRequest(""))
	answer := rec.Result()
	body := rec.Body.Bytes()
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		for k, v := range answer.Header {
			h[k] = v
		}
		_, _ = w.Write(body)
	})
	for _, c := range []struct {
		name string
		h    http.Handler
	}{{"bare", bare}, {"handler", handler}} {
		b.Run(c.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(hitPort))
			if err != nil {
				b.Skip("the hit port is taken:", err)
			}
			srv := &http.Server{Handler: c.h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
				IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
			go func() { _ = srv.Serve(ln) }()
			defer srv.Close()
			req := []byte("GET /api/token/c0000 HTTP/1.1\r\nHost: 127.0.0.1:" + strconv.Itoa(hitPort) + "\r\nUser-Agent: bench\r\n\r\n")
			b.SetParallelism(8) // 16 connections on 2 CPUs
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				conn, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Error(err)
					return
				}
				defer conn.Close()
				r := bufio.NewReader(conn)
				for pb.Next() {
					if _, err := conn.Write(req); err != nil {
						b.Error(err)
						return
					}
					res, err := http.ReadResponse(r, nil)
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := io.Copy(io.Discard, res.Body); err != nil || res.StatusCode != http.StatusOK {
						b.Errorf("status %d, %v", res.StatusCode, err)
						return
					}
				}
			})
		})
	}
}
