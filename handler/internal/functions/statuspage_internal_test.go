package functions

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// TestStatusPageEscapesEveryField puts markup in every text field of a
// status; none of it may reach the page as markup.
func TestStatusPageEscapesEveryField(t *testing.T) {
	const evil = `<evil a="x" b='y'>&`
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	st := broker.ConnectionStatus{
		Name: "n" + evil, Provider: "p" + evil, Grant: broker.GrantType("g" + evil), State: broker.State("s" + evil),
		AccessTokenExpiresOn: now, LastRefresh: now, LastRefreshBy: "i" + evil, Failures: 1, Refreshes: 2, PersistPending: true,
		RefreshTokenUpdatedOn: now, RefreshTokenIdleExpiresOn: now, ClientSecretExpiresOn: now,
		Standby: broker.StandbyState("sb" + evil), MissingSecrets: []string{"m" + evil},
		LastError:  &broker.StatusError{Code: broker.ErrorCode("c" + evil), Category: "cat" + evil, Message: "msg" + evil, Remediation: "rem" + evil},
		NextAction: "next" + evil,
	}
	page := renderStatusPage([]broker.ConnectionStatus{st}, "tok"+evil, "nonce"+evil, now)
	if strings.Contains(page, "<evil") || strings.Contains(page, `"x"`) || strings.Contains(page, "'y'") {
		t.Fatalf("a field's markup reached the page:\n%s", page)
	}
	escaped := "&lt;evil a=&#34;x&#34; b=&#39;y&#39;&gt;&amp;"
	for _, field := range []string{"n", "p", "g", "s", "i", "sb", "m", "c", "cat", "msg", "rem", "next", "tok", "nonce"} {
		if !strings.Contains(page, field+escaped) {
			t.Errorf("field %s is not on the page as escaped text", field)
		}
	}
}

// TestStatusPageShowsHowLongTheLastRefreshTook: the last-refresh cell
// says how long the refresh took when the status knows it, and claims no
// duration when it does not.
func TestStatusPageShowsHowLongTheLastRefreshTook(t *testing.T) {
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		ms   int64
		want string // "" for no duration shown
	}{
		{"unknown", 0, ""},
		{"one millisecond", 1, "took 1ms"},
		{"a slow provider", 1234, "took 1.234s"},
		{"over a minute", 61_500, "took 1m1.5s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := broker.ConnectionStatus{Name: "xero", State: broker.StateHealthy, LastRefresh: now.Add(-time.Minute), LastRefreshMs: tt.ms}
			page := renderStatusPage([]broker.ConnectionStatus{st}, "tok", "nonce", now)
			start := strings.Index(page, `<td id="last-refresh-xero">`)
			if start < 0 {
				t.Fatalf("no last-refresh cell:\n%s", page)
			}
			cell := page[start : start+strings.Index(page[start:], "</td>")]
			if tt.want == "" {
				if strings.Contains(cell, "took") {
					t.Errorf("cell %q claims a duration; want none", cell)
				}
				return
			}
			if !strings.Contains(cell, `<small class="took">`+tt.want+`</small>`) {
				t.Errorf("cell %q; want %q", cell, tt.want)
			}
		})
	}
}

// TestStatusActionOrigin: behind the Functions host (Host 127.0.0.1, the
// public name in X-Forwarded-Host) a button's request must carry the app's
// public https origin and the page's token.
func TestStatusActionOrigin(t *testing.T) {
	key := statusPageKey([]byte("material"))
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	good := signPageToken(key, now.Add(-10*time.Minute))
	tests := []struct {
		name, origin, site, token string
		ok                        bool
	}{
		{"the app's page", "https://app.azurewebsites.net", "same-origin", good, true},
		{"without fetch metadata", "https://app.azurewebsites.net", "", good, true},
		{"another site", "https://evil.example", "cross-site", good, false},
		{"another site without fetch metadata", "https://evil.example", "", good, false},
		{"plain http", "http://app.azurewebsites.net", "same-origin", good, false},
		{"the loopback host", "http://127.0.0.1:7071", "same-origin", good, false},
		{"a token of another key", "https://app.azurewebsites.net", "same-origin", signPageToken(statusPageKey([]byte("other")), now), false},
		{"a token from the future", "https://app.azurewebsites.net", "same-origin", signPageToken(key, now.Add(time.Hour)), false},
		{"an hour and a second old", "https://app.azurewebsites.net", "same-origin", signPageToken(key, now.Add(-time.Hour-time.Second)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:7071/api/status/xero/refresh", nil)
			r.Header.Set("X-Forwarded-Host", "app.azurewebsites.net")
			r.Header.Set("Origin", tt.origin)
			if tt.site != "" {
				r.Header.Set("Sec-Fetch-Site", tt.site)
			}
			r.Header.Set(statusPageTokenHeader, tt.token)
			if err := statusActionAllowed(r, key, now, true); (err == nil) != tt.ok {
				t.Fatalf("allowed %v, want %v (%v)", err == nil, tt.ok, err)
			}
		})
	}
}
