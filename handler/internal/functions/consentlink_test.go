package functions

import (
	"context"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

var continueLink = regexp.MustCompile(`<a id="continue" href="([^"]+)">([^<]*)</a>`)

// TestConsentObtainsTwoIndependentFamiliesForAStandby: a connection with a
// standby grant is consented twice in one visit: the first callback stores
// the primary grant and offers the second authorization for the standby
// grant; the second stores the standby. The test provider models grant
// families: revoking the primary's family leaves the standby's alive, and
// the broker promotes it.
func TestConsentObtainsTwoIndependentFamiliesForAStandby(t *testing.T) {
	w := newConsentWorldWith(t, func(c *broker.Connection) {
		c.Standby = true
		c.Secrets.StandbyRefreshToken = broker.DefaultStandbySecretName(c.Name)
	})
	ctx := context.Background()
	c := browser(t)
	first := w.read(testprovider.Approve(ctx, c, w.srv.URL+"/api/consent/xero"))
	m := continueLink.FindStringSubmatch(first.body)
	if first.status != http.StatusOK || m == nil || !strings.Contains(m[2], "second authorization for the standby grant") {
		t.Fatalf("first callback: %d %s; want a page offering the second authorization for the standby grant", first.status, first.body)
	}
	primary := w.get(w.conn.Secrets.RefreshToken)
	if primary == "" || w.get(w.conn.Secrets.StandbyRefreshToken) != "" {
		t.Fatal("after the first authorization: want the primary stored and no standby yet")
	}
	next := html.UnescapeString(m[1])
	if !strings.HasPrefix(next, w.psrv.URL+"/authorize?") {
		t.Fatalf("the next step goes to %s, not the provider", next)
	}
	second := w.read(testprovider.Approve(ctx, c, next))
	if second.status != http.StatusOK || !strings.Contains(second.body, "standby grant") || continueLink.MatchString(second.body) {
		t.Fatalf("second callback: %d %s", second.status, second.body)
	}
	standby := w.get(w.conn.Secrets.StandbyRefreshToken)
	if standby == "" || standby == primary || w.get(w.conn.Secrets.RefreshToken) != primary {
		t.Fatal("the standby is not a second refresh token beside the unchanged primary")
	}
	if s := w.provider.AuthorizationStats(); s.Consents != 2 || s.CodesRedeemed != 2 {
		t.Fatalf("provider saw %+v; want two consents, two codes", s)
	}
	// Two families: revoking the primary's leaves the standby's.
	if !w.provider.Revoke(primary) {
		t.Fatal("the primary is unknown to the provider")
	}
	if cur, ok := w.provider.CurrentRefreshToken(standby); !ok || cur != standby {
		t.Fatal("revoking the primary's family revoked the standby's: the two are not independent")
	}
	// And the broker survives the loss on the standby.
	if _, err := w.broker.ForceRefresh(ctx, "xero"); err != nil {
		t.Fatalf("refresh after the primary family was revoked: %v; want the standby promoted", err)
	}
	w.checkNoSecretIn("the pages", first.body+second.body, standby)
}

// TestConsentClearsTheRecordedFailureAtOnce: after a consent, the status
// shows the new grant (no recorded invalid_grant, the new expiry) on the
// next reading, and the success page shows the new expiry.
func TestConsentClearsTheRecordedFailureAtOnce(t *testing.T) {
	w := newConsentWorld(t)
	ctx := context.Background()
	w.set(w.conn.Secrets.RefreshToken, "rt-revoked-long-ago")
	if _, err := w.broker.Token(ctx, "xero", 0); err == nil {
		t.Fatal("want the dead grant rejected")
	}
	if st, _ := w.broker.ConnectionStatus(ctx, "xero"); st.State != broker.StateNeedsReauthorization {
		t.Fatalf("before consent: %s", st.State)
	}
	done := w.read(testprovider.Approve(ctx, browser(t), w.srv.URL+"/api/consent/xero"))
	st, _ := w.broker.ConnectionStatus(ctx, "xero")
	if st.State != broker.StateHealthy || st.LastError != nil || st.AccessTokenExpiresOn.IsZero() {
		t.Fatalf("status right after consent: %s %+v; want healthy, no error", st.State, st.LastError)
	}
	want := st.AccessTokenExpiresOn.UTC().Format(time.RFC1123)
	if done.status != http.StatusOK || !strings.Contains(done.body, want) {
		t.Fatalf("success page: %d %s; want the new expiry %s", done.status, done.body, want)
	}
}

// TestConsentStartErrorsAnswerBrowsersWithPages: every refusal of the start
// is an HTML page for a browser and the surface's JSON for a program.
func TestConsentStartErrorsAnswerBrowsersWithPages(t *testing.T) {
	w := newConsentWorld(t)
	w.routes.needTicket = true
	keys, _ := w.routes.keys(context.Background())
	link := func(name string) string {
		ticket, _, err := consent.SignLink(keys.ticket, name, w.now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return w.srv.URL + "/api/consent/" + name + "?ticket=" + url.QueryEscape(ticket)
	}
	tests := []struct {
		name, url  string
		method     string
		wantStatus int
		wantText   string
	}{
		{"no link", w.srv.URL + "/api/consent/xero", "GET", http.StatusForbidden, "consent link"},
		{"unknown connection", w.srv.URL + "/api/consent/nope", "GET", http.StatusNotFound, "connection is named nope"},
		{"client credentials connection", link("ilevel"), "GET", http.StatusBadRequest, "needs no consent"},
		{"client secret missing", link("nosecret"), "GET", http.StatusFailedDependency, "client secret is missing"},
		{"link used twice", link("xero"), "POST", http.StatusForbidden, "already used"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.wantText == "already used" {
				req, _ := http.NewRequest(http.MethodPost, tt.url, nil)
				noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
				w.read(noRedirect.Do(req))
			}
			for _, accept := range []string{"text/html,application/xhtml+xml", "application/json"} {
				req, _ := http.NewRequest(tt.method, tt.url, nil)
				req.Header.Set("Accept", accept)
				resp, err := http.DefaultClient.Do(req)
				p := w.read(resp, err)
				ct := resp.Header.Get("Content-Type")
				if p.status != tt.wantStatus || !strings.Contains(p.body, tt.wantText) {
					t.Fatalf("Accept %s: %d %s; want %d with %q", accept, p.status, p.body, tt.wantStatus, tt.wantText)
				}
				if strings.HasPrefix(accept, "text/html") {
					if !strings.HasPrefix(ct, "text/html") || !strings.Contains(p.body, `<h1 id="title">`) {
						t.Fatalf("a browser got %s: %s", ct, p.body)
					}
					continue
				}
				var body errorBody
				if !strings.HasPrefix(ct, "application/json") || json.Unmarshal([]byte(p.body), &body) != nil || body.Error == "" || body.Remediation == "" {
					t.Fatalf("a program got %s: %s", ct, p.body)
				}
			}
		})
	}
}

// TestConsentLinkRoute: the operators' route mints a link for the
// connection, on the app's host, with the lifetime asked for, that the
// start route accepts; it refuses a lifetime past MaxLinkTTL.
func TestConsentLinkRoute(t *testing.T) {
	w := newConsentWorld(t)
	w.routes.needTicket = true
	post := func(path string) page {
		return w.read(http.Post(w.srv.URL+path, "", nil))
	}
	p := post("/api/connections/xero/consent-link?expires=2h")
	var res consentLinkResponse
	if err := json.Unmarshal([]byte(p.body), &res); err != nil || p.status != http.StatusOK {
		t.Fatalf("mint: %d %s", p.status, p.body)
	}
	if !strings.HasPrefix(res.URL, w.srv.URL+"/api/consent/xero?ticket=") || res.RedirectURI != w.srv.URL+callbackPath ||
		!res.ExpiresOn.Equal(w.now().Add(2*time.Hour).Truncate(time.Second)) {
		t.Fatalf("minted %+v", res)
	}
	if strings.Contains(res.URL, "code=") {
		t.Fatal("the link carries a key")
	}
	if got := w.read(http.Get(res.URL)); got.status != http.StatusOK {
		t.Fatalf("the minted link: %d %s", got.status, got.body)
	}
	for _, tt := range []struct{ path, want string }{
		{"/api/connections/xero/consent-link?expires=200h", "at most"},
		{"/api/connections/xero/consent-link?expires=soon", "not a duration"},
		{"/api/connections/ilevel/consent-link", "needs no consent"},
		{"/api/connections/nope/consent-link", "no connection"},
	} {
		if got := post(tt.path); got.status < 400 || !strings.Contains(got.body, tt.want) {
			t.Errorf("%s: %d %s; want a refusal with %q", tt.path, got.status, got.body, tt.want)
		}
	}
}
