package broker_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// TestImportRefreshToken: an imported refresh token is redeemed once under
// the lock; one the provider accepts is stored (rotated or as it was) and
// the connection is healthy, one it refuses leaves the store untouched.
func TestImportRefreshToken(t *testing.T) {
	tests := []struct {
		name   string
		rotate bool
		valid  bool
	}{
		{"rotating provider", true, true},
		{"non-rotating provider", false, true},
		{"refused token", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testprovider.Config{Rotate: tt.rotate})
			c := e.conn("c", broker.GrantRefreshToken)
			c.Rotating = tt.rotate
			ctx := context.Background()
			if err := e.store.SecretStore.Set(ctx, c.Secrets.ClientSecret, broker.StoredSecret{Value: clientSecret}); err != nil {
				t.Fatal(err)
			}
			rt := broker.Secret("not-a-token-the-provider-issued")
			if tt.valid {
				rt = broker.Secret(e.provider.IssueRefreshToken())
			}
			b := e.broker([]broker.Connection{c})
			st, err := b.ImportRefreshToken(ctx, "c", rt)
			if n := e.provider.Stats().TokenRequests; n != 1 {
				t.Errorf("%d token requests, want 1", n)
			}
			stored, gerr := e.store.SecretStore.Get(ctx, c.Secrets.RefreshToken)
			if !tt.valid {
				var be *broker.Error
				if !errors.As(err, &be) || be.Code != broker.CodeRejected {
					t.Fatalf("import of a refused token: %v", err)
				}
				if !errors.Is(gerr, broker.ErrSecretNotFound) {
					t.Fatalf("a refused token reached the store: %v", gerr)
				}
				return
			}
			if err != nil {
				t.Fatalf("import: %v", err)
			}
			if st.State != broker.StateHealthy {
				t.Errorf("state %s after import, want healthy", st.State)
			}
			if gerr != nil {
				t.Fatal(gerr)
			}
			if rotated := stored.Value != rt; rotated != tt.rotate {
				t.Errorf("stored refresh token rotated = %t, want %t", rotated, tt.rotate)
			}
			// The stored token is the live one: the next refresh works.
			if _, err := b.ForceRefresh(ctx, "c"); err != nil {
				t.Errorf("refresh after import: %v", err)
			}
		})
	}
}
