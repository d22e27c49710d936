package local_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// TestStoreKeepsIssueTimeAndLifetime (issue 15, defect 4): an access
// token's issue time and lifetime are kept with it and read back; a file
// written before they were (or without them) reads as unknown, and a
// negative lifetime is a corrupt file.
func TestStoreKeepsIssueTimeAndLifetime(t *testing.T) {
	issued := time.Date(2026, 11, 23, 3, 0, 0, 123, time.FixedZone("CET", 3600))
	tests := []struct {
		name         string
		set          *broker.StoredSecret // nil: the file is written by hand
		file         string
		wantIssued   time.Time
		wantLifetime time.Duration
		wantCorrupt  bool
	}{
		{name: "kept", set: &broker.StoredSecret{Value: "v", IssuedOn: issued, Lifetime: 8 * time.Minute},
			wantIssued: issued, wantLifetime: 8 * time.Minute},
		{name: "not given", set: &broker.StoredSecret{Value: "v"}},
		{name: "a file from before", file: `{"value": "v", "expiresOn": "2026-11-23T04:00:00Z", "updatedOn": "2026-11-23T03:00:00Z"}`},
		{name: "negative lifetime", file: `{"value": "v", "lifetimeSeconds": -1}`, wantCorrupt: true},
		{name: "bad issue time", file: `{"value": "v", "issuedOn": "today"}`, wantCorrupt: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := local.NewStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if tt.set != nil {
				if err := s.Set(ctx, "x-access-token", *tt.set); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(filepath.Join(s.Dir(), "x-access-token.json"), []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := s.Get(ctx, "x-access-token")
			if tt.wantCorrupt {
				if _, ok := err.(*local.CorruptFileError); !ok {
					t.Fatalf("Get = %v, want a *CorruptFileError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.IssuedOn.Equal(tt.wantIssued) || got.Lifetime != tt.wantLifetime {
				t.Fatalf("IssuedOn %v, Lifetime %v; want %v, %v", got.IssuedOn, got.Lifetime, tt.wantIssued, tt.wantLifetime)
			}
		})
	}
}
