package functions_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/redact"
)

// Values planted where a careless page would show them: the API key the
// page is opened with, and a client secret in the store that a failure's
// message quotes (the redactor must blank it on the page too).
const (
	pageAPIKey       = "apikey-S3CRET-page-4b1e"
	pageClientSecret = "client-S3CRET-page-9f2c"
	pageMarkup       = `<script id="injected">document.title="pwned"</script>`
)

// pageBroker is a broker whose connections are in the states the page
// must show; a force refresh makes a connection healthy.
type pageBroker struct {
	now   time.Time
	store *local.Store

	mu       sync.Mutex
	statuses []broker.ConnectionStatus
	forced   []string
}

func newPageBroker(t *testing.T, now time.Time) *pageBroker {
	t.Helper()
	store, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"xero", "rejected", "unseeded", "standby", "outage"} {
		if err := store.Set(context.Background(), name+"-client-secret", broker.StoredSecret{Value: pageClientSecret}); err != nil {
			t.Fatal(err)
		}
	}
	failure := func(code broker.ErrorCode, msg, remedy string) *broker.StatusError {
		return &broker.StatusError{Code: code, Message: msg, Remediation: remedy}
	}
	return &pageBroker{now: now, store: store, statuses: []broker.ConnectionStatus{
		{Name: "xero", Provider: "xero", Grant: broker.GrantRefreshToken, State: broker.StateHealthy,
			AccessTokenExpiresOn: now.Add(25 * time.Minute), LastRefresh: now.Add(-5 * time.Minute), LastRefreshBy: "instance-a1", LastRefreshMs: 1234,
			RefreshTokenUpdatedOn: now.Add(-5 * time.Minute), RefreshTokenIdleExpiresOn: now.Add(60 * 24 * time.Hour),
			ClientSecretExpiresOn: now.Add(20 * 24 * time.Hour), Standby: broker.StandbyReady, NextAction: "None."},
		{Name: "rejected", Provider: "xero", Grant: broker.GrantRefreshToken, State: broker.StateNeedsReauthorization, Failures: 3,
			LastError: failure(broker.CodeRejected, "the provider rejected the refresh token (invalid_grant) "+pageMarkup+" client secret "+pageClientSecret,
				"Consent again: <b>Reconnect</b> & store the new refresh token."),
			NextAction: "Consent again."},
		{Name: "unseeded", Provider: "generic", Grant: broker.GrantRefreshToken, State: broker.StateNotConfigured,
			MissingSecrets: []string{"unseeded-refresh-token"}, NextAction: "Load unseeded-refresh-token."},
		{Name: "standby", Provider: "xero", Grant: broker.GrantRefreshToken, State: broker.StateStandbyUsed, Standby: broker.StandbyUsed,
			NextAction: "Consent again to make a new standby grant."},
		{Name: "outage", Provider: "generic", Grant: broker.GrantClientCredentials, State: broker.StateFailing, Failures: 1,
			LastError:  failure(broker.CodeProviderFailed, "the provider answered HTTP 502", "Nothing: the next call retries."),
			NextAction: "Retried by the next call."},
	}}
}

func (b *pageBroker) find(name string) (int, bool) {
	for i, st := range b.statuses {
		if st.Name == name {
			return i, true
		}
	}
	return 0, false
}

func (b *pageBroker) Connection(name string) (broker.Connection, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	i, ok := b.find(name)
	if !ok {
		return broker.Connection{}, false
	}
	st := b.statuses[i]
	c := broker.Connection{Name: name, Provider: st.Provider, Grant: st.Grant, ClientID: "client-id",
		AuthorizationURL: "https://login.example.com/authorize", TokenURL: "https://login.example.com/token", AuthStyle: broker.AuthBasic}
	c.Secrets.ClientSecret = name + "-client-secret"
	return c, true
}

func (b *pageBroker) Token(context.Context, string, time.Duration) (broker.AccessToken, error) {
	return broker.AccessToken{}, &broker.Error{Code: broker.CodeUnavailable, Message: "not in this test"}
}

func (b *pageBroker) Status(context.Context) []broker.ConnectionStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]broker.ConnectionStatus(nil), b.statuses...)
}

func (b *pageBroker) ConnectionStatus(_ context.Context, name string) (broker.ConnectionStatus, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	i, ok := b.find(name)
	if !ok {
		return broker.ConnectionStatus{}, false
	}
	return b.statuses[i], true
}

func (b *pageBroker) Sweep(context.Context, time.Duration) []broker.SweepResult { return nil }

func (b *pageBroker) ForceRefresh(_ context.Context, name string) (broker.ConnectionStatus, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.forced = append(b.forced, name)
	i, _ := b.find(name)
	st := &b.statuses[i]
	st.State, st.LastError, st.Failures, st.LastRefresh, st.LastRefreshBy = broker.StateHealthy, nil, 0, b.now, "instance-b2"
	st.AccessTokenExpiresOn = b.now.Add(time.Hour)
	return *st, nil
}

func (b *pageBroker) Store() broker.SecretStore { return b.store }

func (b *pageBroker) forcedRefreshes() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.forced...)
}

var _ functions.ConsentBroker = (*pageBroker)(nil)

// newPageServer serves the broker as standalone does: on loopback, with an
// API key, its answers redacted.
func newPageServer(t *testing.T) (*pageBroker, *httptest.Server) {
	t.Helper()
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	b := newPageBroker(t, now)
	srv := httptest.NewUnstartedServer(nil)
	_, portText, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(portText)
	red := redact.New()
	red.Remember("client secret", pageClientSecret)
	red.Remember("api key", pageAPIKey)
	srv.Config.Handler = functions.NewServer(b, functions.Options{
		APIKey: broker.Secret(pageAPIKey), LoopbackPort: port, Redactor: red, Now: func() time.Time { return now },
	})
	srv.Start()
	t.Cleanup(srv.Close)
	return b, srv
}

// TestStatusPageInABrowser is the status page as an operator sees it in
// headless Chromium: every state shown, no secret and no injected markup
// on the page, and both buttons working.
func TestStatusPageInABrowser(t *testing.T) {
	bin := os.Getenv("CHROMIUM_BIN")
	if bin == "" {
		bin = "/usr/bin/chromium"
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no Chromium at %s: %v", bin, err)
		}
		t.Skipf("no Chromium at %s (set CHROMIUM_BIN; `make chromium`)", bin)
	}
	b, srv := newPageServer(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancel)
	do := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("browser, %s: %v", step, err)
		}
	}
	text := func(sel chromedp.CSS) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("browser, reading %s: %v", sel, err)
		}
		return v
	}

	do("opening the page", chromedp.Navigate(srv.URL+"/api/status?code="+pageAPIKey), chromedp.WaitVisible(chromedp.CSS("#row-outage")))
	states := map[string]string{"xero": "healthy", "rejected": "needs_reauthorization", "unseeded": "not_configured",
		"standby": "standby_used", "outage": "failing"}
	for name, want := range states {
		if got := text(chromedp.CSS("#state-" + name)); !strings.HasPrefix(got, want) {
			t.Errorf("%s: state %q, want %q", name, got, want)
		}
	}
	dom, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{pageAPIKey, pageClientSecret} {
		if strings.Contains(dom, secret) {
			t.Errorf("the page shows a planted secret (%d bytes of DOM)", len(dom))
		}
	}
	injected, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("injected") !== null || document.title === "pwned"`))
	if err != nil {
		t.Fatal(err)
	}
	if failure := text("#failure-rejected"); injected || !strings.Contains(failure, pageMarkup) || !strings.Contains(failure, "<b>Reconnect</b> & store") {
		t.Errorf("the failure's text was not shown as text: injected %v, cell %q", injected, failure)
	}
	if missing, standby, last := text("#state-unseeded"), text("#standby-standby"), text("#last-refresh-xero"); !strings.Contains(missing, "unseeded-refresh-token") ||
		standby != "used" || !strings.Contains(last, "instance-a1") || !strings.Contains(last, "took 1.234s") {
		t.Errorf("details: missing %q, standby %q, last refresh %q", missing, standby, last)
	}

	// Force refresh: the page reloads and shows the new state.
	do("forcing a refresh", chromedp.Click(chromedp.CSS("#refresh-outage")), chromedp.WaitVisible(chromedp.CSS("#state-outage.healthy")))
	if got, after := b.forcedRefreshes(), text("#last-refresh-outage"); len(got) != 1 || got[0] != "outage" || !strings.Contains(after, "instance-b2") {
		t.Errorf("forced refreshes %v; last refresh shown %q", got, after)
	}

	// Reconnect: a consent link, which opens the consent start's page.
	do("minting a consent link", chromedp.Click(chromedp.CSS("#reconnect-rejected")), chromedp.WaitVisible(chromedp.CSS("#link-rejected")))
	href, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#link-rejected"), "href"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(href.Value, srv.URL+"/api/consent/rejected?ticket=") {
		t.Fatalf("the consent link is %q", href.Value)
	}
	do("opening the consent link", chromedp.Navigate(href.Value))
	if title := text("h1"); !strings.Contains(title, "rejected") || !strings.HasPrefix(title, "Authorize") {
		t.Errorf("the consent link opened a page titled %q: %s", title, text("body"))
	}
}

// TestStatusPageActionsRefuseForgery: a button's request is refused 403
// without the page's token, with a forged or expired one, or from another
// origin, and nothing is refreshed; the page's own token passes.
func TestStatusPageActionsRefuseForgery(t *testing.T) {
	b, srv := newPageServer(t)
	res, _, token, ok := getPageToken(t, srv.URL+"/api/status", http.Header{"X-Functions-Key": {pageAPIKey}})
	if !ok || res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /api/status: %d %s, no token", res.StatusCode, res.Header.Get("Content-Type"))
	}
	ts, mac, _ := strings.Cut(token, ".")
	sec, _ := strconv.ParseInt(ts, 10, 64)
	stale := strconv.FormatInt(sec-int64(2*time.Hour/time.Second), 10) + "." + mac

	tests := []struct {
		name         string
		token        string
		origin, site string
		want         int
	}{
		{"no token", "", srv.URL, "same-origin", http.StatusForbidden},
		{"forged token", ts + ".AAAA", srv.URL, "same-origin", http.StatusForbidden},
		{"expired token", stale, srv.URL, "same-origin", http.StatusForbidden},
		{"another origin", token, "https://evil.example", "", http.StatusForbidden},
		{"cross-site fetch metadata", token, srv.URL, "same-site", http.StatusForbidden},
		{"no origin", token, "", "same-origin", http.StatusForbidden},
		{"the page's own", token, srv.URL, "same-origin", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/api/status/outage/refresh", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("x-functions-key", pageAPIKey)
			req.Header.Set("X-Status-Page-Token", tt.token)
			if tt.origin != "" {
				req.Header.Set("Origin", tt.origin)
			}
			if tt.site != "" {
				req.Header.Set("Sec-Fetch-Site", tt.site)
			}
			pressButton(t, b, req, tt.want)
		})
	}
}

// pressButton sends a button's request and checks that it is answered
// want and refreshes the connection exactly when want is 200.
func pressButton(t *testing.T, b *pageBroker, req *http.Request, want int) {
	t.Helper()
	before := len(b.forcedRefreshes())
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, res)
	if res.StatusCode != want {
		t.Fatalf("status %d, want %d: %s", res.StatusCode, want, body)
	}
	if refreshed := len(b.forcedRefreshes()) > before; refreshed != (want == http.StatusOK) {
		t.Fatalf("refreshed %v on status %d", refreshed, res.StatusCode)
	}
}

// getPageToken GETs the status page at url with header and returns the
// response, the page and the token its buttons send; ok is false when the
// page carries none.
func getPageToken(t *testing.T, url string, header http.Header) (res *http.Response, page, token string, ok bool) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page = readAll(t, res)
	const marker = `name="status-page-token" content="`
	i := strings.Index(page, marker)
	if i < 0 {
		return res, page, "", false
	}
	token = page[i+len(marker):]
	return res, page, token[:strings.IndexByte(token, '"')], true
}

func readAll(t *testing.T, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}
