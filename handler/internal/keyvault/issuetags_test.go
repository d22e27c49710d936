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

// TestExpiryFromTheTagWhenTheAttributeIsMissing (issue 20 §1): a secret
// whose exp attribute is missing (written by hand or by an older tool)
// but whose expires-on tag says when it lapses has that expiry, in List
// (so the sweep needs no read to judge it) as in Get; the attribute wins
// when both are there, and a tag that does not parse is no expiry.
func TestExpiryFromTheTagWhenTheAttributeIsMissing(t *testing.T) {
	exp := clock.Add(47 * time.Minute)
	tests := []struct {
		name string
		attr time.Time // exp attribute; zero for none
		tag  string    // expires-on tag; "" for none
		want time.Time
	}{
		{name: "tag only", tag: exp.Format(time.RFC3339), want: exp},
		{name: "tag with an offset", tag: exp.In(time.FixedZone("CEST", 2*3600)).Format(time.RFC3339), want: exp},
		{name: "attribute wins", attr: exp, tag: exp.Add(time.Hour).Format(time.RFC3339), want: exp},
		{name: "attribute only", attr: exp, want: exp},
		{name: "malformed tag", tag: "in an hour"},
		{name: "neither"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, v := newStore(t, nil)
			ctx := t.Context()
			const name = "legacy-access-token"
			params := azsecrets.SetSecretParameters{Value: new(value), Tags: map[string]*string{}}
			if tt.tag != "" {
				params.Tags[keyvault.TagExpiresOn] = new(tt.tag)
			}
			if !tt.attr.IsZero() {
				params.SecretAttributes = &azsecrets.SecretAttributes{Expires: new(tt.attr)}
			}
			if _, err := v.Client.SetSecret(ctx, name, params, nil); err != nil {
				t.Fatal(err)
			}
			v.ResetCounts()
			infos, err := s.List(ctx)
			if err != nil || len(infos) != 1 {
				t.Fatalf("List = %v, %v", infos, err)
			}
			if !infos[0].ExpiresOn.Equal(tt.want) {
				t.Errorf("List: ExpiresOn %v, want %v", infos[0].ExpiresOn, tt.want)
			}
			if c := v.Counts(); c.Gets != 0 {
				t.Errorf("List read %d values, want none", c.Gets)
			}
			got, err := s.Get(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if !got.ExpiresOn.Equal(tt.want) {
				t.Errorf("Get: ExpiresOn %v, want %v", got.ExpiresOn, tt.want)
			}
		})
	}
}
