package consent_test

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// TestLinkStoreClaimsOnce: a link is claimed once; the record keeps a hash
// of it until it expires, and then forgets it; another link of the same
// connection is its own.
func TestLinkStoreClaimsOnce(t *testing.T) {
	dir := t.TempDir()
	store, err := local.NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	locker, err := local.NewLocker(dir, local.LockerOptions{PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	ls := &consent.LinkStore{Store: store, Locker: locker, Now: func() time.Time { return now }}
	ctx := context.Background()
	key := consent.TicketKey([]byte("material"))
	a, aExp, _ := consent.SignLink(key, "xero", now, time.Hour)
	b, bExp, _ := consent.SignLink(key, "xero", now, 2*time.Hour)
	if err := ls.Claim(ctx, "xero", a, aExp); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	if err := ls.Claim(ctx, "xero", a, aExp); !errors.Is(err, consent.ErrLinkUsed) {
		t.Fatalf("second claim: %v, want ErrLinkUsed", err)
	}
	if err := ls.Claim(ctx, "xero", b, bExp); err != nil {
		t.Fatalf("another link: %v", err)
	}
	rec, err := store.Get(ctx, consent.UsedLinksSecretName("xero"))
	if err != nil || strings.Contains(rec.Value.Reveal(), a) || !rec.ExpiresOn.Equal(bExp) {
		t.Fatalf("record %v expiring %v: want hashes only, expiring with the latest link", err, rec.ExpiresOn)
	}
	// Past a's expiry its hash is dropped (a itself no longer verifies).
	now = aExp
	if err := ls.Claim(ctx, "xero", a, aExp.Add(time.Hour)); err != nil {
		t.Fatalf("a claim after the record forgot the expired link: %v", err)
	}
	if err := ls.Claim(ctx, "xero", b, bExp); !errors.Is(err, consent.ErrLinkUsed) {
		t.Fatalf("b after a's expiry: %v, want still used", err)
	}
}

// TestConsentPageUsesTheConnectionsConsentSettings: the connection's
// authorizationUrl, consentScopes and authParams reach the consent page's
// address; a reserved parameter is refused even if config let one by.
func TestConsentPageUsesTheConnectionsConsentSettings(t *testing.T) {
	c := broker.Connection{Name: "g", Provider: "generic", Grant: broker.GrantRefreshToken, TokenURL: "https://id.example.com/token",
		AuthStyle: broker.AuthBody, Scopes: []string{"api"}, ConsentScopes: []string{"read", "api"},
		AuthorizationURL: "https://id.example.com/authorize", AuthParams: map[string]string{"prompt": "select_account"}}
	auth, err := consent.AuthorizationURL(c)
	if err != nil || auth != c.AuthorizationURL {
		t.Fatalf("AuthorizationURL: %q %v", auth, err)
	}
	scopes, err := consent.Scopes(c, "extra")
	if err != nil || !slices.Equal(scopes, []string{"api", "read", "extra"}) {
		t.Fatalf("Scopes: %v %v", scopes, err)
	}
	f := consent.Flow{Connection: c, AuthorizationURL: auth, RedirectURL: "https://app.example.com/api/consent/callback", ClientID: "id", ClientSecret: "s", Scopes: scopes}
	loc, err := f.AuthCodeURL("state", consent.NewVerifier())
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(loc)
	if q := u.Query(); q.Get("prompt") != "select_account" || q.Get("scope") != "api read extra" || !strings.HasPrefix(loc, auth+"?") {
		t.Fatalf("consent page %s", loc)
	}
	f.Connection.AuthParams = map[string]string{"Redirect_URI": "https://evil.example.com"}
	if _, err := f.AuthCodeURL("state", consent.NewVerifier()); err == nil {
		t.Fatal("a reserved authParams parameter was sent")
	}
	c.AuthorizationURL = "http://id.example.com/authorize"
	if _, err := consent.AuthorizationURL(c); !errors.Is(err, consent.ErrInsecureURL) {
		t.Fatalf("plain http authorization URL: %v", err)
	}
}
