package main

// End-to-end tests of the real handler binary: TestMain builds it once, and
// each test runs it the way an operator (handler secret set), a data center
// of instances (several processes on one state directory) or the Azure
// Functions host (FUNCTIONS_CUSTOMHANDLER_PORT, forwarded requests, the
// timer envelope) would, against the strict test provider on loopback.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/azurite"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// handlerBin is the binary TestMain builds from this package.
var handlerBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if os.Getenv(crashEnv) != "" {
		return crashChild()
	}
	dir, err := os.MkdirTemp("", "handler-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	gotool, err := goTool()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	bin := filepath.Join(dir, "handler")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	// Built without -race whatever the test run uses: the binary is the
	// product, and the race detector would slow the timing-based tests.
	build := exec.Command(gotool, "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build -o %s .: %v\n%s", bin, err, out)
		return 1
	}
	handlerBin = bin
	return m.Run()
}

// goTool finds the go command. `go test` puts the GOROOT/bin of the
// toolchain running the tests first in PATH, so this is that toolchain
// (runtime.GOROOT, the other candidate, is deprecated for this use).
func goTool() (string, error) {
	p, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("building the handler needs the go command in PATH: %w", err)
	}
	return p, nil
}

// TestThreeProcessesFiveExpiries is the headline promise: however many
// callers and instances ask at once, one refresh per expiry. Three handler
// processes share one local state directory (store and lock); a rotating
// provider issues 4-second tokens; after the first acquisition the token
// expires five times, and each time 100 concurrent callers per process (300
// in all) must get the same new token from exactly one token-endpoint call,
// with no refresh token ever redeemed twice.
func TestThreeProcessesFiveExpiries(t *testing.T) {
	t.Parallel()
	threeProcessesFiveExpiries(t, "local", nil)
}

// TestThreeProcessesFiveExpiriesBlobLease keeps the same promise with the
// lock the instances of a function app share: a blob lease, on Azurite.
func TestThreeProcessesFiveExpiriesBlobLease(t *testing.T) {
	t.Parallel()
	az := azurite.Start(t)
	threeProcessesFiveExpiries(t, "bloblease", []string{"AzureWebJobsStorage=" + az.ConnectionString()})
}

func threeProcessesFiveExpiries(t *testing.T, lock string, extraEnv []string) {
	const (
		conn     = "e2e"
		clientID = "e2e-client"
		lifetime = 4 * time.Second
		// margin is the connection's refreshBefore. It is below half the
		// lifetime, so the broker uses it as it is: a token is served while
		// more than margin of it is left.
		margin            = time.Second
		processes         = 3
		callersPerProcess = 100
		expiries          = 5
	)
	clientSecret := "cs_" + rand.Text()
	provider := testprovider.New(testprovider.Config{
		ClientID: clientID, ClientSecret: clientSecret, AuthStyle: broker.AuthBasic,
		Rotate: true, AccessTokenLifetime: lifetime,
	})
	ps := httptest.NewServer(provider)
	t.Cleanup(ps.Close)
	firstRT := provider.IssueRefreshToken()

	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	connFile := writeFile(t, dir, "connections.json", fmt.Sprintf(`{"connections": [
  {"name": %q, "tokenUrl": %q, "clientAuth": "basic", "clientId": %q, "rotating": true, "refreshBefore": %q}
]}`, conn, ps.URL+"/token", clientID, margin.String()))
	env := []string{"LOCAL_STATE_DIR=" + state, "CONNECTIONS_FILE=" + connFile}

	// Seed the store the operator's way; the command's output is checked
	// for leaks with the rest.
	outputs := map[string]string{} // whose output -> the output
	for name, value := range map[string]string{conn + "-client-secret": clientSecret, conn + "-refresh-token": firstRT} {
		r := runHandler(t, env, dir, value+"\n", "secret", "set", name)
		if r.code != 0 {
			t.Fatalf("handler secret set %s: exit %d: %s", name, r.code, redact(r.stderr))
		}
		outputs["handler secret set "+name] = r.stdout + r.stderr
	}

	// SWEEP_INTERVAL is long so that only callers cause refreshes; debug
	// logging puts every request in the output that is checked for leaks.
	env = append(env, "LISTEN_ADDR=127.0.0.1:0", "SWEEP_INTERVAL=24h", "LOG_LEVEL=debug")
	env = append(env, extraEnv...)
	procs := make([]*handlerProcess, processes)
	for i := range procs {
		procs[i] = startHandler(t, fmt.Sprintf("handler %d", i+1), env, dir)
	}
	client := newClient(t, callersPerProcess)
	for _, p := range procs {
		p.waitListening(t, 30*time.Second)
		waitReady(t, client, p, 30*time.Second)
		if got := p.waitEvent(t, "handler.start", time.Second)["lock"]; got != lock {
			t.Fatalf("%s uses lock %v, want %s", p.name, got, lock)
		}
	}

	store, err := local.NewStore(state)
	if err != nil {
		t.Fatal(err)
	}
	start := provider.Stats()
	if start.TokenRequests != 0 {
		t.Errorf("%d token-endpoint calls before any caller asked; want 0 (SWEEP_INTERVAL=24h: the sweep must wait one period)", start.TokenRequests)
	}

	var served []string // the token of each round, in order
	for round := 0; round <= expiries; round++ {
		what := "the first acquisition"
		if round > 0 {
			what = fmt.Sprintf("expiry %d", round)
			// The current token needs refreshing once no more than margin
			// of it is left; the store holds its exact expiry.
			cur := storedSecret(t, store, conn+"-access-token")
			due := cur.ExpiresOn.Add(-margin)
			waitUntil(t, time.Until(due)+10*time.Second, "the token of round "+fmt.Sprint(round-1)+" to need refreshing",
				func() bool { return time.Now().After(due) })
		}
		before := provider.Stats()
		tok, ok := callersRound(t, client, procs, conn, callersPerProcess)
		after := provider.Stats()
		if calls := after.TokenRequests - before.TokenRequests; calls != 1 {
			t.Errorf("%s: %d token-endpoint calls for %d concurrent callers in %d processes, want exactly 1",
				what, calls, processes*callersPerProcess, processes)
		}
		if !ok {
			t.Fatalf("%s: the callers did not all get the same token (see above); provider: %d rejected, %d refresh-token reuses",
				what, after.Rejected, after.ReuseDetected)
		}
		if !provider.ValidAccessToken(tok.AccessToken) {
			t.Errorf("%s: the token served (%s) is not valid at the provider", what, fingerprint(tok.AccessToken))
		}
		if slices.Contains(served, tok.AccessToken) {
			t.Errorf("%s: the token served (%s) was already served in an earlier round: no refresh happened", what, fingerprint(tok.AccessToken))
		}
		// Served with more than margin left, in whole seconds.
		if tok.TokenType != "Bearer" || tok.ExpiresIn < int64(margin/time.Second) || tok.ExpiresIn > int64(lifetime/time.Second) {
			t.Errorf("%s: token_type %q, expires_in %d; want Bearer and %d <= expires_in <= %d",
				what, tok.TokenType, tok.ExpiresIn, int64(margin/time.Second), int64(lifetime/time.Second))
		}
		// What was served is what the store holds, and the rotated refresh
		// token was persisted: the provider's chain and the store agree.
		stored := storedSecret(t, store, conn+"-access-token")
		if stored.Value.Reveal() != tok.AccessToken {
			t.Errorf("%s: the store holds access token %s, the callers got %s", what, fingerprint(stored.Value.Reveal()), fingerprint(tok.AccessToken))
		}
		if want := stored.ExpiresOn.UTC().Format(time.RFC3339); tok.ExpiresOn != want {
			t.Errorf("%s: expires_on %q, want the stored expiry %q", what, tok.ExpiresOn, want)
		}
		current, live := provider.CurrentRefreshToken(firstRT)
		if !live {
			t.Fatalf("%s: the provider revoked the grant chain", what)
		}
		if rt := storedSecret(t, store, conn+"-refresh-token").Value.Reveal(); rt != current {
			t.Errorf("%s: the store holds refresh token %s, the provider's current one is %s", what, fingerprint(rt), fingerprint(current))
		}
		served = append(served, tok.AccessToken)
	}

	end := provider.Stats()
	if calls := end.TokenRequests - start.TokenRequests; calls != expiries+1 {
		t.Errorf("%d token-endpoint calls in all, want %d: one for the first acquisition and one per expiry", calls, expiries+1)
	}
	if end.RefreshGrants != end.TokenRequests || end.Issued != expiries+1 {
		t.Errorf("provider saw %d refresh grants and issued %d tokens in %d requests; want all %d to be refreshes that issued a token",
			end.RefreshGrants, end.Issued, end.TokenRequests, expiries+1)
	}
	if end.Rejected != 0 || end.ReuseDetected != 0 || end.ChainsRevoked != 0 {
		t.Errorf("provider: %d requests rejected, %d refresh-token reuses, %d chains revoked; want none", end.Rejected, end.ReuseDetected, end.ChainsRevoked)
	}

	for _, p := range procs {
		p.stop(t, syscall.SIGTERM, 30*time.Second)
	}

	// No secret value in any output: the client secret, every refresh token
	// the chain ever had, every access token served.
	secrets := map[string]string{clientSecret: "the client secret"}
	for _, r := range provider.Requests() {
		if rt := r.Form.Get("refresh_token"); rt != "" {
			secrets[rt] = "a refresh token"
		}
	}
	if current, ok := provider.CurrentRefreshToken(firstRT); ok {
		secrets[current] = "a refresh token"
	}
	for _, at := range served {
		secrets[at] = "an access token"
	}
	if len(secrets) != 1+(expiries+2)+len(served) {
		t.Errorf("collected %d distinct secrets, want %d (client secret, %d refresh tokens, %d access tokens)",
			len(secrets), 1+(expiries+2)+len(served), expiries+2, len(served))
	}
	for _, p := range procs {
		outputs[p.name] = p.output()
	}
	for who, out := range outputs {
		for s, kind := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("the output of %s contains %s (%s)", who, kind, fingerprint(s))
			}
		}
	}
}

// tokenBody is the 200 answer of /api/token/{connection}.
type tokenBody struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	ExpiresOn   string `json:"expires_on"`
}

// callersRound fires perProcess concurrent GET /api/token/{conn} at each
// process, all released at once, and reports whether every one was a 200
// carrying the same token, which it returns.
func callersRound(t *testing.T, client *http.Client, procs []*handlerProcess, conn string, perProcess int) (tokenBody, bool) {
	t.Helper()
	type answer struct {
		proc   int
		status int
		tok    tokenBody
		err    error
		body   string
	}
	answers := make([]answer, len(procs)*perProcess)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range answers {
		p := i / perProcess
		wg.Go(func() {
			a := &answers[i]
			a.proc = p
			<-gate
			res, err := client.Get("http://" + procs[p].addr + "/api/token/" + conn)
			if err != nil {
				a.err = err
				return
			}
			defer res.Body.Close()
			b, err := io.ReadAll(res.Body)
			a.status, a.err, a.body = res.StatusCode, err, string(b)
			if err == nil && res.StatusCode == http.StatusOK {
				a.err = json.Unmarshal(b, &a.tok)
				if cc := res.Header.Get("Cache-Control"); cc != "no-store" && a.err == nil {
					a.err = fmt.Errorf("Cache-Control %q, want no-store", cc)
				}
			}
		})
	}
	close(gate)
	wg.Wait()

	// Failures are counted by kind rather than listed: 300 alike would
	// bury the one that differs.
	failures := map[string]int{}
	distinct := map[string][]int{} // token fingerprint -> answers per process
	for _, a := range answers {
		switch {
		case a.err != nil:
			failures[fmt.Sprintf("%s: %v", procs[a.proc].name, a.err)]++
		case a.status != http.StatusOK:
			failures[fmt.Sprintf("%s: %d %s", procs[a.proc].name, a.status, redact(a.body))]++
		default:
			f := fingerprint(a.tok.AccessToken)
			if distinct[f] == nil {
				distinct[f] = make([]int, len(procs))
			}
			distinct[f][a.proc]++
		}
	}
	for _, f := range slices.Sorted(maps.Keys(failures)) {
		t.Errorf("%d x GET /api/token/%s: %s", failures[f], conn, f)
	}
	if len(distinct) > 1 {
		t.Errorf("callers got %d distinct tokens, want 1; answers per process by token: %v", len(distinct), distinct)
	}
	if len(failures) > 0 || len(distinct) != 1 {
		return tokenBody{}, false
	}
	return answers[0].tok, true
}

// TestSecretSetCommand runs `handler secret set` as an operator would: the
// value on stdin, never on the command line, and never echoed.
func TestSecretSetCommand(t *testing.T) {
	t.Parallel()
	const name = "xero-client-secret"
	expires := time.Date(2027, 6, 30, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		desc string
		args []string // after "handler secret"
		// stdin is the input; VALUE stands for the case's secret value.
		stdin string
		// defaultDir leaves LOCAL_STATE_DIR unset: the store is
		// .tokenrefresher in the working directory.
		defaultDir bool

		wantCode int
		// wantStderr is part of the message, for failures.
		wantStderr string
		// wantName, when set, is the secret that must hold the value.
		wantName    string
		wantExpires time.Time
	}{
		{desc: "value from stdin", args: []string{"set", name}, stdin: "VALUE", wantName: name},
		{desc: "line ending dropped", args: []string{"set", name}, stdin: "VALUE\r\n", wantName: name},
		{desc: "first line only", args: []string{"set", name}, stdin: "VALUE\nnot part of it\n", wantName: name},
		{desc: "expires after the name", args: []string{"set", name, "-expires", "2027-06-30T00:00:00Z"}, stdin: "VALUE\n", wantName: name, wantExpires: expires},
		{desc: "expires before the name, with an offset", args: []string{"set", "-expires", "2027-06-30T02:00:00+02:00", name}, stdin: "VALUE\n", wantName: name, wantExpires: expires},
		{desc: "default state directory", args: []string{"set", name}, stdin: "VALUE\n", defaultDir: true, wantName: name},

		{desc: "name missing", args: []string{"set"}, stdin: "VALUE\n", wantCode: 2, wantStderr: "NAME is required"},
		{desc: "name missing after a flag", args: []string{"set", "-expires", "2027-06-30T00:00:00Z"}, stdin: "VALUE\n", wantCode: 2, wantStderr: "NAME is required"},
		{desc: "empty stdin", args: []string{"set", name}, stdin: "", wantCode: 2, wantStderr: "no value on stdin"},
		{desc: "blank line on stdin", args: []string{"set", name}, stdin: "\n", wantCode: 2, wantStderr: "the value on stdin is empty"},
		{desc: "path in the name", args: []string{"set", "../x"}, stdin: "VALUE\n", wantCode: 1, wantStderr: `invalid name "../x"`},
		{desc: "slash in the name", args: []string{"set", "a/b"}, stdin: "VALUE\n", wantCode: 1, wantStderr: `invalid name "a/b"`},
		{desc: "name starting with a digit", args: []string{"set", "1password"}, stdin: "VALUE\n", wantCode: 1, wantStderr: `invalid name "1password"`},
		{desc: "expires not RFC 3339", args: []string{"set", name, "-expires", "2027-06-30"}, stdin: "VALUE\n", wantCode: 2, wantStderr: "is not an RFC 3339 time"},
		{desc: "unknown flag", args: []string{"set", name, "-value", "x"}, stdin: "VALUE\n", wantCode: 2, wantStderr: "flag provided but not defined: -value"},
		{desc: "two names", args: []string{"set", name, "other"}, stdin: "VALUE\n", wantCode: 2, wantStderr: "usage: handler secret set NAME"},
		{desc: "no subcommand", args: nil, stdin: "VALUE\n", wantCode: 2, wantStderr: "usage: handler secret set NAME"},
		{desc: "unknown subcommand", args: []string{"get", name}, stdin: "VALUE\n", wantCode: 2, wantStderr: "usage: handler secret set NAME"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			value := "cs_" + rand.Text()
			dir := t.TempDir()
			state := filepath.Join(dir, "state")
			var env []string
			if tt.defaultDir {
				state = filepath.Join(dir, ".tokenrefresher")
			} else {
				env = append(env, "LOCAL_STATE_DIR="+state)
			}
			r := runHandler(t, env, dir, strings.ReplaceAll(tt.stdin, "VALUE", value), append([]string{"secret"}, tt.args...)...)

			if strings.Contains(r.stdout+r.stderr, value) {
				t.Errorf("the value appears in the command's output")
			}
			if r.code != tt.wantCode {
				t.Fatalf("exit code %d, want %d; stderr: %s", r.code, tt.wantCode, redact(r.stderr))
			}
			if tt.wantCode != 0 {
				if !strings.Contains(r.stderr, tt.wantStderr) {
					t.Errorf("stderr %q does not say %q", redact(r.stderr), tt.wantStderr)
				}
				// Nothing was written, inside the state directory or out.
				if files := regularFiles(t, dir); len(files) != 0 {
					t.Errorf("a failed command left files behind: %v", files)
				}
				return
			}
			shown := state // the directory as the operator gave it
			if tt.defaultDir {
				shown = ".tokenrefresher"
			}
			if want := fmt.Sprintf("stored secret %q in %s (%d characters)", tt.wantName, shown, len(value)); !strings.Contains(r.stdout, want) {
				t.Errorf("stdout %q, want it to say %q", r.stdout, want)
			}
			store, err := local.NewStore(state)
			if err != nil {
				t.Fatal(err)
			}
			got := storedSecret(t, store, tt.wantName)
			if got.Value.Reveal() != value {
				t.Errorf("stored value %s, want the value from stdin %s", fingerprint(got.Value.Reveal()), fingerprint(value))
			}
			if !got.ExpiresOn.Equal(tt.wantExpires) {
				t.Errorf("stored expiry %v, want %v", got.ExpiresOn, tt.wantExpires)
			}
			if runtime.GOOS != "windows" {
				fi, err := os.Stat(filepath.Join(state, "secrets", tt.wantName+".json"))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o600 {
					t.Errorf("secret file mode %v, want 0600", fi.Mode().Perm())
				}
			}
		})
	}

	t.Run("a second set replaces the value", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		env := []string{"LOCAL_STATE_DIR=" + dir}
		first, second := "cs_"+rand.Text(), "cs_"+rand.Text()
		for _, v := range []string{first, second} {
			if r := runHandler(t, env, dir, v+"\n", "secret", "set", name); r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, redact(r.stderr))
			}
		}
		store, err := local.NewStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := storedSecret(t, store, name).Value.Reveal(); got != second {
			t.Errorf("stored %s, want the second value %s (first was %s)", fingerprint(got), fingerprint(second), fingerprint(first))
		}
	})
}

// TestBadConfigurationFailsStartup: a handler that cannot serve what it is
// configured for must not start; it exits at once, saying what is wrong,
// one line per problem, and never echoing a value that may be a secret.
func TestBadConfigurationFailsStartup(t *testing.T) {
	t.Parallel()
	const pastedSecret = "cs_PASTEDINTHEFILEBYMISTAKE"
	dir := t.TempDir()
	broken := writeFile(t, dir, "broken.json", `{"connections": [
  {"name": "Bad Name", "provider": "xeroo"},
  {"name": "crm", "tokenUrl": "http://example.com/token", "clientAuth": "header"},
  {"name": "crm", "grant": "client_credentials", "tokenUrl": "https://login.example.com/token", "clientAuth": "body",
   "rotating": true, "clientSecret": "`+pastedSecret+`"}
], "extra": 1}`)
	syntax := writeFile(t, dir, "syntax.json", "{\"connections\": [\n  {\"name\": \"x\",}\n]}")
	good := writeFile(t, dir, "good.json", `{"connections": [{"name": "xero", "provider": "xero"}]}`)

	tests := []struct {
		desc string
		env  []string
		// wantLines must each be (the start of) exactly one stderr line.
		wantLines []string
		// problems is how many lines name a problem: those starting with
		// problemPrefix.
		problemPrefix string
		problems      int
		// secret must not appear in the output.
		secret string
	}{{
		desc: "connections file with many problems",
		env:  []string{"CONNECTIONS_FILE=" + broken},
		wantLines: []string{
			`handler: bad connections:`,
			`connections file, field "extra": unknown field`,
			`connections[0] ("Bad Name"), field "name": found "Bad Name"; must be 1-63 characters`,
			`connections[0] ("Bad Name"), field "provider": found "xeroo"; did you mean "xero"?`,
			`connections[1] ("crm"), field "tokenUrl": found "http://example.com/token"; must be https`,
			`connections[1] ("crm"), field "clientAuth": found "header"; must be "basic"`,
			`connections[2] ("crm"), field "name": found "crm", which connections[1] already uses`,
			`connections[2] ("crm"), field "rotating": found true; grant "client_credentials" has no refresh token`,
			`connections[2] ("crm"), field "clientSecret": unknown field (its value is not shown)`,
		},
		problemPrefix: "connections[", problems: 7,
		secret: pastedSecret,
	}, {
		desc:          "connections file that is not JSON",
		env:           []string{"CONNECTIONS_FILE=" + syntax},
		wantLines:     []string{`connections file, line 2, column 16: not valid JSON`},
		problemPrefix: "connections file,", problems: 1,
	}, {
		desc:          "inline connections with no connection",
		env:           []string{"CONNECTIONS={\"connections\": []}"},
		wantLines:     []string{`connections from CONNECTIONS:`, `connections file, field "connections": is an empty array`},
		problemPrefix: "connections file,", problems: 1,
	}, {
		desc:      "connections file missing",
		env:       []string{"CONNECTIONS_FILE=" + filepath.Join(dir, "nope.json")},
		wantLines: []string{fmt.Sprintf("reading CONNECTIONS_FILE %q", filepath.Join(dir, "nope.json"))},
	}, {
		desc:          "neither CONNECTIONS nor CONNECTIONS_FILE",
		env:           nil,
		wantLines:     []string{"handler: bad settings:", "CONNECTIONS_FILE, CONNECTIONS and CONNECTIONS_BLOB: none is set; set exactly one"},
		problemPrefix: "CONNECTIONS", problems: 1,
	}, {
		desc:          "both CONNECTIONS and CONNECTIONS_FILE",
		env:           []string{"CONNECTIONS_FILE=" + good, `CONNECTIONS={"connections": []}`},
		wantLines:     []string{"CONNECTIONS_FILE, CONNECTIONS and CONNECTIONS_BLOB: more than one is set; set exactly one"},
		problemPrefix: "CONNECTIONS", problems: 1,
	}, {
		desc:          "lock wait beyond the caller's timeout",
		env:           []string{"CONNECTIONS_FILE=" + good, "LOCK_WAIT=90s"},
		wantLines:     []string{`LOCK_WAIT="90s": must be a duration between 1s and 59s`},
		problemPrefix: "LOCK_WAIT", problems: 1,
	}, {
		desc: "several bad settings, one of them a secret",
		env: []string{"CONNECTIONS_FILE=" + good, "LOCK_WAIT=90s", "SWEEP_INTERVAL=1s", "LOG_LEVEL=loud",
			"FUNCTIONS_CUSTOMHANDLER_PORT=70000", "AzureWebJobsStorage=" + pastedSecret},
		wantLines: []string{
			`FUNCTIONS_CUSTOMHANDLER_PORT="70000": must be a TCP port number`,
			`AzureWebJobsStorage: is not a storage connection string`,
			`LOCK_WAIT="90s": must be a duration`,
			`SWEEP_INTERVAL="1s": must be a duration between 10s and 24h`,
			`LOG_LEVEL="loud": must be one of debug, info, warn, error`,
		},
		secret: pastedSecret,
	}}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			// A handler that wrongly starts must not take a real port.
			env := append([]string{"LISTEN_ADDR=127.0.0.1:0", "LOCAL_STATE_DIR=" + t.TempDir()}, tt.env...)
			r := runHandler(t, env, t.TempDir(), "")
			if r.code != 2 {
				t.Errorf("exit code %d, want 2; stderr:\n%s", r.code, r.stderr)
			}
			if r.elapsed > 10*time.Second {
				t.Errorf("took %v to fail; a bad configuration must fail at once", r.elapsed)
			}
			if strings.Contains(r.stdout, "handler.start") {
				t.Errorf("the handler started listening despite the bad configuration")
			}
			lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
			for _, want := range tt.wantLines {
				n := 0
				for _, l := range lines {
					if strings.HasPrefix(l, want) {
						n++
					}
				}
				if n != 1 {
					t.Errorf("%d stderr lines start with %q, want 1; stderr:\n%s", n, want, r.stderr)
				}
			}
			if tt.problemPrefix != "" {
				n := 0
				for _, l := range lines {
					if strings.HasPrefix(l, tt.problemPrefix) && !strings.HasPrefix(l, "connections from ") {
						n++
					}
				}
				if n != tt.problems {
					t.Errorf("%d problem lines, want %d; stderr:\n%s", n, tt.problems, r.stderr)
				}
			}
			if tt.secret != "" && strings.Contains(r.stdout+r.stderr, tt.secret) {
				t.Errorf("the output repeats a value that may be a secret")
			}
		})
	}
}

// TestFunctionsMode runs the handler as the Functions host does: it sets
// FUNCTIONS_CUSTOMHANDLER_PORT, posts the timer envelope to /refresh and
// forwards HTTP requests with their original path, headers and query.
func TestFunctionsMode(t *testing.T) {
	t.Parallel()
	const conn = "crm"
	clientID, clientSecret := "crm-client", "cs_"+rand.Text()
	provider := testprovider.New(testprovider.Config{
		ClientID: clientID, ClientSecret: clientSecret, AuthStyle: broker.AuthBody, Rotate: true,
	})
	ps := httptest.NewServer(provider)
	t.Cleanup(ps.Close)
	firstRT := provider.IssueRefreshToken()

	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	// The client id comes from the store this time, and authentication is
	// in the body.
	connections := fmt.Sprintf(`{"connections": [{"name": %q, "tokenUrl": %q, "clientAuth": "body", "rotating": true}]}`, conn, ps.URL+"/token")
	env := []string{"LOCAL_STATE_DIR=" + state}
	for name, value := range map[string]string{conn + "-client-id": clientID, conn + "-client-secret": clientSecret, conn + "-refresh-token": firstRT} {
		if r := runHandler(t, env, dir, value+"\n", "secret", "set", name); r.code != 0 {
			t.Fatalf("handler secret set %s: exit %d: %s", name, r.code, redact(r.stderr))
		}
	}
	// What the host sets, plus a LISTEN_ADDR on every interface that
	// Functions mode must ignore.
	env = append(env, "CONNECTIONS="+connections, "LOG_LEVEL=debug", "LISTEN_ADDR=0.0.0.0:0",
		"FUNCTIONS_CUSTOMHANDLER_WORKER_ID="+newGUID(), "FUNCTIONS_APP_ROOT_PATH="+dir)
	p, port := startOnFreePort(t, env, dir)

	start := p.waitEvent(t, "handler.start", 30*time.Second)
	if start["mode"] != "functions" || start["addr"] != "127.0.0.1:"+port {
		t.Errorf("started in mode %v on %v, want functions on 127.0.0.1:%s", start["mode"], start["addr"], port)
	}
	client := newClient(t, 4)
	waitReady(t, client, p, 30*time.Second)
	checkLoopbackOnly(t, port)

	// The timer, as the host posts it (useMonitor true: ScheduleStatus set).
	now := time.Now().UTC()
	timer := func(pastDue bool) string {
		return fmt.Sprintf(`{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":%q,"Next":%q,"LastUpdated":%q},"IsPastDue":%t}},`+
			`"Metadata":{"sys":{"MethodName":"refresh","UtcNow":%q,"RandGuid":%q}}}`,
			now.Add(-5*time.Minute).Format("2006-01-02T15:04:05-07:00"), now.Add(5*time.Minute).Format("2006-01-02T15:04:05-07:00"),
			now.Format("2006-01-02T15:04:05-07:00"), pastDue, now.Format(time.RFC3339Nano), newGUID())
	}
	inv := postTimer(t, client, p.addr, timer(false))
	if calls := provider.Stats().TokenRequests; calls != 1 {
		t.Errorf("the first timer made %d token-endpoint calls, want 1 (nothing in the store yet)", calls)
	}
	if !containsLine(inv.Logs, conn+": refreshed (no access token was stored); valid until") {
		t.Errorf("timer logs %q, want %q: refreshed", inv.Logs, conn)
	}

	// A forwarded GET: the original path and host, the function key in
	// the query, the host's own headers.
	invocationID := newGUID()
	functionKey := "fk_" + rand.Text()
	req, err := http.NewRequest(http.MethodGet, "http://"+p.addr+"/api/token/"+conn+"?code="+functionKey+"&minValidity=600", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "tokenrefresher-e2e.azurewebsites.net"
	hostHeaders(req, invocationID)
	req.Header.Set("X-Forwarded-For", "203.0.113.7:51234")
	status, b := do(t, client, req)
	var tok tokenBody
	if status != http.StatusOK || json.Unmarshal(b, &tok) != nil {
		t.Fatalf("forwarded GET /api/token/%s: %d %s", conn, status, redact(string(b)))
	}
	if !provider.ValidAccessToken(tok.AccessToken) || tok.ExpiresIn <= 600 {
		t.Errorf("forwarded GET: token %s valid at the provider: %v, expires_in %d; want valid for over 600 s",
			fingerprint(tok.AccessToken), provider.ValidAccessToken(tok.AccessToken), tok.ExpiresIn)
	}
	// A POST, body as ADF sends it (minValidity as a string).
	req, err = http.NewRequest(http.MethodPost, "http://"+p.addr+"/api/token/"+conn+"?code="+functionKey, strings.NewReader(`{"minValidity": "600"}`))
	if err != nil {
		t.Fatal(err)
	}
	hostHeaders(req, newGUID())
	req.Header.Set("Content-Type", "application/json")
	status, b = do(t, client, req)
	var tok2 tokenBody
	if status != http.StatusOK || json.Unmarshal(b, &tok2) != nil {
		t.Fatalf("forwarded POST /api/token/%s: %d %s", conn, status, redact(string(b)))
	}
	if tok2.AccessToken != tok.AccessToken {
		t.Errorf("POST got token %s, GET got %s; want the cached one", fingerprint(tok2.AccessToken), fingerprint(tok.AccessToken))
	}
	if calls := provider.Stats().TokenRequests; calls != 1 {
		t.Errorf("%d token-endpoint calls after the timer and two calls, want 1: the callers are served what the timer fetched", calls)
	}

	// A late timer finds the token fresh and says so.
	inv = postTimer(t, client, p.addr, timer(true))
	if !containsLine(inv.Logs, "timer is past due") || !containsLine(inv.Logs, conn+": fresh; valid until") {
		t.Errorf("past-due timer logs %q, want it to say it is past due and the token is fresh", inv.Logs)
	}
	if calls := provider.Stats().TokenRequests; calls != 1 {
		t.Errorf("the second timer made a token-endpoint call; the token was fresh")
	}

	// The request log names the host's invocation id, and neither the
	// function key nor any secret. Stopped first, so the output is whole.
	p.stop(t, syscall.SIGTERM, 30*time.Second)
	if !p.hasRecord(func(r map[string]any) bool {
		return r["event"] == "http.request" && r["invocation_id"] == invocationID && r["path"] == "/api/token/"+conn
	}) {
		t.Errorf("no request log line with invocation_id %s for the forwarded GET", invocationID)
	}
	out := p.output()
	secrets := map[string]string{functionKey: "the function key", clientSecret: "the client secret", firstRT: "a refresh token", tok.AccessToken: "an access token"}
	if rt, ok := provider.CurrentRefreshToken(firstRT); ok {
		secrets[rt] = "a refresh token"
	}
	for s, kind := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the handler's output contains %s (%s)", kind, fingerprint(s))
		}
	}
}

// invocation is the host's HttpScriptInvocationResult, which it expects
// back from a timer invocation.
type invocation struct {
	Outputs     map[string]any
	Logs        []string
	ReturnValue any
}

// postTimer posts a timer envelope to /refresh as the host does, and
// checks the answer is one the host accepts.
func postTimer(t *testing.T, client *http.Client, addr, envelope string) invocation {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/refresh", strings.NewReader(envelope))
	if err != nil {
		t.Fatal(err)
	}
	hostHeaders(req, newGUID())
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	status, b := do(t, client, req)
	if status != http.StatusOK {
		t.Fatalf("POST /refresh: %d %s; the host fails the invocation on any non-2xx", status, redact(string(b)))
	}
	var fields map[string]json.RawMessage
	var inv invocation
	if err := json.Unmarshal(b, &fields); err != nil || json.Unmarshal(b, &inv) != nil {
		t.Fatalf("POST /refresh answered %s; want the host's invocation result", redact(string(b)))
	}
	for _, k := range []string{"Outputs", "Logs", "ReturnValue"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("POST /refresh: the answer has no %q: %s", k, redact(string(b)))
		}
	}
	return inv
}

// TestNewInstanceTimerKeepsFreshToken: an instance that joins (scale-out,
// restart) must not refresh a token another instance has just stored. The
// first timer of a new instance knows no token lifetime yet, and asks for
// one valid for the whole sweep horizon (2 x SWEEP_INTERVAL); with tokens
// that live no longer than that, the stored token can never qualify.
func TestNewInstanceTimerKeepsFreshToken(t *testing.T) {
	t.Parallel()
	const conn = "short"
	clientSecret := "cs_" + rand.Text()
	// 8-minute tokens: shorter than the 10-minute horizon of a 5-minute
	// timer, longer than the 5 minutes between two timers.
	provider := testprovider.New(testprovider.Config{
		ClientID: "short-client", ClientSecret: clientSecret, AuthStyle: broker.AuthBasic,
		Rotate: true, AccessTokenLifetime: 8 * time.Minute,
	})
	ps := httptest.NewServer(provider)
	t.Cleanup(ps.Close)
	dir := t.TempDir()
	env := []string{"LOCAL_STATE_DIR=" + filepath.Join(dir, "state"), "SWEEP_INTERVAL=5m",
		"CONNECTIONS=" + fmt.Sprintf(`{"connections": [{"name": %q, "tokenUrl": %q, "clientAuth": "basic", "clientId": "short-client", "rotating": true}]}`, conn, ps.URL+"/token")}
	for name, value := range map[string]string{conn + "-client-secret": clientSecret, conn + "-refresh-token": provider.IssueRefreshToken()} {
		if r := runHandler(t, env, dir, value, "secret", "set", name); r.code != 0 {
			t.Fatalf("handler secret set %s: exit %d: %s", name, r.code, redact(r.stderr))
		}
	}
	envelope := `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":false}},"Metadata":{}}`
	client := newClient(t, 2)

	first, _ := startOnFreePort(t, env, dir)
	waitReady(t, client, first, 30*time.Second)
	postTimer(t, client, first.addr, envelope)
	if calls := provider.Stats().TokenRequests; calls != 1 {
		t.Fatalf("the first instance's timer made %d token-endpoint calls, want 1", calls)
	}
	first.stop(t, syscall.SIGTERM, 30*time.Second)

	second, _ := startOnFreePort(t, env, dir)
	waitReady(t, client, second, 30*time.Second)
	inv := postTimer(t, client, second.addr, envelope)
	if calls := provider.Stats().TokenRequests; calls != 1 {
		t.Errorf("a new instance's first timer refreshed a token stored moments before with 8 of its 8 minutes left "+
			"(%d token-endpoint calls, want 1; timer logs %q). broker.sweepOne (internal/broker/sweep.go) caps the "+
			"horizon at half the token's lifetime only when this instance has the token cached; a new one asks for "+
			"the whole 10-minute horizon, which no 8-minute token meets, so obtain refreshes", calls, inv.Logs)
	}
}

// startOnFreePort starts the handler in Functions mode on a port that was
// free a moment ago. Another process may take it meanwhile; then the
// handler exits saying so, and another port is tried.
func startOnFreePort(t *testing.T, env []string, dir string) (*handlerProcess, string) {
	t.Helper()
	for range 3 {
		port := freePort(t)
		p := startHandler(t, "handler", append(slices.Clip(env), "FUNCTIONS_CUSTOMHANDLER_PORT="+port), dir)
		if _, err := p.event("handler.start", 30*time.Second); err == nil {
			p.waitListening(t, time.Second)
			return p, port
		}
		if code, exited := p.exitCode(); exited && code == 1 && strings.Contains(p.stderr.String(), "cannot listen") {
			continue
		}
		t.Fatalf("the handler did not start in Functions mode:\n%s", p.output())
	}
	t.Fatal("three free ports in a row were taken before the handler could listen")
	return nil, ""
}

// checkLoopbackOnly asserts that the port answers on 127.0.0.1 and on no
// other address of this machine.
func checkLoopbackOnly(t *testing.T, port string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", port), 5*time.Second)
	if err != nil {
		t.Fatalf("dial 127.0.0.1:%s: %v", port, err)
	}
	c.Close()
	// 127.0.0.2 is loopback too but not the address the host calls; ::1
	// and the machine's interface addresses are other hosts' way in.
	others := []string{"127.0.0.2", "::1"}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
				others = append(others, n.IP.String())
			}
		}
	}
	for _, host := range others {
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), time.Second); err == nil {
			c.Close()
			t.Errorf("the handler answers on %s; in Functions mode it must listen on 127.0.0.1 only", net.JoinHostPort(host, port))
		}
	}
}

// TestGracefulStop: on SIGTERM (the host stopping, a scale-in) or SIGINT,
// the handler finishes the request in flight, then exits 0.
func TestGracefulStop(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("no SIGTERM on Windows")
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			const conn = "slow"
			clientSecret := "cs_" + rand.Text()
			provider := testprovider.New(testprovider.Config{ClientID: "slow-client", ClientSecret: clientSecret, Rotate: true})
			// The token endpoint answers after a while, so the
			// signal arrives while a caller is waiting.
			provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultSlow, Delay: 1500 * time.Millisecond})
			ps := httptest.NewServer(provider)
			t.Cleanup(ps.Close)

			dir := t.TempDir()
			env := []string{"LOCAL_STATE_DIR=" + filepath.Join(dir, "state"), "LISTEN_ADDR=127.0.0.1:0", "SWEEP_INTERVAL=24h",
				"CONNECTIONS=" + fmt.Sprintf(`{"connections": [{"name": %q, "tokenUrl": %q, "clientAuth": "basic", "clientId": "slow-client", "rotating": true}]}`, conn, ps.URL+"/token")}
			for name, value := range map[string]string{conn + "-client-secret": clientSecret, conn + "-refresh-token": provider.IssueRefreshToken()} {
				if r := runHandler(t, env, dir, value, "secret", "set", name); r.code != 0 {
					t.Fatalf("handler secret set %s: exit %d: %s", name, r.code, redact(r.stderr))
				}
			}
			p := startHandler(t, "handler", env, dir)
			p.waitListening(t, 30*time.Second)
			client := newClient(t, 1)
			waitReady(t, client, p, 30*time.Second)

			type result struct {
				status int
				body   []byte
				err    error
			}
			inFlight := make(chan result, 1)
			go func() {
				res, err := client.Get("http://" + p.addr + "/api/token/" + conn)
				if err != nil {
					inFlight <- result{err: err}
					return
				}
				defer res.Body.Close()
				b, err := io.ReadAll(res.Body)
				inFlight <- result{res.StatusCode, b, err}
			}()
			waitUntil(t, 30*time.Second, "the caller's refresh to reach the provider", func() bool { return provider.Stats().TokenRequests == 1 })

			signalled := time.Now()
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			r := <-inFlight
			var tok tokenBody
			if r.err != nil || r.status != http.StatusOK || json.Unmarshal(r.body, &tok) != nil || !provider.ValidAccessToken(tok.AccessToken) {
				t.Errorf("the request in flight when %v arrived: %d %s %v; want a valid token", sig, r.status, redact(string(r.body)), r.err)
			}
			code := p.waitExit(t, 30*time.Second)
			if code != 0 {
				t.Errorf("exit code %d after %v, want 0; stderr:\n%s", code, sig, redact(p.stderr.String()))
			}
			t.Logf("exited %v after %v", code, time.Since(signalled).Round(time.Millisecond))
			if !p.hasRecord(func(r map[string]any) bool { return r["event"] == "handler.stop" && r["msg"] == "stopped" }) {
				t.Errorf("no \"stopped\" log line")
			}
			if c, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
				c.Close()
				t.Errorf("%s still accepts connections after the handler exited", p.addr)
			}
		})
	}
}

// handlerProcess is a running handler binary.
type handlerProcess struct {
	name   string
	cmd    *exec.Cmd
	stdout *lineLog
	stderr *lineLog
	// exited is closed once the process has exited and its output is
	// drained; cmd.ProcessState is set then.
	exited chan struct{}
	// addr is where it listens, from its handler.start log line.
	addr string
}

// startHandler starts the binary with exactly env (nothing inherited, so
// the machine's own settings cannot leak in) in the working directory dir.
// The process is killed, if still running, when the test ends.
func startHandler(t *testing.T, name string, env []string, dir string) *handlerProcess {
	t.Helper()
	p := &handlerProcess{name: name, stdout: newLineLog(), stderr: newLineLog(), exited: make(chan struct{})}
	p.cmd = exec.Command(handlerBin)
	p.cmd.Env = slices.Clip(env)
	if p.cmd.Env == nil {
		p.cmd.Env = []string{}
	}
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			select {
			case <-p.exited:
			case <-time.After(30 * time.Second):
				t.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid)
			}
		}
		if t.Failed() {
			t.Logf("%s output, request lines left out, tokens redacted:\n%s", p.name, redact(tail(withoutRequests(p.output()), 40)))
		}
	})
	return p
}

// logLines returns the complete lines of both streams (INFO and DEBUG
// records are on stdout, WARN and ERROR on stderr: logsplit) and channels
// closed when either has another.
func (p *handlerProcess) logLines() ([]string, <-chan struct{}, <-chan struct{}) {
	out, outChanged := p.stdout.snapshot()
	errLines, errChanged := p.stderr.snapshot()
	return append(out, errLines...), outChanged, errChanged
}

// event waits for the first JSON log record whose "event" is ev.
func (p *handlerProcess) event(ev string, timeout time.Duration) (map[string]any, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		lines, outChanged, errChanged := p.logLines()
		if r := findEvent(lines, ev); r != nil {
			return r, nil
		}
		select {
		case <-outChanged:
		case <-errChanged:
		case <-p.exited:
			// The output is drained by the time exited closes: the
			// lines are final.
			lines, _, _ := p.logLines()
			if r := findEvent(lines, ev); r != nil {
				return r, nil
			}
			return nil, fmt.Errorf("%s exited before logging %s", p.name, ev)
		case <-deadline.C:
			return nil, fmt.Errorf("%s did not log %s within %v", p.name, ev, timeout)
		}
	}
}

func findEvent(lines []string, ev string) map[string]any {
	for _, l := range lines {
		var r map[string]any
		if json.Unmarshal([]byte(l), &r) == nil && r["event"] == ev {
			return r
		}
	}
	return nil
}

func (p *handlerProcess) waitEvent(t *testing.T, ev string, timeout time.Duration) map[string]any {
	t.Helper()
	r, err := p.event(ev, timeout)
	if err != nil {
		t.Fatalf("%v; stderr:\n%s", err, redact(p.stderr.String()))
	}
	return r
}

// waitListening reads the address from the handler.start line. Reading it
// rather than choosing a port is race-free: the handler listens on :0.
func (p *handlerProcess) waitListening(t *testing.T, timeout time.Duration) {
	t.Helper()
	r := p.waitEvent(t, "handler.start", timeout)
	addr, _ := r["addr"].(string)
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" {
		t.Fatalf("%s logged handler.start with addr %q", p.name, addr)
	}
	p.addr = addr
}

// hasRecord reports whether a JSON log record satisfies match.
func (p *handlerProcess) hasRecord(match func(map[string]any) bool) bool {
	lines, _, _ := p.logLines()
	for _, l := range lines {
		var r map[string]any
		if json.Unmarshal([]byte(l), &r) == nil && match(r) {
			return true
		}
	}
	return false
}

// exitCode returns the exit code once the process has exited.
func (p *handlerProcess) exitCode() (int, bool) {
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode(), true
	default:
		return 0, false
	}
}

func (p *handlerProcess) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v", p.name, timeout)
		return -1
	}
}

// stop signals the process and requires a clean exit.
func (p *handlerProcess) stop(t *testing.T, sig os.Signal, timeout time.Duration) {
	t.Helper()
	if runtime.GOOS == "windows" {
		sig = os.Kill
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling %s: %v", p.name, err)
	}
	if code := p.waitExit(t, timeout); code != 0 && runtime.GOOS != "windows" {
		t.Errorf("%s exited %d after %v, want 0; stderr:\n%s", p.name, code, sig, redact(p.stderr.String()))
	}
}

// output is everything the process wrote, stdout then stderr.
func (p *handlerProcess) output() string { return p.stdout.String() + p.stderr.String() }

// lineLog collects a process's output and announces each complete line.
type lineLog struct {
	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	lines   []string
	changed chan struct{} // closed and replaced when a line is added
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(b)
	l.partial = append(l.partial, b...)
	added := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		added = true
	}
	if added {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(b), nil
}

// snapshot returns the complete lines so far and a channel closed when
// another arrives.
func (l *lineLog) snapshot() ([]string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lines[:len(l.lines):len(l.lines)], l.changed
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

// commandResult is a finished run of the binary.
type commandResult struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

// runHandler runs the binary to completion (at most a minute) with exactly
// env, stdin as its input, in dir.
func runHandler(t *testing.T, env []string, dir, stdin string, args ...string) commandResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, handlerBin, args...)
	cmd.Env = slices.Clip(env)
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := commandResult{stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(start)}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("handler %s did not finish within a minute", strings.Join(args, " "))
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("running handler %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// newClient returns a client that keeps up to conns connections per
// handler, so rounds of concurrent callers reuse them.
func newClient(t *testing.T, conns int) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

// waitReady polls GET / as the Functions host does until it answers 200.
func waitReady(t *testing.T, client *http.Client, p *handlerProcess, timeout time.Duration) {
	t.Helper()
	waitUntil(t, timeout, p.name+" to answer GET /", func() bool {
		res, err := client.Get("http://" + p.addr + "/")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		var body struct{ Status string }
		return res.StatusCode == http.StatusOK && json.NewDecoder(res.Body).Decode(&body) == nil && body.Status == "ready"
	})
}

// waitUntil polls cond until it holds, failing the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// do sends req and returns the status and body.
func do(t *testing.T, client *http.Client, req *http.Request) (int, []byte) {
	t.Helper()
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL.Path, err)
	}
	return res.StatusCode, b
}

// hostHeaders adds what the Functions host adds to every call it makes to
// the custom handler.
func hostHeaders(req *http.Request, invocationID string) {
	req.Header.Set("X-Azure-Functions-HostVersion", "4.1037.1.1")
	req.Header.Set("X-Azure-Functions-InvocationId", invocationID)
	req.Header.Set("User-Agent", "Azure-Functions-Host/4.1037.1.1")
	req.Header.Set("traceparent", "00-"+strings.ReplaceAll(newGUID(), "-", "")+"-00f067aa0ba902b7-01")
}

func storedSecret(t *testing.T, store *local.Store, name string) broker.StoredSecret {
	t.Helper()
	s, err := store.Get(context.Background(), name)
	if err != nil {
		t.Fatalf("reading secret %s from the store: %v", name, err)
	}
	return s
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// regularFiles lists the files under dir.
func regularFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

func containsLine(lines []string, s string) bool {
	return slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, s) })
}

func newGUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// fingerprint names a secret in test messages without revealing it.
func fingerprint(s string) string {
	if s == "" {
		return "(empty)"
	}
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:4])
}

// tokenPattern matches the secrets these tests make: the provider's
// access and refresh tokens (at_, rt_) and the client secrets and function
// keys generated here (cs_, fk_), all a prefix and rand.Text.
var tokenPattern = regexp.MustCompile(`\b(at|rt|cs|fk)_[A-Z2-7]{26}\b`)

// redact masks those secrets in process output shown in test messages.
func redact(s string) string { return tokenPattern.ReplaceAllString(s, "$1_[redacted]") }

// withoutRequests drops the request records (one per call, hundreds in a
// round) from output.
func withoutRequests(s string) string {
	lines := strings.Split(s, "\n")
	return strings.Join(slices.DeleteFunc(lines, func(l string) bool { return strings.Contains(l, `"event":"http.request"`) }), "\n")
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
