package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"regexp"
	"testing"
	"time"
)

// TestConsentLinkStartsOneConsent is the standalone consent start end to
// end: the handler serves on loopback; without a ticket, or on a Host that
// a rebound name would send, it refuses; the address `handler
// consent-link` prints gets past the ticket check once.
func TestConsentLinkStartsOneConsent(t *testing.T) {
	w := newConnectWorld(t, "basic")
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
	for deadline := time.Now().Add(10 * time.Second); get("http://"+addr+"/", "") != http.StatusOK; {
		if time.Now().After(deadline) {
			t.Fatal("the handler did not start")
		}
		time.Sleep(20 * time.Millisecond)
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
	// generic connection does not have: 400, not 403.
	if got := get(link, ""); got != http.StatusBadRequest {
		t.Fatalf("the printed link: %d, want past the ticket check (400: no authorization endpoint)", got)
	}
	if got := get(link, ""); got != http.StatusForbidden {
		t.Fatalf("the link a second time: %d, want 403", got)
	}
}
