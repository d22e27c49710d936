package broker_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// keyStore is a SecretStore in memory whose writes can be made to fail.
type keyStore struct {
	mu      sync.Mutex
	secrets map[string]broker.StoredSecret
	setErr  error
}

func (s *keyStore) Get(_ context.Context, name string) (broker.StoredSecret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.secrets[name]
	if !ok {
		return broker.StoredSecret{}, fmt.Errorf("%s: %w", name, broker.ErrSecretNotFound)
	}
	return v, nil
}

func (s *keyStore) Set(_ context.Context, name string, v broker.StoredSecret) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.setErr != nil {
		return s.setErr
	}
	s.secrets[name] = v
	return nil
}

// TestStoredKeyFailures: a key secret that is not a 32-byte key, a lock or
// a store that fails while creating one: each is an error about the
// write-ahead key, not a key; a failure is not kept, so the next call tries again;
// a key read once is kept for the life of the source.
func TestStoredKeyFailures(t *testing.T) {
	errWrite := errors.New("store refuses writes")
	good := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	tests := []struct {
		name    string
		stored  string // "" for no key secret
		setErr  error
		locker  broker.Locker
		wantErr error // nil: a message naming the secret suffices
	}{
		{"not base64", "not base64!", nil, nil, nil},
		{"16 bytes", base64.StdEncoding.EncodeToString(make([]byte, 16)), nil, nil, nil},
		{"lock unavailable to create it", "", nil, downLocker{}, broker.ErrLockUnavailable},
		{"store refuses the new key", "", errWrite, nil, errWrite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			store := &keyStore{secrets: map[string]broker.StoredSecret{}, setErr: tt.setErr}
			if tt.stored != "" {
				store.secrets[broker.WriteAheadKeySecret] = broker.StoredSecret{Value: broker.Secret(tt.stored)}
			}
			locker := tt.locker
			if locker == nil {
				l, err := local.NewLocker(t.TempDir(), local.LockerOptions{})
				if err != nil {
					t.Fatal(err)
				}
				locker = l
			}
			source := broker.StoredKey(store, locker)
			key, err := source(ctx)
			if err == nil || key != nil || !strings.Contains(err.Error(), "write-ahead key") {
				t.Fatalf("key %x, err %v; want no key and an error about the write-ahead key", key, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v; want it to wrap %v", err, tt.wantErr)
			}

			// Repaired: the same source now hands out the key, and keeps it.
			store.mu.Lock()
			store.setErr = nil
			store.secrets[broker.WriteAheadKeySecret] = broker.StoredSecret{Value: broker.Secret(good)}
			store.mu.Unlock()
			key, err = source(ctx)
			if err != nil || base64.StdEncoding.EncodeToString(key) != good {
				t.Fatalf("after the repair: key %x, err %v; want the stored key", key, err)
			}
			store.mu.Lock()
			delete(store.secrets, broker.WriteAheadKeySecret)
			store.mu.Unlock()
			if again, err := source(ctx); err != nil || !bytes.Equal(again, key) {
				t.Errorf("after the secret went: %x, %v; want the key kept", again, err)
			}
		})
	}
}
