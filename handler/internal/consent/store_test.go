package consent_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
)

func TestSaveOrder(t *testing.T) {
	c := broker.Connection{Name: "x", Secrets: broker.DefaultSecretNames("x")}
	issued := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tok := &broker.Token{AccessToken: "at", RefreshToken: "rt", Expiry: issued.Add(time.Hour), IssuedAt: issued}

	store := newRecordingStore()
	if err := consent.Save(context.Background(), store, c, tok); err != nil {
		t.Fatal(err)
	}
	if want := []string{"x-refresh-token", "x-access-token"}; !slices.Equal(store.sets, want) {
		t.Fatalf("writes %q, want %q: the refresh token first", store.sets, want)
	}
	if at := store.secrets["x-access-token"]; !at.ExpiresOn.Equal(tok.Expiry) || !at.UpdatedOn.Equal(issued) {
		t.Fatalf("access token stored with %+v", at)
	}

	// The refresh token cannot be written: the access token is not either.
	store = newRecordingStore()
	store.failSet["x-refresh-token"] = errStoreDown
	var se *consent.StoreError
	if err := consent.Save(context.Background(), store, c, tok); !errors.As(err, &se) || se.Secret != "x-refresh-token" {
		t.Fatalf("err = %v; want a *StoreError on x-refresh-token", err)
	}
	if _, ok := store.secrets["x-access-token"]; ok {
		t.Fatal("the access token was stored without its refresh token")
	}

	if err := consent.Save(context.Background(), newRecordingStore(), c, &broker.Token{AccessToken: "at"}); !errors.Is(err, consent.ErrNoRefreshToken) {
		t.Fatalf("err = %v; want ErrNoRefreshToken", err)
	}
}

func TestClientCredentials(t *testing.T) {
	names := broker.DefaultSecretNames("x")
	tests := []struct {
		name       string
		conn       broker.Connection
		secrets    map[string]broker.Secret
		failGet    error
		wantID     string
		wantMiss   string
		wantStored bool
	}{
		{"literal id", broker.Connection{Name: "x", ClientID: "lit", Secrets: names}, map[string]broker.Secret{"x-client-secret": "s"}, nil, "lit", "", false},
		{"stored id", broker.Connection{Name: "x", Secrets: names}, map[string]broker.Secret{"x-client-id": "sid", "x-client-secret": "s"}, nil, "sid", "", false},
		{"no id", broker.Connection{Name: "x", Secrets: names}, map[string]broker.Secret{"x-client-secret": "s"}, nil, "", "x-client-id", false},
		{"empty secret", broker.Connection{Name: "x", ClientID: "lit", Secrets: names}, map[string]broker.Secret{"x-client-secret": ""}, nil, "", "x-client-secret", false},
		{"store down", broker.Connection{Name: "x", ClientID: "lit", Secrets: names}, nil, errStoreDown, "", "", true},
		// An assertion-authenticated client has no secret to read: the
		// store, down here, is not asked.
		{"private_key_jwt", broker.Connection{Name: "x", ClientID: "lit", AuthStyle: broker.AuthPrivateKeyJWT, Secrets: names}, nil, errStoreDown, "lit", "", false},
		{"managedIdentity", broker.Connection{Name: "x", ClientID: "lit", AuthStyle: broker.AuthManagedIdentity, Secrets: names}, nil, errStoreDown, "lit", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newRecordingStore()
			for k, v := range tt.secrets {
				store.secrets[k] = broker.StoredSecret{Value: v}
			}
			store.failGet = tt.failGet
			id, secret, err := consent.ClientCredentials(context.Background(), store, tt.conn)
			var me *consent.MissingSecretError
			var se *consent.StoreError
			switch {
			case tt.wantMiss != "":
				if !errors.As(err, &me) || me.Secret != tt.wantMiss || me.Remediation() == "" {
					t.Fatalf("err = %v; want a *MissingSecretError for %s", err, tt.wantMiss)
				}
			case tt.wantStored:
				if !errors.As(err, &se) || !errors.Is(err, errStoreDown) {
					t.Fatalf("err = %v; want a *StoreError", err)
				}
			default:
				wantSecret := "s"
				if tt.conn.AuthStyle == broker.AuthPrivateKeyJWT || tt.conn.AuthStyle == broker.AuthManagedIdentity {
					wantSecret = ""
				}
				if err != nil || id != tt.wantID || secret.Reveal() != wantSecret {
					t.Fatalf("got %q, %v; want %q and the secret", id, err, tt.wantID)
				}
			}
		})
	}
}
