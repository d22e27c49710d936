package bloblease

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/azurite"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault/kvtest"
)

// rotatingGrant issues a new access and refresh token per request, and
// refuses a refresh token that is not the current one (counted in reused).
type rotatingGrant struct {
	mu      sync.Mutex
	current string
	issued  []string // every token issued, for the no-clear-bytes check
	calls   int
	reused  int
}

func (g *rotatingGrant) Token(ctx context.Context, c *broker.Connection, cred broker.Credentials) (*broker.Token, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls++
	if cred.RefreshToken.Reveal() != g.current {
		g.reused++
		return nil, &broker.ProviderError{StatusCode: 400, Code: "invalid_grant", Permanent: true}
	}
	at, rt := "at-"+rand.Text(), "rt-"+rand.Text()
	g.current = rt
	g.issued = append(g.issued, at, rt)
	return &broker.Token{AccessToken: broker.Secret(at), RefreshToken: broker.Secret(rt), TokenType: "Bearer",
		Expiry: time.Now().Add(time.Hour), IssuedAt: time.Now()}, nil
}

func (g *rotatingGrant) counts() (calls, reused int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls, g.reused
}

// besideLockWorld is what the blob-mode tests share: an Azurite container,
// a Key Vault double holding the write-ahead key and one rotating
// connection's client secret and refresh token, the grant that issued it
// and the store over the double.
func besideLockWorld(t *testing.T) (*azurite.Instance, string, *kvtest.Vault, broker.Connection, *rotatingGrant, *keyvault.Store) {
	t.Helper()
	az := storage.Instance(t)
	container := uniqueContainer(t)
	v := kvtest.New(t, nil)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	v.Put(broker.WriteAheadKeySecret, base64.StdEncoding.EncodeToString(key), time.Time{})
	conn := broker.Connection{Name: "xero", Provider: "test", Grant: broker.GrantRefreshToken, TokenURL: "https://provider.invalid/token",
		AuthStyle: broker.AuthBasic, ClientID: "client", Secrets: broker.DefaultSecretNames("xero"), Rotating: true, DefaultLifetime: time.Hour}
	g := &rotatingGrant{current: "rt-0-" + rand.Text()}
	v.Put(conn.Secrets.ClientSecret, "cs-"+rand.Text(), time.Time{})
	v.Put(conn.Secrets.RefreshToken, g.current, time.Time{})
	return az, container, v, conn, g, keyvault.New(v.Client, keyvault.Options{})
}

// lockContent is the lock blob's content as anyone with read access sees it.
func lockContent(t *testing.T, l *Locker, name string) []byte {
	t.Helper()
	resp, err := l.container.NewBlobClient(name+".lock").DownloadStream(ctx10s(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAccessTokensBesideTheLock (ACCESS_TOKEN_STORE=blob) runs brokers on
// one Azurite container and one Key Vault double, through the real
// azsecrets client: a rotating refresh writes the vault once (the refresh
// token); another instance serves the access token from the lock blob
// without a refresh; a refresh whose store write failed (the write-ahead
// record pending, as a killed instance leaves it) serves its access token
// to other instances and loses no refresh token; the blob never holds a
// token in the clear; and an instance with another write-ahead key
// refreshes instead of failing.
func TestAccessTokensBesideTheLock(t *testing.T) {
	t.Parallel()
	az, container, v, conn, g, store := besideLockWorld(t)
	var rmu sync.Mutex
	remembered := map[string]string{} // what the redactor would be told
	newBroker := func(keys broker.KeySource) (*broker.Broker, *Locker) {
		t.Helper()
		l := newLocker(t, az, container, Options{})
		if keys == nil {
			keys = broker.StoredKey(store, l)
		}
		b, err := broker.New(broker.Options{Store: store, Locker: l, Grant: g, Connections: []broker.Connection{conn},
			WriteAheadKey: keys, AccessTokensBesideLock: true, StoreRetries: 2, StoreRetryDelay: time.Millisecond,
			ForceRefreshInterval: time.Nanosecond, Remember: func(name, value string) {
				rmu.Lock()
				remembered[name] = value
				rmu.Unlock()
			}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close(context.Background()) })
		return b, l
	}
	token := func(b *broker.Broker) string {
		t.Helper()
		at, err := b.Token(ctx10s(t), "xero", 0)
		if err != nil {
			t.Fatalf("Token = %v", err)
		}
		return at.Value.Reveal()
	}
	noClearTokens := func(l *Locker) {
		t.Helper()
		content := lockContent(t, l, "xero")
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, tok := range append(g.issued, g.current) {
			if bytes.Contains(content, []byte(tok)) || bytes.Contains(content, []byte(strings.TrimPrefix(tok, "at-"))) {
				t.Fatalf("the lock blob holds a token in the clear")
			}
		}
	}

	// A rotating refresh: one vault write.
	a, la := newBroker(nil)
	sets := v.Counts().Sets
	first := token(a)
	if n := v.Counts().Sets - sets; n != 1 {
		t.Fatalf("a rotating refresh made %d vault writes; want 1 (the refresh token)", n)
	}
	if _, ok := v.Latest(conn.Secrets.AccessToken); ok {
		t.Fatal("the access token was written to the vault")
	}
	if got, _ := v.Value(conn.Secrets.RefreshToken); got != g.current {
		t.Fatal("the vault does not hold the rotated refresh token")
	}
	if hasRecord(t, la, "xero") {
		t.Fatal("HasWriteAhead = true for the access-token record: the sweep would reconcile every connection")
	}
	noClearTokens(la)

	// Another instance: served from the blob, no refresh, no vault write.
	b2, _ := newBroker(nil)
	sets = v.Counts().Sets
	if got := token(b2); got != first {
		t.Fatal("a second instance did not serve the access token kept beside the lock")
	}
	if calls, _ := g.counts(); calls != 1 {
		t.Fatalf("%d token requests; want 1 (the second instance refreshed)", calls)
	}
	if n := v.Counts().Sets - sets; n != 0 {
		t.Fatalf("serving from the blob made %d vault writes", n)
	}
	rmu.Lock()
	told := remembered[conn.Secrets.AccessToken] == first
	rmu.Unlock()
	if !told {
		t.Fatal("the access token read from the blob was not registered for redaction")
	}

	// The store refuses the rotated refresh token: the record stays
	// pending beside the lock, with the access token; a third instance
	// serves it, and the next refresh redeems the record's token.
	refused := kvtest.ForbiddenByRbac // not retried by the SDK: one fault per broker attempt
	refused.Secret = conn.Secrets.RefreshToken
	v.Fail(kvtest.OpSet, 2, refused)
	if _, err := a.ForceRefresh(ctx10s(t), "xero"); err != nil {
		t.Fatalf("ForceRefresh with the store refusing = %v; want served from the record", err)
	}
	if !hasRecord(t, la, "xero") {
		t.Fatal("no pending write-ahead record after the store refused the refresh token")
	}
	noClearTokens(la)
	c, _ := newBroker(nil)
	second := token(c)
	if second == first {
		t.Fatal("a third instance served the old access token, not the pending record's")
	}
	if calls, _ := g.counts(); calls != 2 {
		t.Fatalf("%d token requests; want 2 (the third instance refreshed)", calls)
	}
	if _, err := c.ForceRefresh(ctx10s(t), "xero"); err != nil {
		t.Fatalf("refresh after the outage = %v", err)
	}
	if _, reused := g.counts(); reused != 0 {
		t.Fatalf("%d refresh tokens redeemed that were not current: the pending one was lost", reused)
	}
	if got, _ := v.Value(conn.Secrets.RefreshToken); got != g.current {
		t.Fatal("the vault does not hold the current refresh token after the outage")
	}
	if hasRecord(t, la, "xero") {
		t.Fatal("the write-ahead record is still pending after a refresh with the store back")
	}
	noClearTokens(la)

	// Another key (rotated, or a wrong one): the record cannot be opened;
	// the instance refreshes instead of failing, and nothing is reused.
	other := make([]byte, 32)
	_, _ = rand.Read(other)
	d, _ := newBroker(func(context.Context) ([]byte, error) { return other, nil })
	calls, _ := g.counts()
	if got := token(d); got == "" {
		t.Fatal("no token with another key")
	}
	if now, reused := g.counts(); now != calls+1 || reused != 0 {
		t.Fatalf("with another key: %d token requests (want 1), %d reused (want 0)", now-calls, reused)
	}
	// And the first key's instances read the new record as unreadable,
	// and refresh in turn.
	e, _ := newBroker(nil)
	if got := token(e); got == "" {
		t.Fatal("no token after the key changed back")
	}
	if _, reused := g.counts(); reused != 0 {
		t.Fatalf("%d refresh tokens reused after a key change", reused)
	}
}
