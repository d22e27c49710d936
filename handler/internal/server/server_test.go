package server

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// TestSecurityWarnings: settings that leave a protection off without
// making the handler unusable are named at start-up, each with its event.
func TestSecurityWarnings(t *testing.T) {
	restricted := []broker.Connection{{Name: "open"}, {Name: "erp", AllowedCallers: []string{"00000000-0000-0000-0000-0000000000ad"}}}
	open := []broker.Connection{{Name: "open"}}
	tests := []struct {
		name  string
		env   map[string]string
		conns []broker.Connection
		want  []string // events
	}{
		{"Functions, authentication on", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "7071", "WEBSITE_AUTH_ENABLED": "true"}, restricted, nil},
		{"Functions, authentication off, allowedCallers", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "7071"}, restricted, []string{"config.allowed_callers_unenforced"}},
		{"Functions, authentication off, no allowedCallers", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "7071"}, open, nil},
		{"Functions, API_KEY_SECRET set", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "7071", "API_KEY_SECRET": "api-key"}, open, []string{"config.api_key_ignored"}},
		{"standalone, allowedCallers", nil, restricted, []string{"config.allowed_callers_unenforced"}},
		{"standalone, WEBSITE_AUTH_ENABLED set by hand", map[string]string{"WEBSITE_AUTH_ENABLED": "true"}, restricted,
			[]string{"config.allowed_callers_unenforced", "config.auth_headers_untrusted"}},
		{"standalone, nothing to say", map[string]string{"API_KEY_SECRET": "api-key", "LISTEN_ADDR": ":8080"}, open, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"CONNECTIONS_FILE": "connections.json"}
			for k, v := range tt.env {
				env[k] = v
			}
			s, err := config.LoadSettings(func(k string) string { return env[k] })
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range securityWarnings(s, tt.conns) {
				got = append(got, w.event)
				if w.event == "config.allowed_callers_unenforced" && !reflect.DeepEqual(w.connections, []string{"erp"}) {
					t.Errorf("%s names connections %v, want [erp]", w.event, w.connections)
				}
				if w.message == "" {
					t.Errorf("%s has no message", w.event)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("warnings %v, want %v", got, tt.want)
			}
		})
	}
}

// failingStore fails every read.
type failingStore struct{ err error }

func (s failingStore) Get(context.Context, string) (broker.StoredSecret, error) {
	return broker.StoredSecret{}, s.err
}
func (s failingStore) Set(context.Context, string, broker.StoredSecret) error { return s.err }

// TestReadAPIKey: the key standalone mode requires is read from the store
// at start-up; a missing, short or unsendable key stops the start with a
// message that names the secret and never shows the value.
func TestReadAPIKey(t *testing.T) {
	good := "fk_" + rand.Text() + rand.Text()
	tests := []struct {
		name    string
		value   string // stored under "api-key"; empty stores nothing
		store   broker.SecretStore
		wantErr []string
	}{
		{name: "a good key", value: good},
		{name: "exactly 32 characters", value: good[:32]},
		{name: "missing", wantErr: []string{`API_KEY_SECRET: the store has no secret named "api-key"`, "at least 32 characters", "handler secret set api-key"}},
		{name: "31 characters", value: good[:31], wantErr: []string{`secret "api-key" holds a key of 31 characters`, "at least 32"}},
		{name: "with a space", value: good[:20] + " " + good[20:], wantErr: []string{"spaces, control characters or non-ASCII"}},
		{name: "with a newline", value: good + "\n", wantErr: []string{"spaces, control characters or non-ASCII"}},
		{name: "not ASCII", value: good + "é", wantErr: []string{"non-ASCII"}},
		{name: "the store fails", store: failingStore{errors.New("vault unreachable")}, wantErr: []string{`reading secret "api-key"`, "vault unreachable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := tt.store
			if store == nil {
				ls, err := local.NewStore(t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				if tt.value != "" {
					if err := ls.Set(context.Background(), "api-key", broker.StoredSecret{Value: broker.Secret(tt.value)}); err != nil {
						t.Fatal(err)
					}
				}
				store = ls
			}
			key, err := readAPIKey(context.Background(), store, "api-key")
			if tt.wantErr == nil {
				if err != nil || key.Reveal() != tt.value {
					t.Fatalf("readAPIKey = a key of %d characters, %v; want the stored key", len(key.Reveal()), err)
				}
				return
			}
			if err == nil {
				t.Fatalf("readAPIKey succeeded; want an error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tt.value != "" && strings.Contains(err.Error(), strings.TrimSpace(tt.value)[:16]) {
				t.Errorf("the error shows the key")
			}
		})
	}
}

// TestHTTPServerTimeouts: every phase of a request is bounded, so slow or
// idle clients cannot hold the handler's connections (slowloris): the
// headers by ReadHeaderTimeout, the rest by the connection guard
// (connguard.go, TestGuardBoundsIdleConnectionsAndBodies,
// TestStalledClientIsCut), not by the server's ReadTimeout, IdleTimeout
// or WriteTimeout, which move deadlines on every request.
func TestHTTPServerTimeouts(t *testing.T) {
	srv := httpServer(http.NotFoundHandler(), slog.New(slog.DiscardHandler))
	if d := srv.ReadHeaderTimeout; d <= 0 || d > time.Minute {
		t.Errorf("ReadHeaderTimeout = %v, want a bound of at most 1m", d)
	}
	for name, d := range map[string]time.Duration{
		"the guard's idle limit":   time.Duration(idleTicks) * guardTick,
		"the guard's write limit":  time.Duration(writeStallTicks) * guardTick,
		"the body's read deadline": bodyReadTimeout,
	} {
		if d <= 0 || d > 5*time.Minute {
			t.Errorf("%s = %v, want a bound of at most 5m", name, d)
		}
	}
	for name, d := range map[string]time.Duration{"ReadTimeout": srv.ReadTimeout, "IdleTimeout": srv.IdleTimeout, "WriteTimeout": srv.WriteTimeout} {
		if d != 0 {
			t.Errorf("%s = %v: the guard bounds that; a server-wide WriteTimeout would also cut the timer's answer to a long sweep", name, d)
		}
	}
	if srv.MaxHeaderBytes <= 0 || srv.MaxHeaderBytes > 1<<20 {
		t.Errorf("MaxHeaderBytes = %d", srv.MaxHeaderBytes)
	}
}
