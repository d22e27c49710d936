package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/browser"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/backends"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
	redaction "github.com/tokenrefresher/tokenrefresher/handler/internal/redact"
)

const connectUsage = "usage: handler connect CONNECTION [-port N] [-no-browser] [-scope S]... [-timeout 5m] [-authorization-url URL]"

// connect is `handler connect CONNECTION`: a person consents at the
// provider, and the connection gets its first refresh token, or a new one
// after invalid_grant. It is the authorization code grant with PKCE and a
// loopback redirect URI (RFC 8252 §7.3): a server on 127.0.0.1 receives the
// browser's redirect back, the code is exchanged at once, and the tokens go
// to the store the app uses, with the same settings (KEY_VAULT_URL and the
// signed-in user's Azure credential, or the local store).
//
// The terminal shows the redirect URI to register and the address to open;
// the browser shows whether it worked. Neither ever shows a token.
func connect(ctx context.Context, args []string, env Env) int {
	fs := newFlagSet("connect")
	port := fs.Int("port", 0, "port of the loopback redirect URI http://127.0.0.1:PORT/callback (0: any free port); fix it when the provider needs the exact URI registered")
	noBrowser := fs.Bool("no-browser", false, "print the address to open instead of opening a browser")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the provider's answer")
	authURL := fs.String("authorization-url", "", "the provider's authorization endpoint, when the connection's provider preset has none")
	var scopes []string
	fs.Func("scope", "a scope to ask for besides the connection's (repeat, or separate with spaces)", func(s string) error {
		scopes = append(scopes, s)
		return nil
	})
	names, code, ok := parse(fs, connectUsage, 1, 1, args, env)
	if !ok {
		return code
	}
	name, stdout, stderr := names[0], env.Stdout, env.Stderr
	if *port < 0 || *port > 65535 || *timeout <= 0 {
		fmt.Fprintln(stderr, "handler connect: -port must be 0 to 65535 and -timeout positive")
		return 2
	}

	settings, conns, ok := configuration("handler connect", env)
	if !ok {
		return 2
	}
	var conn broker.Connection
	found := false
	for _, c := range conns {
		if c.Name == name {
			conn, found = c, true
		}
	}
	if !found {
		fmt.Fprintf(stderr, "handler connect: no connection is named %q in the connections file\n", name)
		return 2
	}
	if conn.Grant != broker.GrantRefreshToken {
		fmt.Fprintf(stderr, "handler connect: connection %q uses the %s grant, which needs no consent\n", name, conn.Grant)
		return 2
	}
	endpoint := *authURL
	if endpoint == "" {
		var err error
		if endpoint, err = consent.AuthorizationURL(conn); err != nil {
			fmt.Fprintf(stderr, "handler connect: %v\n", err)
			fmt.Fprintln(stderr, "Pass the provider's authorization endpoint with -authorization-url.")
			return 2
		}
	}
	asked, err := consent.Scopes(conn, scopes...)
	if err != nil {
		fmt.Fprintf(stderr, "handler connect: -scope: %v\n", err)
		return 2
	}

	// The client secret, the tokens and anything else the store holds are
	// registered as they are read or written (package redact); nothing
	// printed or shown in the browser from here on carries them.
	red := redaction.New()
	stdout, stderr = red.Writer(stdout), red.Writer(stderr)
	log := slog.New(redaction.NewHandler(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}), red))
	store, _, err := backends.Open(settings, env.Getenv, log)
	if err != nil {
		fmt.Fprintf(stderr, "handler connect: %v\n", err)
		return 1
	}
	// The credentials are read before anything is opened: without them the
	// consent would be wasted.
	flow, err := exchangeFlow(ctx, settings, conn, store, env.Getenv)
	if err != nil {
		fail(stderr, err)
		return 1
	}
	clientID := flow.ClientID

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintf(stderr, "handler connect: cannot listen on 127.0.0.1:%d: %v\n", *port, err)
		return 1
	}
	defer ln.Close()
	flow.AuthorizationURL = endpoint
	flow.RedirectURL = fmt.Sprintf("http://127.0.0.1:%d/callback", ln.Addr().(*net.TCPAddr).Port)
	flow.Scopes = asked
	state, verifier := consent.NewState(), consent.NewVerifier()
	location, err := flow.AuthCodeURL(state, verifier)
	if err != nil {
		fail(stderr, err)
		return 2
	}

	where := "the local store in " + settings.LocalStateDir
	if settings.KeyVaultURL != "" {
		where = "Key Vault " + settings.KeyVaultURL
	}
	var saved *broker.Token
	rc := &receiver{connection: name, state: state, red: red, done: make(chan error, 1), finish: func(code string) error {
		// Detached from the browser's request: once the code is redeemed,
		// the tokens must reach the store even if the tab closes.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		red.Remember("authorization-code", code)
		red.Remember("code-verifier", verifier.Reveal())
		tok, err := flow.Exchange(ctx, code, verifier)
		if err != nil {
			return err
		}
		if err := consent.Save(ctx, store, conn, tok); err != nil {
			return err
		}
		saved = tok
		return nil
	}}
	srv := &http.Server{Handler: rc, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()

	fmt.Fprintf(stdout, "Connecting %q (provider %s, client id %s); the tokens go to %s.\n\n", name, conn.Provider, clientID, where)
	fmt.Fprintf(stdout, "The app's registration at the provider must list this redirect URI, exactly:\n\n    %s\n\n", flow.RedirectURL)
	if *port == 0 {
		fmt.Fprintln(stdout, "(The port changes on every run; pass -port to keep one URI registered.)")
		fmt.Fprintln(stdout)
	}
	fmt.Fprintf(stdout, "Open this address in a browser, sign in and allow access:\n\n    %s\n\n", location)
	if !*noBrowser {
		if err := openBrowser(location, env.OpenURL); err != nil {
			fmt.Fprintln(stdout, "(No browser could be opened here; open the address yourself.)")
		}
	}
	fmt.Fprintf(stdout, "Waiting up to %s for the browser to come back...\n", *timeout)

	wait := time.NewTimer(*timeout)
	defer wait.Stop()
	select {
	case err = <-rc.done:
	case <-wait.C:
		err = rc.giveUp(fmt.Errorf("no answer from the provider within %s; nothing was stored", *timeout))
	case <-ctx.Done():
		err = rc.giveUp(errors.New("interrupted; nothing was stored"))
	}
	if err != nil {
		fail(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "Connected. Stored the refresh token in secret %q and the access token (valid until %s) in %q, in %s.\n",
		conn.Secrets.RefreshToken, saved.Expiry.UTC().Format(time.RFC3339), conn.Secrets.AccessToken, where)
	return 0
}

// exchangeFlow is the Flow that redeems conn's code, authenticated as the
// broker's refreshes of conn are: the client id and secret read from store
// (none for an assertion-authenticated client), and the Key Vault signer
// or managed identity's federated token its clientAuth needs
// (backends.AssertionBackends, as backends.NewBroker wires them). Without
// them a private_key_jwt or managedIdentity exchange would fail unsent,
// after the person had consented.
func exchangeFlow(ctx context.Context, settings config.Settings, conn broker.Connection, store broker.SecretStore, getenv func(string) string) (*consent.Flow, error) {
	clientID, clientSecret, err := consent.ClientCredentials(ctx, store, conn)
	if err != nil {
		return nil, err
	}
	signer, federated, err := backends.AssertionBackends(settings, []broker.Connection{conn}, getenv)
	if err != nil {
		return nil, fmt.Errorf("connection %q: %w", conn.Name, err)
	}
	return &consent.Flow{Connection: conn, ClientID: clientID, ClientSecret: clientSecret, Signer: signer, Federated: federated}, nil
}

// fail prints err and, when it has one, what to do about it.
func fail(stderr io.Writer, err error) {
	fmt.Fprintf(stderr, "handler connect: %v\n", err)
	var r interface{ Remediation() string }
	if errors.As(err, &r) {
		fmt.Fprintln(stderr, r.Remediation())
	}
}

// receiver is the loopback redirect URI. The first request to /callback
// decides the outcome, whatever it carries: a second authorization cannot
// begin in the same run, so a later request is answered and ignored.
type receiver struct {
	connection string
	state      string
	// red redacts the pages: the provider's words may quote a secret.
	red *redaction.Redactor
	// finish exchanges the code and stores the tokens.
	finish  func(code string) error
	claimed atomic.Bool
	done    chan error
}

// giveUp ends the wait with err, unless the browser has come back: its
// answer is then being redeemed and may be stored, so it decides.
func (rc *receiver) giveUp(err error) error {
	if rc.claimed.CompareAndSwap(false, true) {
		return err
	}
	return <-rc.done
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/callback" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !rc.claimed.CompareAndSwap(false, true) {
		consent.WritePage(w, http.StatusConflict, consent.Page{Title: "Already answered",
			Message: "This run of handler connect has already had its answer, or has stopped waiting.", Remediation: "See the terminal."})
		return
	}
	code, err := consent.ParseCallback(r.URL.Query(), rc.state)
	if err == nil {
		err = rc.finish(code)
	}
	if err != nil {
		p := consent.Page{Title: "Connection " + rc.connection + " was not connected", Message: capitalize(rc.red.String(err.Error())) + ".", Remediation: "See the terminal."}
		var r interface{ Remediation() string }
		if errors.As(err, &r) {
			p.Remediation = rc.red.String(r.Remediation())
		}
		status := http.StatusBadGateway
		if errors.Is(err, consent.ErrStateMismatch) || errors.Is(err, consent.ErrNoCode) {
			status = http.StatusBadRequest
		}
		var ce *consent.CallbackError
		if errors.As(err, &ce) {
			status = http.StatusBadRequest
		}
		consent.WritePage(w, status, p)
	} else {
		consent.WritePage(w, http.StatusOK, consent.Page{Title: "Connection " + rc.connection + " is connected",
			Message: "The tokens are stored.", Remediation: "You can close this tab and go back to the terminal."})
	}
	rc.done <- err
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// browserWait is how long connect waits to hear whether a browser opened
// before it goes on to wait for the provider: an opener that runs a
// terminal browser (www-browser) may never return.
const browserWait = 3 * time.Second

// openBrowser asks the desktop to open url with open (nil: the desktop's
// opener, through github.com/pkg/browser). It is best effort: on a server
// or in a container there is nothing to open it with, and the address is
// printed anyway.
func openBrowser(url string, open func(string) error) error {
	// Only a web address goes to the desktop's opener: a value starting
	// with "-" or naming a file or another scheme would be an argument or
	// a program to it, not a page.
	if !strings.HasPrefix(url, "https://") && !strings.HasPrefix(url, "http://127.0.0.1") && !strings.HasPrefix(url, "http://localhost") {
		return fmt.Errorf("not opening %q in a browser: not an https address", url)
	}
	if open == nil {
		open = openDesktop
	}
	opened := make(chan error, 1)
	go func() { opened <- open(url) }()
	t := time.NewTimer(browserWait)
	defer t.Stop()
	select {
	case err := <-opened:
		return err
	case <-t.C:
		return nil // still opening; the address is printed anyway
	}
}

// desktopOutput keeps the opener's own output (xdg-open's complaints)
// off the terminal: it bypasses the command's redacted writers.
var desktopOutput sync.Once

// openDesktop opens url with the desktop's opener: open on macOS,
// ShellExecute on Windows, xdg-open (or x-www-browser, www-browser)
// elsewhere.
func openDesktop(url string) error {
	desktopOutput.Do(func() { browser.Stdout, browser.Stderr = io.Discard, io.Discard })
	return browser.OpenURL(url)
}
