package main

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// chromium returns the Chromium binary to drive: $CHROMIUM_BIN, else
// Debian's /usr/bin/chromium (`make test` installs it when it can). Without
// one the browser test is skipped, except in CI (CI=true), where a missing
// browser must not pass for a tested flow.
func chromium(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("CHROMIUM_BIN")
	if bin == "" {
		bin = "/usr/bin/chromium"
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no Chromium at %s (set CHROMIUM_BIN, or apt-get install chromium): %v", bin, err)
		}
		t.Skipf("no Chromium at %s (set CHROMIUM_BIN, or apt-get install chromium)", bin)
	}
	return bin
}

// TestConnectInABrowser is `handler connect` as a person sees it: headless
// Chromium opens the address the command printed, the provider's consent
// page, and clicks Allow; the browser follows the redirect back to the
// command's loopback server and shows the result, and the refresh token is
// in the store.
func TestConnectInABrowser(t *testing.T) {
	bin := chromium(t)
	w := newConnectWorld(t, broker.AuthBasic)
	r := w.connect("demo", "-authorization-url", w.psrv.URL+"/authorize")

	ctx := chromeContext(t, bin)
	fail := func(step string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("browser, %s: %v\nstdout:\n%s\nstderr:\n%s", step, err, redact(r.stdout.String()), redact(r.stderr.String()))
		}
	}
	fail("opening the printed address", chromedp.Do(ctx, chromedp.Navigate(r.authURL)))
	scope, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("scope")))
	fail("reading the consent page", err)
	fail("clicking Allow", chromedp.Do(ctx, chromedp.Click(chromedp.ID("allow"))))
	// #title is on the command's page only: this waits for the redirect
	// back.
	title, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("title")))
	fail("reading the result page", err)
	message, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("message")))
	fail("reading the result page", err)
	location, err := chromedp.Run(ctx, chromedp.Location())
	fail("reading the location", err)
	if scope != "api" || title != "Connection demo is connected" {
		t.Fatalf("consent page scope %q, result page %q", scope, title)
	}
	if u, _ := url.Parse(location); u == nil || !strings.HasPrefix(location, r.redirect+"?") || u.Query().Get("code") == "" {
		t.Fatalf("the browser ended at %s, not the redirect URI", redact(location))
	}
	if code := r.wait(); code != 0 {
		t.Fatalf("exit %d:\n%s", code, redact(r.stderr.String()))
	}
	rt := w.secret("demo-refresh-token")
	if cur, ok := w.provider.CurrentRefreshToken(rt); !ok || cur != rt {
		t.Fatal("the stored refresh token is not the provider's current one")
	}
	w.checkNothingLeaks(title, message, r.stdout.String(), r.stderr.String())
}

// chromeContext starts headless Chromium (bin) for t, and returns a
// context that drives it with a deadline of 30 seconds.
func chromeContext(t *testing.T, bin string) context.Context {
	t.Helper()
	// The machine has no network beyond loopback: every flag that makes
	// Chromium reach out on its own is set, or it waits on connections
	// that never open.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelBrowser)
	// The first action starts the browser, which lives as long as that
	// action's context: the deadline goes on the steps after it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
