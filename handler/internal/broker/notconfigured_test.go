package broker_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// TestMissingSecretsAreNotConfigured: a connection whose secrets are not
// all in the store reports not_configured naming each missing one, in
// Status (with and without a store that lists) and in the error a token
// request gets, and the provider is never called.
func TestMissingSecretsAreNotConfigured(t *testing.T) {
	tests := []struct {
		name     string
		grant    broker.GrantType
		clientID bool // the client id is read from the store
		load     []string
		want     []string
	}{
		{"nothing loaded", broker.GrantRefreshToken, true, nil,
			[]string{"c-client-id", "c-client-secret", "c-refresh-token"}},
		{"literal client id, nothing loaded", broker.GrantRefreshToken, false, nil,
			[]string{"c-client-secret", "c-refresh-token"}},
		{"refresh token missing", broker.GrantRefreshToken, false, []string{"c-client-secret"},
			[]string{"c-refresh-token"}},
		{"client credentials, secret missing", broker.GrantClientCredentials, true, []string{"c-client-id"},
			[]string{"c-client-secret"}},
	}
	for _, tt := range tests {
		for _, listing := range []bool{false, true} {
			t.Run(tt.name+map[bool]string{false: "", true: " (listing store)"}[listing], func(t *testing.T) {
				e := newEnv(t, testprovider.Config{Rotate: true})
				c := e.conn("c", tt.grant)
				if tt.clientID {
					c.ClientID = ""
				}
				ctx := context.Background()
				for _, name := range tt.load {
					if err := e.store.SecretStore.Set(ctx, name, broker.StoredSecret{Value: "loaded-value"}); err != nil {
						t.Fatal(err)
					}
				}
				var opts []brokerOption
				if listing {
					ls := &listingStore{countingStore: e.store, list: e.store.SecretStore.(*local.Store)}
					opts = append(opts, func(o *broker.Options) { o.Store = ls })
				}
				b := e.broker([]broker.Connection{c}, opts...)

				sts := b.Status(ctx)
				if len(sts) != 1 || sts[0].State != broker.StateNotConfigured || !slices.Equal(sts[0].MissingSecrets, tt.want) {
					t.Fatalf("status = %+v, want not_configured missing %v", sts, tt.want)
				}
				one, _ := b.ConnectionStatus(ctx, "c")
				if one.State != broker.StateNotConfigured || !slices.Equal(one.MissingSecrets, tt.want) {
					t.Fatalf("one connection's status = %+v, want not_configured missing %v", one, tt.want)
				}
				for _, w := range tt.want {
					if !strings.Contains(one.NextAction, w) {
						t.Errorf("next action %q does not name %s", one.NextAction, w)
					}
				}

				_, err := b.Token(ctx, "c", 0)
				var be *broker.Error
				if !errors.As(err, &be) || be.Code != broker.CodeNotConfigured || be.Retryable() {
					t.Fatalf("token: %v, want a not_configured error that is not retryable", err)
				}
				for _, w := range tt.want {
					if !strings.Contains(be.Message, w) || !strings.Contains(be.Remediation, w) {
						t.Errorf("error %+v does not name %s in message and remediation", be, w)
					}
				}
				if strings.Contains(be.Message, "loaded-value") {
					t.Error("the error shows a secret's value")
				}
				if n := e.provider.Stats().TokenRequests; n != 0 {
					t.Errorf("%d token requests without the credentials", n)
				}
			})
		}
	}
}

// TestLoadedSecretsEndNotConfigured: once the missing secrets are loaded
// the status no longer says not_configured, and a token is served.
func TestLoadedSecretsEndNotConfigured(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("c", broker.GrantRefreshToken)
	b := e.broker([]broker.Connection{c})
	ctx := context.Background()
	if _, err := b.Token(ctx, "c", 0); code(err) != broker.CodeNotConfigured {
		t.Fatalf("before loading: %v", err)
	}
	e.seed(c)
	if st, _ := b.ConnectionStatus(ctx, "c"); st.State == broker.StateNotConfigured || st.LastError != nil {
		t.Fatalf("after loading, status %+v", st)
	}
	if _, err := b.Token(ctx, "c", 0); err != nil {
		t.Fatalf("after loading: %v", err)
	}
}
