package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// workstation is an operator's machine: a local store holding the client
// secrets of a connections file that names two connections.
func workstation(t *testing.T) map[string]string {
	t.Helper()
	state := filepath.Join(t.TempDir(), "state")
	store, err := local.NewStore(state)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"demo-client-secret", "machine-client-secret"} {
		if err := store.Set(context.Background(), name, broker.StoredSecret{Value: "cs_0123456789abcdef"}); err != nil {
			t.Fatal(err)
		}
	}
	return map[string]string{
		"LOCAL_STATE_DIR": state,
		"CONNECTIONS": `{"connections": [
  {"name": "demo", "tokenUrl": "https://id.example.com/token", "clientAuth": "body", "clientId": "client"},
  {"name": "machine", "grant": "client_credentials", "tokenUrl": "https://id.example.com/token", "clientAuth": "body", "clientId": "client"}
]}`,
	}
}

type result struct {
	code           int
	stdout, stderr string
	served         bool
}

func runCLI(env map[string]string, open func(string) error, args ...string) result {
	var stdout, stderr strings.Builder
	var r result
	serve := func(context.Context) int { r.served = true; return 0 }
	r.code = Run(context.Background(), args, Env{Getenv: func(k string) string { return env[k] }, Stdin: strings.NewReader("value\n"),
		Stdout: &stdout, Stderr: &stderr, OpenURL: open}, serve, "test")
	r.stdout, r.stderr = stdout.String(), stderr.String()
	return r
}

// TestEveryCommandAnswersHelp: -h, -help and --help describe the command
// on stdout and exit 0, wherever they stand, and do nothing else: serve
// does not start, no secret is stored, no consent begins.
func TestEveryCommandAnswersHelp(t *testing.T) {
	tests := []struct {
		args []string
		want string // in stdout
	}{
		{[]string{"-h"}, "Usage:"},
		{[]string{"--help"}, "Usage:"},
		{[]string{"help"}, "Usage:"},
		{[]string{"serve", "-h"}, "usage: handler [serve]"},
		{[]string{"secret", "-h"}, "usage: handler secret set NAME"},
		{[]string{"secret", "set", "-h"}, "usage: handler secret set NAME"},
		{[]string{"secret", "set", "demo-client-secret", "--help"}, "-expires"},
		{[]string{"status", "-h"}, "-json"},
		{[]string{"status", "demo", "-help"}, "usage: handler status"},
		{[]string{"connect", "-h"}, "-authorization-url"},
		{[]string{"connect", "demo", "-no-browser", "-h"}, "usage: handler connect CONNECTION"},
		{[]string{"consent-link", "-h"}, "usage: handler consent-link CONNECTION [-expires 24h]"},
		{[]string{"consent-link", "demo", "-h"}, "usage: handler consent-link CONNECTION [-expires 24h]"},
		{[]string{"version", "-h"}, "usage: handler version"},
		{[]string{"connections", "-h"}, "usage: handler connections validate FILE"},
		{[]string{"connections", "validate", "-h"}, "usage: handler connections validate FILE"},
		{[]string{"connections", "put", "f.json", "-h"}, "-if-match"},
		{[]string{"connections", "list", "-h"}, "-raw"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			env := workstation(t)
			opened := false
			r := runCLI(env, func(string) error { opened = true; return nil }, tt.args...)
			if r.code != 0 || !strings.Contains(r.stdout, tt.want) || r.stderr != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 0 and %q on stdout only", r.code, r.stdout, r.stderr, tt.want)
			}
			if r.served || opened {
				t.Fatalf("help served (%v) or opened a browser (%v)", r.served, opened)
			}
		})
	}
}

// TestFlagsBeforeOrAfterArguments: every command reads its flags wherever
// they stand among its other arguments, and "--" ends them.
func TestFlagsBeforeOrAfterArguments(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantPos  []string
		wantJSON bool
		wantPort int
	}{
		{"flags first", []string{"-json", "-port", "8400", "demo"}, []string{"demo"}, true, 8400},
		{"flags last", []string{"demo", "-json", "-port=8400"}, []string{"demo"}, true, 8400},
		{"flags between", []string{"set", "-json", "demo", "-port", "8400"}, []string{"set", "demo"}, true, 8400},
		{"no flags", []string{"set", "demo"}, []string{"set", "demo"}, false, 0},
		{"-- ends the flags", []string{"-json", "--", "-port", "demo"}, []string{"-port", "demo"}, true, 0},
		{"-- after an argument", []string{"demo", "--", "-json"}, []string{"demo", "-json"}, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFlagSet("test")
			asJSON := fs.Bool("json", false, "")
			port := fs.Int("port", 0, "")
			var stdout, stderr strings.Builder
			pos, code, ok := parse(fs, "usage: test", 0, -1, tt.args, Env{Stdout: &stdout, Stderr: &stderr})
			if !ok || code != 0 || !reflect.DeepEqual(pos, tt.wantPos) || *asJSON != tt.wantJSON || *port != tt.wantPort {
				t.Fatalf("parse = %q, %d, %v, -json %v, -port %d; want %q, -json %v, -port %d (stderr %q)",
					pos, code, ok, *asJSON, *port, tt.wantPos, tt.wantJSON, tt.wantPort, stderr.String())
			}
		})
	}

	// The commands themselves.
	env := workstation(t)
	for _, args := range [][]string{{"status", "-json", "machine"}, {"status", "machine", "-json"}} {
		r := runCLI(env, nil, args...)
		var out struct {
			Connections []struct{ Name string } `json:"connections"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out.Connections) != 1 || out.Connections[0].Name != "machine" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want the JSON status of machine", args, r.code, r.stdout, r.stderr)
		}
	}
	for _, args := range [][]string{
		{"secret", "set", "api-key", "-expires", "2027-06-30T00:00:00Z"},
		{"secret", "set", "-expires", "2027-06-30T00:00:00Z", "api-key"},
		{"secret", "-expires", "2027-06-30T00:00:00Z", "set", "api-key"},
	} {
		env := workstation(t)
		if r := runCLI(env, nil, args...); r.code != 0 || !strings.Contains(r.stdout, `stored secret "api-key"`) {
			t.Errorf("%q: exit %d, %q %q", args, r.code, r.stdout, r.stderr)
		}
	}
}

// TestArgumentMistakes: a wrong number of arguments or an unknown flag
// exits 2 with the command's usage on stderr, for every command.
func TestArgumentMistakes(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"serve", "extra"}, `unexpected argument "extra"`},
		{[]string{"serve", "-port", "1"}, "flag provided but not defined: -port"},
		{[]string{"status", "demo", "machine"}, `unexpected argument "machine"`},
		{[]string{"status", "-yaml"}, "usage: handler status"},
		{[]string{"connect"}, "usage: handler connect CONNECTION"},
		{[]string{"connect", "demo", "machine"}, `unexpected argument "machine"`},
		{[]string{"consent-link"}, "usage: handler consent-link CONNECTION [-expires 24h]"},
		{[]string{"consent-link", "demo", "-json"}, "flag provided but not defined: -json"},
		{[]string{"version", "2"}, "usage: handler version"},
		{[]string{"secret", "get", "demo"}, "usage: handler secret set NAME"},
		{[]string{"nope"}, `unknown command "nope"`},
		{[]string{"connections"}, "usage: handler connections validate FILE"},
		{[]string{"connections", "show"}, `unknown subcommand "show"`},
		{[]string{"connections", "validate"}, "usage: handler connections validate FILE"},
		{[]string{"connections", "put", "a.json", "b.json"}, `unexpected argument "b.json"`},
		{[]string{"connections", "list", "extra"}, `unexpected argument "extra"`},
		{[]string{"connections", "list"}, "CONNECTIONS_BLOB is not set"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := runCLI(workstation(t), nil, tt.args...)
			if r.code != 2 || !strings.Contains(r.stderr, tt.want) || r.served {
				t.Fatalf("exit %d, stderr %q, served %v; want exit 2 saying %q", r.code, r.stderr, r.served, tt.want)
			}
		})
	}
}

// TestConnectOpensTheBrowser: connect hands the authorization address to
// the desktop's opener unless -no-browser says not to, and says so when
// no browser opens; only a web address is ever handed over.
func TestConnectOpensTheBrowser(t *testing.T) {
	const authorize = "https://id.example.com/authorize"
	tests := []struct {
		name       string
		noBrowser  bool
		openErr    error
		wantOpened bool
		wantSays   string
	}{
		{name: "opens", wantOpened: true},
		{name: "no browser here", openErr: fmt.Errorf("xdg-open: not found"), wantOpened: true, wantSays: "No browser could be opened here"},
		{name: "-no-browser", noBrowser: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var opened []string
			open := func(u string) error {
				mu.Lock()
				defer mu.Unlock()
				opened = append(opened, u)
				return tt.openErr
			}
			args := []string{"connect", "demo", "-timeout", "50ms", "-authorization-url", authorize}
			if tt.noBrowser {
				args = append(args, "-no-browser")
			}
			r := runCLI(workstation(t), open, args...)
			if r.code != 1 || !strings.Contains(r.stderr, "no answer from the provider") {
				t.Fatalf("exit %d, stderr %q; want 1, no answer", r.code, r.stderr)
			}
			mu.Lock()
			defer mu.Unlock()
			if !tt.wantOpened {
				if len(opened) != 0 {
					t.Fatalf("opened %q despite -no-browser", opened)
				}
				return
			}
			if len(opened) != 1 || !strings.HasPrefix(opened[0], authorize+"?") || !slices.Contains(strings.Fields(r.stdout), opened[0]) {
				t.Fatalf("opened %q; want the printed authorization address", opened)
			}
			u, _ := url.Parse(opened[0])
			if u.Query().Get("code_challenge_method") != "S256" {
				t.Errorf("the opened address has no PKCE challenge: %s", u.RawQuery)
			}
			if tt.wantSays != "" && !strings.Contains(r.stdout, tt.wantSays) {
				t.Errorf("stdout does not say %q:\n%s", tt.wantSays, r.stdout)
			}
		})
	}

	for _, u := range []string{"file:///etc/passwd", "-psn_0_1", "http://id.example.com/authorize", "javascript:alert(1)"} {
		called := false
		if err := openBrowser(u, func(string) error { called = true; return nil }); err == nil || called {
			t.Errorf("openBrowser(%q) = %v, called the opener %v; want a refusal", u, err, called)
		}
	}
}
