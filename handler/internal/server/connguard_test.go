package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// shortGuard makes the connection guards started from here on tick every
// 10 ms, cut a write blocked for writeStall ticks and close a connection
// idle for idle ticks, and gives a body the time given; the defaults are
// put back at the end.
func shortGuard(t *testing.T, writeStall, idle int64, body time.Duration) {
	tick, ws, id, bd := guardTick, writeStallTicks, idleTicks, bodyReadTimeout
	guardTick, writeStallTicks, idleTicks, bodyReadTimeout = 10*time.Millisecond, writeStall, idle, body
	t.Cleanup(func() { guardTick, writeStallTicks, idleTicks, bodyReadTimeout = tick, ws, id, bd })
}

// guardedServer serves h as Run serves the handler (httpServer under a
// connection guard) on a loopback port, until the test ends.
func guardedServer(t *testing.T, h http.Handler) (addr string, g *connGuard) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpServer(h, slog.New(slog.DiscardHandler))
	gl := guard(ctx, srv, ln, slog.New(slog.DiscardHandler))
	go func() { _ = srv.Serve(gl) }()
	t.Cleanup(func() {
		cancel()
		_ = srv.Close()
	})
	return ln.Addr().String(), gl.(*guardedListener).g
}

// TestStalledClientIsCut: a client that sends request after request and
// reads no answer fills the socket's buffers, and the handler's next write
// blocks. The connection guard closes that connection once the write has been
// blocked for its limit, and says so at WARN; without it the write would
// block forever (the server sets no WriteTimeout, and no route sets a
// write deadline any more: connguard.go).
func TestStalledClientIsCut(t *testing.T) {
	shortGuard(t, 20, 1000, time.Minute) // writes cut after 200 ms
	env := map[string]string{
		"LOCAL_STATE_DIR": t.TempDir(),
		"CONNECTIONS":     `{"connections":[{"name":"xero","tokenUrl":"http://127.0.0.1:1/token","clientId":"c","clientAuth":"basic"}]}`,
		"LISTEN_ADDR":     "127.0.0.1:0",
		"SWEEP_INTERVAL":  "24h",
	}
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- Run(ctx, func(k string) string { return env[k] }, &stdout, &stderr, "test") }()
	defer func() {
		cancel()
		<-done
	}()
	addr := waitEvent(t, &stdout, &stderr, done, "handler.start", 1)["addr"].(string)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Pipelined readiness probes, never read: each answer is about 150
	// bytes, so the buffers (a few MB on loopback) fill within tens of
	// thousands of them.
	req := []byte(fmt.Sprintf("GET / HTTP/1.1\r\nHost: %s\r\n\r\n", addr))
	batch := []byte(strings.Repeat(string(req), 1000))
	wrote := make(chan error, 1)
	go func() {
		for range 1000 {
			if _, err := conn.Write(batch); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()

	r := waitEvent(t, &stdout, &stderr, done, "http.write_stalled", 1)
	if r["level"] != "WARN" || r["remote"] != conn.LocalAddr().String() {
		t.Errorf("http.write_stalled %v; want WARN naming the client %s", r, conn.LocalAddr())
	}
	// The connection is gone: the client's writes fail (the server
	// closed it with our requests unread, so it answers them with a
	// reset) or, had the server read them all, reading ends.
	select {
	case err := <-wrote:
		if err == nil {
			_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, err = io.Copy(io.Discard, conn)
			if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
				t.Fatalf("reading what the server sent: %v; want the connection closed", err)
			}
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the client can still write 30 s after the guard cut its connection")
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe")
}

// TestGuardLeavesSlowAnswersAlone: only a write that blocks counts, and
// only a connection idle between requests is idle. A route that works
// longer than both limits before it writes (the timer's sweep runs for
// minutes) and a client that reads slowly but reads are served whole.
func TestGuardLeavesSlowAnswersAlone(t *testing.T) {
	// 500 ms: a reader on the race detector's loaded machine may pause
	// for tens of milliseconds.
	shortGuard(t, 50, 50, time.Minute)
	var g *connGuard
	big := strings.Repeat("x", 4<<20)
	addr, g := guardedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			// Work for two limits without writing.
			for start := g.ticks.Load(); g.ticks.Load()-start < 2*max(g.writeStall, g.idle); {
				select {
				case <-r.Context().Done():
					return
				case <-time.After(guardTick):
				}
			}
			_, _ = io.WriteString(w, "done")
			return
		}
		_, _ = io.WriteString(w, big)
	}))

	tests := []struct {
		name, path string
		// pause between reads of 64 KiB: a client that reads, slowly
		pause time.Duration
		want  int
	}{
		{"works longer than the limits, then writes", "/slow", 0, len("done")},
		{"reads slowly", "/big", 10 * time.Millisecond, len(big)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Get("http://" + addr + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			n := 0
			buf := make([]byte, 64<<10)
			for {
				m, err := resp.Body.Read(buf)
				n += m
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("after %d bytes: %v", n, err)
				}
				time.Sleep(tt.pause) // pacing a slow reader, not waiting for a condition
			}
			if n != tt.want {
				t.Errorf("read %d bytes, want %d", n, tt.want)
			}
		})
	}
}

// TestGuardBoundsIdleConnectionsAndBodies: what http.Server's IdleTimeout
// and ReadTimeout did, the guard does (connguard.go). A keep-alive
// connection left idle is closed; a body that stops arriving is cut; and
// the body's deadline does not outlive its request: a connection that
// waits longer than it between two requests is still served.
func TestGuardBoundsIdleConnectionsAndBodies(t *testing.T) {
	// Idle 1 s, body 200 ms: room for a loaded machine between the
	// body's deadline and the idle limit.
	shortGuard(t, 1000, 100, 200*time.Millisecond)
	bodyErr := make(chan error, 1)
	addr, g := guardedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		if r.URL.Path == "/trickle" {
			bodyErr <- err
		}
		_, _ = io.WriteString(w, "ok")
	}))
	dial := func(t *testing.T) (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	ask := func(t *testing.T, c net.Conn, br *bufio.Reader, method, path, body string) {
		t.Helper()
		if _, err := fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s", method, path, addr, len(body), body); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "ok" {
			t.Fatalf("%s %s: %d %q", method, path, resp.StatusCode, b)
		}
	}
	// waitTicks waits until the guard has ticked n more times.
	waitTicks := func(n int64) {
		for start := g.ticks.Load(); g.ticks.Load()-start < n; {
			time.Sleep(guardTick) // the guard's clock, not a condition: it only counts
		}
	}

	t.Run("idle keep-alive connection is closed", func(t *testing.T) {
		c, br := dial(t)
		ask(t, c, br, http.MethodGet, "/", "")
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := br.ReadByte(); err != io.EOF && !isReset(err) {
			t.Fatalf("reading from the idle connection: %v; want it closed by the server", err)
		}
	})
	t.Run("body deadline ends with its request", func(t *testing.T) {
		c, br := dial(t)
		ask(t, c, br, http.MethodPost, "/", `{"minValidity":60}`)
		waitTicks(40) // longer than the body's 200 ms, well short of idle's 1 s
		ask(t, c, br, http.MethodGet, "/", "")
	})
	t.Run("a body that stops arriving is cut", func(t *testing.T) {
		c, _ := dial(t)
		if _, err := fmt.Fprintf(c, "POST /trickle HTTP/1.1\r\nHost: %s\r\nContent-Length: 100\r\n\r\n{\"min", addr); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-bodyErr:
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("reading the body: %v; want a timeout", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the handler was still reading the body 30 s later")
		}
	})
}
