package bloblease

import (
	"context"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault/kvtest"
)

// TestStatusReadsTheAccessTokenBesideTheLock (ACCESS_TOKEN_STORE=blob):
// the vault holds no access token, so an instance that has not served the
// connection itself reads its expiry from the lock blob for the status,
// by Status (every connection) and ConnectionStatus (one) alike, with one
// Get Blob that also tells a pending write-ahead record from the
// access-token record. Azurite and the Key Vault double, as
// TestAccessTokensBesideTheLock.
func TestStatusReadsTheAccessTokenBesideTheLock(t *testing.T) {
	t.Parallel()
	az, container, v, conn, g, store := besideLockWorld(t)
	newBroker := func() *broker.Broker {
		t.Helper()
		l := newLocker(t, az, container, Options{})
		b, err := broker.New(broker.Options{Store: store, Locker: l, Grant: g, Connections: []broker.Connection{conn},
			WriteAheadKey: broker.StoredKey(store, l), AccessTokensBesideLock: true, StoreRetries: 2, StoreRetryDelay: time.Millisecond,
			ForceRefreshInterval: time.Nanosecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close(context.Background()) })
		return b
	}
	a := newBroker()
	statuses := func(name string, want time.Time, pending bool) {
		t.Helper()
		// A new instance each time: nothing in its memory.
		other := newBroker()
		all := other.Status(ctx10s(t))
		one, ok := other.ConnectionStatus(ctx10s(t), "xero")
		if len(all) != 1 || !ok {
			t.Fatalf("%s: %d statuses, found %t", name, len(all), ok)
		}
		for _, cs := range []broker.ConnectionStatus{all[0], one} {
			if !cs.AccessTokenExpiresOn.Equal(want) {
				t.Errorf("%s: accessTokenExpiresOn = %v; want %v, the token kept beside the lock", name, cs.AccessTokenExpiresOn, want)
			}
			if cs.PersistPending != pending {
				t.Errorf("%s: persistPending = %t; want %t", name, cs.PersistPending, pending)
			}
			if wantState := broker.StateHealthy; !pending && !want.IsZero() && cs.State != wantState {
				t.Errorf("%s: state %s (%s); want %s", name, cs.State, cs.NextAction, wantState)
			}
		}
	}

	statuses("before any refresh", time.Time{}, false)
	first, err := a.Token(ctx10s(t), "xero", 0)
	if err != nil {
		t.Fatal(err)
	}
	statuses("the access-token record", first.Expiry, false)

	// The store refuses the rotated refresh token: the write-ahead record
	// stays pending, with the new access token.
	refused := kvtest.ForbiddenByRbac
	refused.Secret = conn.Secrets.RefreshToken
	v.Fail(kvtest.OpSet, 2, refused)
	second, err := a.ForceRefresh(ctx10s(t), "xero")
	if err != nil {
		t.Fatal(err)
	}
	if !second.AccessTokenExpiresOn.After(first.Expiry) {
		t.Fatalf("the refresh during the outage issued a token expiring at %v, not after %v", second.AccessTokenExpiresOn, first.Expiry)
	}
	statuses("a pending write-ahead record", second.AccessTokenExpiresOn, true)
}
