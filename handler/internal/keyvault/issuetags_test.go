package keyvault_test

import (
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault"
)

// TestIssueTimeAndLifetimeAsTags (issue 15, defect 4): an access token's
// issue time and lifetime travel as tags and come back from Get as
// written, while UpdatedOn stays Key Vault's write time. Tags that do not
// parse (an operator's edit) read as unknown.
func TestIssueTimeAndLifetimeAsTags(t *testing.T) {
	issued := time.Date(2026, 5, 1, 13, 59, 20, 123456789, time.FixedZone("CEST", 2*3600))
	tests := []struct {
		name         string
		set          broker.StoredSecret
		raw          map[string]string // written around Set, as an operator's tags
		wantTags     map[string]string // beyond managed-by
		wantIssued   time.Time
		wantLifetime time.Duration
	}{
		{name: "recorded",
			set:        broker.StoredSecret{IssuedOn: issued, Lifetime: 5 * time.Minute},
			wantTags:   map[string]string{keyvault.TagIssuedOn: "2026-05-01T11:59:20.123456789Z", keyvault.TagLifetime: "300"},
			wantIssued: issued, wantLifetime: 5 * time.Minute},
		{name: "lifetime rounded down to whole seconds",
			set:      broker.StoredSecret{Lifetime: 3599*time.Second + 999*time.Millisecond},
			wantTags: map[string]string{keyvault.TagLifetime: "3599"}, wantLifetime: 3599 * time.Second},
		{name: "under a second: not recorded", set: broker.StoredSecret{Lifetime: 500 * time.Millisecond}},
		{name: "none", set: broker.StoredSecret{}},
		{name: "malformed tags read as unknown",
			raw: map[string]string{keyvault.TagIssuedOn: "yesterday", keyvault.TagLifetime: "-300"}},
		{name: "an implausible lifetime reads as unknown",
			raw: map[string]string{keyvault.TagLifetime: "99999999999"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, v := newStore(t, nil)
			ctx := t.Context()
			const name = "acme-access-token"
			if tt.raw != nil {
				tags := map[string]*string{}
				for k, val := range tt.raw {
					tags[k] = &val
				}
				val := value
				if _, err := v.Client.SetSecret(ctx, name, azsecrets.SetSecretParameters{Value: &val, Tags: tags}, nil); err != nil {
					t.Fatal(err)
				}
			} else {
				tt.set.Value = value
				if err := s.Set(ctx, name, tt.set); err != nil {
					t.Fatal(err)
				}
				ver, _ := v.Latest(name)
				for k, want := range tt.wantTags {
					if ver.Tags[k] != want {
						t.Errorf("tag %s = %q, want %q", k, ver.Tags[k], want)
					}
				}
				for _, k := range []string{keyvault.TagIssuedOn, keyvault.TagLifetime} {
					if _, ok := ver.Tags[k]; ok && tt.wantTags[k] == "" {
						t.Errorf("tag %s = %q, want none", k, ver.Tags[k])
					}
				}
			}
			got, err := s.Get(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if !got.IssuedOn.Equal(tt.wantIssued) || got.Lifetime != tt.wantLifetime || !got.UpdatedOn.Equal(clock) {
				t.Errorf("Get: IssuedOn %v, Lifetime %v, UpdatedOn %v; want %v, %v and the vault's %v",
					got.IssuedOn, got.Lifetime, got.UpdatedOn, tt.wantIssued, tt.wantLifetime, clock)
			}
		})
	}
}
