package cli

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// TestStatusWithNothingLoaded: `handler status` against a deployment whose
// store holds none of the connections' secrets exits 1 and names every
// missing secret, in the table's next action, on stderr and in the JSON.
func TestStatusWithNothingLoaded(t *testing.T) {
	env := map[string]string{
		"LOCAL_STATE_DIR": filepath.Join(t.TempDir(), "empty"),
		"CONNECTIONS": `{"connections": [
  {"name": "demo", "tokenUrl": "https://id.example.com/token", "clientAuth": "body"},
  {"name": "machine", "grant": "client_credentials", "tokenUrl": "https://id.example.com/token", "clientAuth": "body", "clientId": "client"}
]}`,
	}
	missing := []string{"demo-client-id", "demo-client-secret", "demo-refresh-token", "machine-client-secret"}
	for _, args := range [][]string{{"status"}, {"status", "-json"}} {
		r := runCLI(env, nil, args...)
		if r.code != 1 {
			t.Errorf("%q: exit %d, want 1; stderr %q", args, r.code, r.stderr)
		}
		for _, m := range missing {
			if !strings.Contains(r.stdout, m) || !strings.Contains(r.stderr, m) {
				t.Errorf("%q: %s is not named on stdout and stderr:\nstdout %s\nstderr %s", args, m, r.stdout, r.stderr)
			}
		}
		if !strings.Contains(r.stdout, "not_configured") {
			t.Errorf("%q: stdout does not say not_configured: %s", args, r.stdout)
		}
	}
	// A connection that is configured does not exit 1.
	if r := runCLI(workstation(t), nil, "status", "machine"); r.code != 0 {
		t.Errorf("a configured connection: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestPrintStatusShowsHowLongTheLastRefreshTook: the last-refresh column
// carries the refresh's duration when the status knows it, and none
// otherwise.
func TestPrintStatusShowsHowLongTheLastRefreshTook(t *testing.T) {
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		ms   int64
		want string
	}{
		{"unknown", 0, ""},
		{"timed", 1234, ", took 1.234s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			st := broker.ConnectionStatus{Name: "xero", State: broker.StateHealthy, LastRefresh: now.Add(-5 * time.Minute), LastRefreshMs: tt.ms}
			if err := printStatus(&out, []broker.ConnectionStatus{st}, now); err != nil {
				t.Fatal(err)
			}
			line := strings.Split(out.String(), "\n")[1]
			if tt.want == "" && strings.Contains(line, "took") || !strings.Contains(line, "(5m0s ago)"+tt.want) {
				t.Errorf("row %q; want the last refresh followed by %q", line, tt.want)
			}
		})
	}
}
