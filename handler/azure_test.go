package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/azurite"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/bloblease"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault/kvtest"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testclock"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// TestThreeInstancesOnKeyVaultAndBlobLeases is the promise on the Azure
// backends, through the real clients: three brokers, as three instances of
// the function app would be, share a Key Vault (the kvtest double, through
// azsecrets) and blob leases (on Azurite, through azblob). 100 callers per
// instance across 5 expiries cause exactly 5 token-endpoint calls, and
// each refresh writes the rotated refresh token to the vault before the
// access token.
func TestThreeInstancesOnKeyVaultAndBlobLeases(t *testing.T) {
	t.Parallel()
	const (
		instances = 3
		callers   = 100
		expiries  = 5
		lifetime  = time.Hour
		name      = "xero"
	)
	clock := testclock.New(time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC))
	clientSecret := "cs_" + rand.Text()
	provider := testprovider.New(testprovider.Config{
		ClientID: "client", ClientSecret: clientSecret, AuthStyle: broker.AuthBasic,
		Rotate: true, AccessTokenLifetime: lifetime, Now: clock.Now,
	})
	ps := httptest.NewServer(provider)
	t.Cleanup(ps.Close)

	vault := kvtest.New(t, &kvtest.Options{Now: clock.Now})
	secrets := broker.DefaultSecretNames(name)
	firstRT := provider.IssueRefreshToken()
	vault.Put(secrets.ClientSecret, clientSecret, time.Time{})
	vault.Put(secrets.RefreshToken, firstRT, time.Time{})
	az := azurite.Start(t)

	conn := broker.Connection{
		Name: name, Provider: "test", Grant: broker.GrantRefreshToken, TokenURL: ps.URL + "/token",
		AuthStyle: broker.AuthBasic, ClientID: "client", Secrets: secrets, Rotating: true,
		RefreshBefore: 5 * time.Minute, DefaultLifetime: lifetime,
	}
	brokers := make([]*broker.Broker, instances)
	for i := range brokers {
		bc, err := azblob.NewClientFromConnectionString(az.ConnectionString(), bloblease.ClientOptions())
		if err != nil {
			t.Fatal(err)
		}
		locker, err := bloblease.New(bc, bloblease.Options{PollInterval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		b, err := broker.New(broker.Options{
			Store:       keyvault.New(vault.Client, keyvault.Options{VaultURL: vault.URL}),
			Locker:      locker,
			Grant:       oauth.New(oauth.Options{Now: clock.Now}),
			Connections: []broker.Connection{conn},
			Instance:    fmt.Sprintf("instance-%d", i),
			Now:         clock.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close(context.Background()) })
		brokers[i] = b
	}

	ctx := context.Background()
	for round := 1; round <= expiries; round++ {
		before := provider.Stats().TokenRequests
		writes := len(vault.Writes())
		var wg sync.WaitGroup
		got := make([]string, instances*callers)
		errs := make([]error, instances*callers)
		for i, b := range brokers {
			for j := range callers {
				wg.Go(func() {
					tok, err := b.Token(ctx, name, 0)
					got[i*callers+j], errs[i*callers+j] = tok.Value.Reveal(), err
				})
			}
		}
		wg.Wait()
		for k, err := range errs {
			if err != nil {
				t.Fatalf("round %d, caller %d: %v", round, k, err)
			}
			if got[k] != got[0] {
				t.Fatalf("round %d: callers got different tokens", round)
			}
		}
		if !provider.ValidAccessToken(got[0]) {
			t.Fatalf("round %d: the token served is not valid at the provider", round)
		}
		if calls := provider.Stats().TokenRequests - before; calls != 1 {
			t.Errorf("round %d: %d token-endpoint calls for %d callers on %d instances, want 1", round, calls, instances*callers, instances)
		}
		// The refresh token first, then the access token, and nothing else.
		var order []string
		for _, w := range vault.Writes()[writes:] {
			order = append(order, w.Name)
		}
		if len(order) != 2 || order[0] != secrets.RefreshToken || order[1] != secrets.AccessToken {
			t.Errorf("round %d: vault writes %v, want [%s %s]", round, order, secrets.RefreshToken, secrets.AccessToken)
		}
		if cur, _ := provider.CurrentRefreshToken(firstRT); cur != mustValue(t, vault, secrets.RefreshToken) {
			t.Errorf("round %d: the vault's refresh token is not the provider's current one", round)
		}
		clock.Advance(lifetime)
	}
	st := provider.Stats()
	if st.TokenRequests != expiries || st.Rejected != 0 || st.ReuseDetected != 0 {
		t.Errorf("provider: %d token requests, %d rejected, %d reuses; want %d, 0, 0", st.TokenRequests, st.Rejected, st.ReuseDetected, expiries)
	}

	// Whichever instance refreshed last, every instance's status says so:
	// the lock blob's metadata carries it.
	var by []string
	for _, b := range brokers {
		cs, _ := b.ConnectionStatus(ctx, name)
		by = append(by, cs.LastRefreshBy)
		if cs.LastRefreshBy == "" || cs.Failures != 0 {
			t.Errorf("status %+v: want the refreshing instance named and no failures", cs)
		}
	}
	if by[0] != by[1] || by[1] != by[2] {
		t.Errorf("instances disagree on who refreshed last: %v", by)
	}
}

func mustValue(t *testing.T, v *kvtest.Vault, name string) string {
	t.Helper()
	s, ok := v.Value(name)
	if !ok {
		t.Fatalf("secret %s is not in the vault", name)
	}
	return s
}

// TestStorageDown: with the lock's storage gone, a rotating refresh token
// is not redeemed (503, no provider call), while a client-credentials
// connection, which risks nothing without the lock, is still served.
func TestStorageDown(t *testing.T) {
	t.Parallel()
	clientSecret := "cs_" + rand.Text()
	provider := testprovider.New(testprovider.Config{ClientID: "client", ClientSecret: clientSecret, AuthStyle: broker.AuthBasic, Rotate: true})
	ps := httptest.NewServer(provider)
	t.Cleanup(ps.Close)
	vault := kvtest.New(t, nil)
	conn := func(name string, g broker.GrantType) broker.Connection {
		return broker.Connection{Name: name, Provider: "test", Grant: g, TokenURL: ps.URL + "/token", AuthStyle: broker.AuthBasic,
			ClientID: "client", Secrets: broker.DefaultSecretNames(name), Rotating: g == broker.GrantRefreshToken,
			RefreshBefore: time.Minute, DefaultLifetime: time.Hour}
	}
	rt, cc := conn("rt", broker.GrantRefreshToken), conn("cc", broker.GrantClientCredentials)
	for _, c := range []broker.Connection{rt, cc} {
		vault.Put(c.Secrets.ClientSecret, clientSecret, time.Time{})
	}
	vault.Put(rt.Secrets.RefreshToken, provider.IssueRefreshToken(), time.Time{})

	az := azurite.Start(t)
	bc, err := azblob.NewClientFromConnectionString(az.ConnectionString(), bloblease.ClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	locker, err := bloblease.New(bc, bloblease.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Options{
		Store: keyvault.New(vault.Client, keyvault.Options{}), Locker: locker,
		Grant: oauth.New(oauth.Options{}), Connections: []broker.Connection{rt, cc}, LockWait: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	if err := az.Stop(); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	_, err = b.Token(ctx, "rt", 0)
	var be *broker.Error
	if !errors.As(err, &be) || be.Code != broker.CodeUnavailable || be.RetryAfter <= 0 {
		t.Fatalf("refresh-token connection with storage down: %v; want 503 temporarily_unavailable with Retry-After", err)
	}
	if n := provider.Stats().TokenRequests; n != 0 {
		t.Fatalf("%d token-endpoint calls without the lock, want 0", n)
	}
	if _, err := b.Token(ctx, "cc", 0); err != nil {
		t.Fatalf("client-credentials connection with storage down: %v; want a token", err)
	}
}

// TestProviderSlowerThanTheLease: a provider that takes longer than the
// lease lasts does not let a second instance in; the holder's renewals keep
// the lease, and the waiting instance is then served the holder's token.
func TestProviderSlowerThanTheLease(t *testing.T) {
	t.Parallel()
	const lease = 15 * time.Second
	clientSecret := "cs_" + rand.Text()
	provider := testprovider.New(testprovider.Config{ClientID: "client", ClientSecret: clientSecret, AuthStyle: broker.AuthBasic, Rotate: true})
	ps := httptest.NewServer(provider)
	t.Cleanup(ps.Close)
	vault := kvtest.New(t, nil)
	conn := broker.Connection{Name: "slow", Provider: "test", Grant: broker.GrantRefreshToken, TokenURL: ps.URL + "/token",
		AuthStyle: broker.AuthBasic, ClientID: "client", Secrets: broker.DefaultSecretNames("slow"), Rotating: true,
		RefreshBefore: time.Minute, DefaultLifetime: time.Hour}
	vault.Put(conn.Secrets.ClientSecret, clientSecret, time.Time{})
	vault.Put(conn.Secrets.RefreshToken, provider.IssueRefreshToken(), time.Time{})
	az := azurite.Start(t)
	provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultSlow, Delay: lease + 3*time.Second})

	newBroker := func() *broker.Broker {
		bc, err := azblob.NewClientFromConnectionString(az.ConnectionString(), bloblease.ClientOptions())
		if err != nil {
			t.Fatal(err)
		}
		locker, err := bloblease.New(bc, bloblease.Options{LeaseDuration: lease, PollInterval: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		b, err := broker.New(broker.Options{
			Store: keyvault.New(vault.Client, keyvault.Options{}), Locker: locker,
			Grant:       oauth.New(oauth.Options{Timeout: 40 * time.Second, AttemptTimeout: 30 * time.Second}),
			Connections: []broker.Connection{conn}, LockWait: 40 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close(context.Background()) })
		return b
	}
	holder, waiter := newBroker(), newBroker()
	ctx := context.Background()
	type result struct {
		tok broker.AccessToken
		err error
	}
	first := make(chan result, 1)
	go func() {
		tok, err := holder.Token(ctx, "slow", 0)
		first <- result{tok, err}
	}()
	// The waiter asks once the holder's request is at the provider.
	waitUntil(t, 30*time.Second, "the holder to call the provider", func() bool { return provider.Stats().TokenRequests == 1 })
	tok, err := waiter.Token(ctx, "slow", 0)
	if err != nil {
		t.Fatalf("waiter: %v", err)
	}
	r := <-first
	if r.err != nil {
		t.Fatalf("holder: %v", r.err)
	}
	if tok.Value != r.tok.Value {
		t.Error("the waiter was not served the holder's token")
	}
	if st := provider.Stats(); st.TokenRequests != 1 || st.ReuseDetected != 0 {
		t.Errorf("provider: %d token requests, %d reuses; want 1 and 0 (the lease held through the slow call)", st.TokenRequests, st.ReuseDetected)
	}
}
