package server

import (
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

// shortStalls makes the stall guards started from here on cut a write
// after limit ticks of 10 ms, and puts the defaults back at the end.
func shortStalls(t *testing.T, limit int64) {
	tick, lim := stallTick, stallLimit
	stallTick, stallLimit = 10*time.Millisecond, limit
	t.Cleanup(func() { stallTick, stallLimit = tick, lim })
}

// TestStalledClientIsCut: a client that sends request after request and
// reads no answer fills the socket's buffers, and the handler's next write
// blocks. The stall guard closes that connection once the write has been
// blocked for its limit, and says so at WARN; without it the write would
// block forever (the server sets no WriteTimeout, and no route sets a
// write deadline any more: stallguard.go).
func TestStalledClientIsCut(t *testing.T) {
	shortStalls(t, 20) // 200 ms
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

// TestStallGuardLeavesSlowAnswersAlone: only a write that blocks counts. A
// route that works longer than the limit before it writes (the timer's
// sweep runs for minutes) and a client that reads slowly but reads are
// served whole.
func TestStallGuardLeavesSlowAnswersAlone(t *testing.T) {
	shortStalls(t, 50) // 500 ms: a reader of the race detector's loaded machine may pause for tens of milliseconds
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl := guardListener(ctx, ln, slog.New(slog.DiscardHandler)).(*guardedListener)
	big := strings.Repeat("x", 4<<20)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			// Work for two limits without writing.
			for start := gl.g.ticks.Load(); gl.g.ticks.Load()-start < 2*gl.g.limit; {
				select {
				case <-r.Context().Done():
					return
				case <-time.After(stallTick):
				}
			}
			_, _ = io.WriteString(w, "done")
			return
		}
		_, _ = io.WriteString(w, big)
	})}
	go func() { _ = srv.Serve(gl) }()
	defer srv.Close()

	tests := []struct {
		name, path string
		// pause between reads of 64 KiB: a client that reads, slowly
		pause time.Duration
		want  int
	}{
		{"works longer than the limit, then writes", "/slow", 0, len("done")},
		{"reads slowly", "/big", 10 * time.Millisecond, len(big)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Get("http://" + ln.Addr().String() + tt.path)
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
