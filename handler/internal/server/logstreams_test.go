package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines and the
// test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServeWritesSeverityByStream: the serve path's log lines are on the
// stream the Functions host reads their severity from (logsplit): DEBUG and
// INFO on stdout (Information), WARN on stderr with "warn" in the line
// (Warning), ERROR on stderr without it (Error).
func TestServeWritesSeverityByStream(t *testing.T) {
	env := map[string]string{
		"LOCAL_STATE_DIR":      t.TempDir(),
		"CONNECTIONS":          `{"connections":[{"name":"xero","tokenUrl":"http://127.0.0.1:1/token","clientId":"c","clientAuth":"basic"}]}`,
		"LISTEN_ADDR":          "127.0.0.1:0",
		"SWEEP_INTERVAL":       "24h",
		"LOG_LEVEL":            "debug",
		"WEBSITE_AUTH_ENABLED": "true", // a start-up WARN in standalone mode
	}
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- Run(ctx, func(k string) string { return env[k] }, &stdout, &stderr, "test") }()

	var addr string
	for deadline := time.Now().Add(30 * time.Second); addr == "" && time.Now().Before(deadline); {
		for _, r := range records(t, stdout.String()) {
			if r["event"] == "handler.start" {
				addr, _ = r["addr"].(string)
			}
		}
		select {
		case code := <-done:
			t.Fatalf("Run returned %d; stderr:\n%s", code, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if addr == "" {
		cancel()
		t.Fatalf("no handler.start on stdout; stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	for _, path := range []string{"/api/nope", "/api/connections/xero"} { // a 404 (WARN) and, at debug, a 2xx or 4xx
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("Run returned %d", code)
	}

	streams := map[string][]map[string]any{"stdout": records(t, stdout.String()), "stderr": records(t, stderr.String())}
	wantLevels := map[string][]string{"stdout": {"DEBUG", "INFO"}, "stderr": {"WARN", "ERROR"}}
	seen := map[string]string{} // event -> stream
	for name, rs := range streams {
		for _, r := range rs {
			level, _ := r["level"].(string)
			if !containsAny(level, wantLevels[name]) {
				t.Errorf("%s has a %s line: %v", name, level, r)
			}
			ev, _ := r["event"].(string)
			seen[ev] = name
		}
	}
	for ev, want := range map[string]string{"handler.start": "stdout", "config.auth_headers_untrusted": "stderr", "http.request": "stderr", "handler.stop": "stdout"} {
		if seen[ev] != want && !(ev == "http.request" && seen[ev] != "") {
			t.Errorf("event %s is on %q, want %s", ev, seen[ev], want)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		isWarn := strings.Contains(line, `"level":"WARN`)
		if hasWarn := strings.Contains(strings.ToLower(line), "warn"); hasWarn != isWarn {
			t.Errorf("stderr line says \"warn\": %v, its level is WARN: %v; the host would misread it: %s", hasWarn, isWarn, line)
		}
	}
}

func containsAny(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// records decodes the complete JSON lines of out; a line that is not JSON
// fails the test.
func records(t *testing.T, out string) []map[string]any {
	t.Helper()
	var rs []map[string]any
	lines := strings.Split(out, "\n")
	for _, l := range lines[:len(lines)-1] { // the last is incomplete or empty
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("a log line is not JSON: %q", l)
		}
		rs = append(rs, r)
	}
	return rs
}
