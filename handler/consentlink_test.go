package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestConsentLinkStartsOneConsent is the standalone consent start end to
// end: the handler serves on loopback; without a ticket, or on a Host that
// a rebound name would send, it refuses; the address `handler
// consent-link` prints gets past the ticket check once.
func TestConsentLinkStartsOneConsent(t *testing.T) {
	w := newConnectWorld(t, "basic")
	addr := startStandalone(t, w)
	client := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(u, host string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", u, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get("http://"+addr+"/api/consent/demo", ""); got != http.StatusForbidden {
		t.Fatalf("no ticket: %d, want 403", got)
	}
	var out, errOut bytes.Buffer
	if rc := run(context.Background(), []string{"consent-link", "demo"}, w.getenv, nil, &out, &errOut); rc != 0 {
		t.Fatalf("consent-link exit %d: %s", rc, errOut.String())
	}
	link := regexp.MustCompile(`http://\S+`).FindString(out.String())
	if link == "" {
		t.Fatalf("no address printed: %s", out.String())
	}
	if got := get(link, "attacker.example:"+addr[len("127.0.0.1:"):]); got != http.StatusForbidden {
		t.Fatalf("the link on a rebound host name: %d, want 403", got)
	}
	// Past the ticket, the start needs an authorization endpoint, which a
	// generic connection without authorizationUrl does not have: 400, not
	// 403; and a GET spends nothing, so the second answers alike.
	for i := range 2 {
		if got := get(link, ""); got != http.StatusBadRequest {
			t.Fatalf("the printed link, GET %d: %d, want past the ticket check (400: no authorization endpoint)", i+1, got)
		}
	}
}

// startStandalone runs the handler of w on a free loopback port and
// returns its address once it answers.
func startStandalone(t *testing.T, w *connectWorld) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	w.env["LISTEN_ADDR"] = addr
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, nil, w.getenv, nil, &bytes.Buffer{}, &bytes.Buffer{}) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if resp, err := http.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the handler did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConsentLinkInABrowser is the business owner's consent end to end:
// `handler consent-link` prints a link with no key in it; headless Chromium
// opens it, presses Continue on the handler's page and Allow on the
// provider's, and the handler's page says the connection is re-authorized
// with its new expiry; the stored refresh token is the provider's current
// one. The link is spent: opened again, its button is refused with a page.
func TestConsentLinkInABrowser(t *testing.T) {
	bin := chromium(t)
	w := newConnectWorld(t, "basic")
	w.env["CONNECTIONS"] = fmt.Sprintf(`{"connections": [
  {"name": "demo", "tokenUrl": %q, "clientAuth": "basic", "clientId": "client", "scopes": ["api"], "rotating": true,
   "authorizationUrl": %q, "consentScopes": ["read"], "authParams": {"prompt": "consent"}}
]}`, w.psrv.URL+"/token", w.psrv.URL+"/authorize")
	addr := startStandalone(t, w)
	w.provider.AllowRedirectURIs("http://" + addr + "/api/consent/callback")

	var out, errOut bytes.Buffer
	if rc := run(context.Background(), []string{"consent-link", "demo", "-expires", "2h"}, w.getenv, nil, &out, &errOut); rc != 0 {
		t.Fatalf("consent-link exit %d: %s", rc, errOut.String())
	}
	link := regexp.MustCompile(`http://\S+`).FindString(out.String())
	u, err := url.Parse(link)
	if err != nil || link == "" || u.Query().Has("code") || u.Query().Get("ticket") == "" || len(u.Query()) != 1 {
		t.Fatalf("the printed link %q: want the ticket and no key", link)
	}

	ctx := chromeContext(t, bin)
	fail := func(step string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("browser, %s: %v", step, err)
		}
	}
	// titleOf waits until the page's #title satisfies ok (the page
	// changes under a navigation the click started), and returns it.
	titleOf := func(step string, ok func(string) bool) string {
		t.Helper()
		var title string
		for deadline := time.Now().Add(20 * time.Second); ; {
			got, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("title")))
			if err == nil && ok(got) {
				return got
			}
			title = got
			if time.Now().After(deadline) {
				t.Fatalf("browser, %s: the page's title is %q (%v)", step, title, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	fail("opening the link", chromedp.Do(ctx, chromedp.Navigate(link)))
	titleOf("the link's page", func(s string) bool { return strings.Contains(s, "connection demo") })
	fail("pressing Continue", chromedp.Do(ctx, chromedp.Click(chromedp.ID("continue"))))
	scope, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("scope")))
	fail("reading the consent page", err)
	if scope != "api read" {
		t.Fatalf("the provider was asked for %q, want \"api read\"", scope)
	}
	fail("clicking Allow", chromedp.Do(ctx, chromedp.Click(chromedp.ID("allow"))))
	title := titleOf("the result", func(s string) bool { return strings.Contains(s, "re-authorized") })
	message, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("message")))
	fail("reading the result", err)
	if title != "Connection demo re-authorized" || !strings.Contains(message, "valid until") {
		t.Fatalf("result page %q: %q", title, message)
	}
	rt := w.secret("demo-refresh-token")
	if cur, ok := w.provider.CurrentRefreshToken(rt); rt == "" || !ok || cur != rt {
		t.Fatal("the stored refresh token is not the provider's current one")
	}
	if strings.Contains(title+message, rt) {
		t.Fatal("the page shows the refresh token")
	}
	// Spent: the page still opens (GET spends nothing), its button is refused.
	fail("opening the link again", chromedp.Do(ctx, chromedp.Navigate(link)))
	titleOf("the link's page again", func(s string) bool { return strings.HasPrefix(s, "Authorize") })
	fail("pressing Continue again", chromedp.Do(ctx, chromedp.Click(chromedp.ID("continue"))))
	titleOf("the refusal", func(s string) bool { return strings.Contains(s, "cannot start") })
	if message, err = chromedp.Run(ctx, chromedp.Text(chromedp.ID("message"))); err != nil || !strings.Contains(message, "already used") {
		t.Fatalf("the spent link's button: %q %v", message, err)
	}
}
