package consent_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// recordingStore is a SecretStore in memory that records the names it is
// asked for and can be made to fail.
type recordingStore struct {
	mu      sync.Mutex
	secrets map[string]broker.StoredSecret
	gets    []string
	sets    []string
	failGet error
	failSet map[string]error
}

func newRecordingStore() *recordingStore {
	return &recordingStore{secrets: map[string]broker.StoredSecret{}, failSet: map[string]error{}}
}

func (s *recordingStore) Get(_ context.Context, name string) (broker.StoredSecret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets = append(s.gets, name)
	if s.failGet != nil {
		return broker.StoredSecret{}, s.failGet
	}
	v, ok := s.secrets[name]
	if !ok {
		return broker.StoredSecret{}, broker.ErrSecretNotFound
	}
	return v, nil
}

func (s *recordingStore) Set(_ context.Context, name string, v broker.StoredSecret) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sets = append(s.sets, name)
	if err := s.failSet[name]; err != nil {
		return err
	}
	s.secrets[name] = v
	return nil
}

var errStoreDown = errors.New("store down")

func TestPendingClaimedOnce(t *testing.T) {
	ctx := context.Background()
	store, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	ps := &consent.PendingStore{Store: store, Now: func() time.Time { return now }}
	p := consent.NewPending("xero", "https://app.example.com/api/consent/callback", now)
	if name, ok := consent.ConnectionOfState(p.State); !ok || name != "xero" {
		t.Fatalf("state %q names %q, %v", p.State, name, ok)
	}
	if err := ps.Put(ctx, p); err != nil {
		t.Fatal(err)
	}
	stored, err := store.Get(ctx, consent.StateSecretName("xero"))
	if err != nil || !stored.ExpiresOn.Equal(now.Add(consent.PendingTTL)) {
		t.Fatalf("stored %v, %v; want the secret to expire with the authorization", stored.ExpiresOn, err)
	}

	got, err := ps.Claim(ctx, p.State)
	if err != nil {
		t.Fatal(err)
	}
	if got.Verifier != p.Verifier || got.RedirectURL != p.RedirectURL || got.Connection != "xero" || got.State != p.State {
		t.Fatalf("claimed %+v, want %+v", got, p)
	}
	_, err = ps.Claim(ctx, p.State)
	var se *consent.StateError
	if !errors.Is(err, consent.ErrStateUsed) || !errors.As(err, &se) || se.Connection != "xero" {
		t.Fatalf("replay: %v; want ErrStateUsed for xero", err)
	}
	stored, _ = store.Get(ctx, consent.StateSecretName("xero"))
	if strings.Contains(stored.Value.Reveal(), p.Verifier.Reveal()) {
		t.Fatal("the used record still holds the verifier")
	}
}

func TestPendingRefusals(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		claim   func(t *testing.T, ps *consent.PendingStore, p consent.Pending, clock *time.Time) error
		wantErr error
	}{
		{"expired", func(t *testing.T, ps *consent.PendingStore, p consent.Pending, clock *time.Time) error {
			*clock = clock.Add(consent.PendingTTL)
			_, err := ps.Claim(context.Background(), p.State)
			return err
		}, consent.ErrStateExpired},
		{"superseded by a newer authorization", func(t *testing.T, ps *consent.PendingStore, p consent.Pending, clock *time.Time) error {
			if err := ps.Put(context.Background(), consent.NewPending("xero", p.RedirectURL, *clock)); err != nil {
				t.Fatal(err)
			}
			_, err := ps.Claim(context.Background(), p.State)
			return err
		}, consent.ErrStateUnknown},
		{"forged random part", func(t *testing.T, ps *consent.PendingStore, p consent.Pending, _ *time.Time) error {
			_, err := ps.Claim(context.Background(), "xero.AAAAAAAAAAAAAAAAAAAAAAAAAA")
			return err
		}, consent.ErrStateUnknown},
		{"another connection", func(t *testing.T, ps *consent.PendingStore, p consent.Pending, _ *time.Time) error {
			_, err := ps.Claim(context.Background(), "other"+p.State[len("xero"):])
			return err
		}, consent.ErrStateUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := now
			ps := &consent.PendingStore{Store: newRecordingStore(), Now: func() time.Time { return clock }}
			p := consent.NewPending("xero", "https://app.example.com/api/consent/callback", now)
			if err := ps.Put(context.Background(), p); err != nil {
				t.Fatal(err)
			}
			if err := tt.claim(t, ps, p, &clock); !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v; want %v", err, tt.wantErr)
			}
		})
	}
}

// A state that is not shaped like one never becomes a secret name.
func TestMalformedStateReadsNothing(t *testing.T) {
	for _, state := range []string{"", "xero", "xero.", ".ABCDEFGHIJKLMNOPQRSTUVWXYZ", "Xero.ABCDEFGHIJKLMNOPQRSTUVWXYZ",
		"../x.ABCDEFGHIJKLMNOPQRSTUVWXYZ", "xero.abcdefghijklmnopqrstuvwxyz", "xero.ABC", "x_y.ABCDEFGHIJKLMNOPQRSTUVWXYZ"} {
		store := newRecordingStore()
		ps := &consent.PendingStore{Store: store}
		if _, err := ps.Claim(context.Background(), state); !errors.Is(err, consent.ErrStateUnknown) {
			t.Errorf("%q: err = %v; want ErrStateUnknown", state, err)
		}
		if len(store.gets) != 0 {
			t.Errorf("%q: read %q", state, store.gets)
		}
	}
}

func TestClaimStoreFailures(t *testing.T) {
	now := time.Now()
	store := newRecordingStore()
	ps := &consent.PendingStore{Store: store}
	p := consent.NewPending("xero", "https://app.example.com/api/consent/callback", now)
	if err := ps.Put(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	// Marking it used fails: nothing is handed out.
	store.failSet[consent.StateSecretName("xero")] = errStoreDown
	var se *consent.StoreError
	if _, err := ps.Claim(context.Background(), p.State); !errors.As(err, &se) || se.Op != "write" || !errors.Is(err, errStoreDown) {
		t.Fatalf("err = %v; want a *StoreError writing", err)
	}
	store.failGet = errStoreDown
	if _, err := ps.Claim(context.Background(), p.State); !errors.As(err, &se) || se.Op != "read" {
		t.Fatalf("err = %v; want a *StoreError reading", err)
	}
}
