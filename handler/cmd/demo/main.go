// Command demo runs the real handler binary on the embedded defaults (local
// store, local lock) against the strict test provider, and shows what the
// product promises:
//
//  1. the first call refreshes (one token-endpoint call),
//  2. the second is served from cache (no call),
//  3. 100 concurrent callers on a connection nobody has used cause exactly
//     one refresh, and the rotating refresh token is never redeemed twice;
//  4. failure and recovery: a connection whose grant was revoked at the
//     provider answers 424 with what to do; `handler consent-link` and the
//     provider's consent page (approved by the demo, as a person would)
//     store a new refresh token, and the same request is answered 200.
//
// Usage (what `make demo` runs):
//
//	go run ./handler/cmd/demo -handler bin/handler
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

func main() {
	handlerBin := flag.String("handler", "bin/handler", "path to the handler binary")
	keep := flag.Bool("keep", false, "keep the state directory and leave the handler running until Ctrl-C")
	flag.Parse()
	if err := run(*handlerBin, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(handlerBin string, keep bool) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The provider: rotates refresh tokens and revokes the chain on reuse,
	// as real authorization servers do.
	clientSecret := rand.Text()
	provider := testprovider.New(testprovider.Config{
		ClientID: "demo-client", ClientSecret: clientSecret, AuthStyle: broker.AuthBasic,
		Rotate: true, AccessTokenLifetime: 30 * time.Minute,
	})
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	psrv := &http.Server{Handler: provider, ReadHeaderTimeout: 5 * time.Second}
	go psrv.Serve(pl)
	defer psrv.Close()
	tokenURL := "http://" + pl.Addr().String() + "/token"
	step("test provider listening; token endpoint %s", tokenURL)

	dir, err := os.MkdirTemp("", "tokenrefresher-demo-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	state := filepath.Join(dir, "state")
	authURL := "http://" + pl.Addr().String() + "/authorize"
	connections := fmt.Sprintf(`{"connections": [
  {"name": "xero-demo", "tokenUrl": %q, "clientAuth": "basic", "clientId": "demo-client", "rotating": true},
  {"name": "crm-demo",  "tokenUrl": %q, "clientAuth": "basic", "clientId": "demo-client", "rotating": true},
  {"name": "erp-demo",  "tokenUrl": %q, "clientAuth": "basic", "clientId": "demo-client", "rotating": true,
   "authorizationUrl": %q}
]}`, tokenURL, tokenURL, tokenURL, authURL)
	connFile := filepath.Join(dir, "connections.json")
	if err := os.WriteFile(connFile, []byte(connections), 0o600); err != nil {
		return err
	}
	step("connections file %s:\n%s", connFile, indent(connections))

	// Seed the store the way an operator would: `handler secret set`.
	env := append(os.Environ(), "LOCAL_STATE_DIR="+state, "CONNECTIONS_FILE="+connFile)
	erpRefreshToken := provider.IssueRefreshToken()
	for name, value := range map[string]string{
		"xero-demo-client-secret": clientSecret,
		"xero-demo-refresh-token": provider.IssueRefreshToken(),
		"crm-demo-client-secret":  clientSecret,
		"crm-demo-refresh-token":  provider.IssueRefreshToken(),
		"erp-demo-client-secret":  clientSecret,
		"erp-demo-refresh-token":  erpRefreshToken,
	} {
		cmd := exec.CommandContext(ctx, handlerBin, "secret", "set", name)
		cmd.Env = env
		cmd.Stdin = strings.NewReader(value + "\n")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("handler secret set %s: %v: %s", name, err, out)
		}
		step("$ printf %%s \"$VALUE\" | handler secret set %s\n    %s", name, strings.TrimSpace(string(out)))
	}

	// Start the handler in standalone mode on a port of its choosing; its
	// first log line says where it listens.
	cmd := exec.CommandContext(ctx, handlerBin)
	cmd.Env = append(env, "LISTEN_ADDR=127.0.0.1:0", "SWEEP_INTERVAL=24h")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	addr, err := listenAddr(stdout, 10*time.Second)
	if err != nil {
		return err
	}
	base := "http://" + addr
	step("handler listening on %s (local store and lock in %s)", base, state)
	client := &http.Client{Timeout: 60 * time.Second}
	calls := func() int { return provider.Stats().TokenRequests }

	n0 := calls()
	t0 := time.Now()
	tok, err := getToken(client, base+"/api/token/xero-demo")
	if err != nil {
		return err
	}
	step("1. GET /api/token/xero-demo -> 200 in %s, expires_in %ds; token-endpoint calls: %d (a refresh)",
		time.Since(t0).Round(time.Millisecond), tok.ExpiresIn, calls()-n0)

	n1 := calls()
	t1 := time.Now()
	tok2, err := getToken(client, base+"/api/token/xero-demo")
	if err != nil {
		return err
	}
	step("2. GET /api/token/xero-demo -> 200 in %s, same token: %v; token-endpoint calls: %d (served from cache)",
		time.Since(t1).Round(time.Microsecond), tok2.AccessToken == tok.AccessToken, calls()-n1)

	// Once the lifetime is known, asking for more is a clear 400 and no call.
	nx := calls()
	if _, err := getToken(client, base+"/api/token/xero-demo?minValidity=7200"); err != nil {
		step("   GET /api/token/xero-demo?minValidity=7200 -> %v; token-endpoint calls: %d", err, calls()-nx)
	}

	// 100 concurrent callers on a connection nobody has used yet.
	n2 := calls()
	t2 := time.Now()
	var wg sync.WaitGroup
	tokens := make([]string, 100)
	errs := make([]error, 100)
	for i := range 100 {
		wg.Go(func() {
			r, err := getToken(client, base+"/api/token/crm-demo")
			errs[i] = err
			tokens[i] = r.AccessToken
		})
	}
	wg.Wait()
	distinct := map[string]bool{}
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("concurrent caller %d: %w", i, err)
		}
		distinct[tokens[i]] = true
	}
	st := provider.Stats()
	crmCalls := calls() - n2
	step("3. 100 concurrent GET /api/token/crm-demo -> 100 x 200 in %s, %d distinct token(s); token-endpoint calls: %d",
		time.Since(t2).Round(time.Millisecond), len(distinct), crmCalls)
	step("provider totals: %d token requests, %d rejected, %d refresh-token reuses detected",
		st.TokenRequests, st.Rejected, st.ReuseDetected)
	if !provider.ValidAccessToken(tokens[0]) {
		return errors.New("the token served is not valid at the provider")
	}

	if err := recoveryScene(ctx, provider, handlerBin, env, base, authURL, erpRefreshToken); err != nil {
		return err
	}

	res, err := client.Get(base + "/api/connections")
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var pretty any
	_ = json.Unmarshal(body, &pretty)
	statusJSON, _ := json.MarshalIndent(pretty, "", "  ")
	step("GET /api/connections (status; never a secret):\n%s", indent(string(statusJSON)))

	if st.Rejected != 0 || st.ReuseDetected != 0 || crmCalls != 1 || n1 != n0+1 {
		return errors.New("the demo's promises did not hold; see above")
	}
	step("all promises held")
	if keep {
		step("handler still running at %s; state in %s; Ctrl-C to stop", base, dir)
		<-waitInterrupt()
	}
	return nil
}

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	Error       string `json:"error"`
	Message     string `json:"message"`
	Remediation string `json:"remediation"`
}

func getToken(c *http.Client, url string) (tokenResponse, error) {
	r, status, err := getJSON(c, url)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("%d %s: %s", status, r.Error, r.Message)
	}
	return r, err
}

// listenAddr reads the handler's JSON log until the start line, then keeps
// draining it so the handler never blocks on a full pipe.
func listenAddr(r io.Reader, timeout time.Duration) (string, error) {
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		sent := false
		for sc.Scan() {
			var line struct {
				Event string `json:"event"`
				Addr  string `json:"addr"`
			}
			if !sent && json.Unmarshal(sc.Bytes(), &line) == nil && line.Event == "handler.start" {
				found <- line.Addr
				sent = true
			}
		}
	}()
	select {
	case a := <-found:
		return a, nil
	case <-time.After(timeout):
		return "", errors.New("the handler did not start listening in time")
	}
}

func waitInterrupt() <-chan os.Signal {
	ch := make(chan os.Signal, 1)
	signalNotify(ch)
	return ch
}

// out is where the demo prints its steps (the test reads them).
var out io.Writer = os.Stdout

func step(format string, a ...any) {
	fmt.Fprintf(out, "==> "+format+"\n", a...)
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n    ")
}

func signalNotify(ch chan<- os.Signal) { signal.Notify(ch, os.Interrupt, syscall.SIGTERM) }
