package config

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// TestStandby: "standby" gives a connection a second grant with a secret
// of its own, and is refused where it cannot work.
func TestStandby(t *testing.T) {
	tests := []struct {
		name        string
		conns       string
		wantStandby bool
		wantSecret  string
		problems    []string // "index field: substring"
	}{
		{name: "off by default", conns: `{"name": "g", "provider": "google"}`},
		{name: "on, default secret", conns: `{"name": "g", "provider": "google", "standby": true}`,
			wantStandby: true, wantSecret: "g-standby-refresh-token"},
		{name: "on, named secret", conns: `{"name": "g", "provider": "google", "standby": true, "secrets": {"standbyRefreshToken": "g-second"}}`,
			wantStandby: true, wantSecret: "g-second"},
		{name: "provider that does not say", conns: `{"name": "x", "provider": "xero", "standby": true}`,
			wantStandby: true, wantSecret: "x-standby-refresh-token"},
		{name: "client credentials", conns: `{"name": "c", "grant": "client_credentials", "tokenUrl": "https://id.example.com/t", "clientAuth": "body", "standby": true}`,
			problems: []string{"0 standby: has no refresh token"}},
		{name: "not a boolean", conns: `{"name": "g", "provider": "google", "standby": "yes"}`,
			problems: []string{"0 standby: must be true or false"}},
		{name: "named secret without standby", conns: `{"name": "g", "provider": "google", "secrets": {"standbyRefreshToken": "g-second"}}`,
			problems: []string{"0 secrets.standbyRefreshToken: never used without"}},
		{name: "standby secret is the primary's", conns: `{"name": "g", "provider": "google", "standby": true, "secrets": {"standbyRefreshToken": "g-refresh-token"}}`,
			problems: []string{"0 secrets.refreshToken: is also this connection's standbyRefreshToken"}},
		{name: "a connection named like the standby lock", conns: `{"name": "g", "provider": "google", "standby": true, "secrets": {"standbyRefreshToken": "other"}},
			{"name": "g-standby", "provider": "google", "secrets": {"refreshToken": "gs-rt"}}`,
			wantStandby: true, problems: []string{"1 name: standby grant's lock"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conns, err := ParseConnections([]byte(`{"connections": [` + tc.conns + `]}`))
			var got []string
			var ve *ValidationError
			if errors.As(err, &ve) {
				for _, p := range ve.Problems {
					got = append(got, p.String())
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.problems) {
				t.Fatalf("problems = %q, want %d like %q", got, len(tc.problems), tc.problems)
			}
			for i, w := range tc.problems {
				idx, rest, _ := strings.Cut(w, " ")
				field, sub, _ := strings.Cut(rest, ": ")
				if !strings.HasPrefix(got[i], "connections["+idx+"]") || !strings.Contains(got[i], `field "`+field+`"`) || !strings.Contains(got[i], sub) {
					t.Errorf("problem %d = %q, want connections[%s], field %q, containing %q", i, got[i], idx, field, sub)
				}
			}
			if err != nil {
				return
			}
			if conns[0].Standby != tc.wantStandby || conns[0].Secrets.StandbyRefreshToken != tc.wantSecret {
				t.Errorf("Standby = %v, secret %q; want %v, %q", conns[0].Standby, conns[0].Secrets.StandbyRefreshToken, tc.wantStandby, tc.wantSecret)
			}
		})
	}
}

// TestStandbyRefusedWhereOneGrant: a provider known to keep one grant per
// user and client refuses standby, and says where that is documented.
func TestStandbyRefusedWhereOneGrant(t *testing.T) {
	saved := presets
	t.Cleanup(func() { presets = saved })
	one := Preset{Name: "onegrant", Title: "One Grant Inc", TokenURL: "https://id.example.com/token", AuthStyle: broker.AuthBody,
		Grant: broker.GrantRefreshToken, SeveralGrants: GrantsOne, SeveralGrantsSource: "https://id.example.com/docs"}
	presets = append(slices.Clone(saved), one)
	slices.SortFunc(presets, func(a, b Preset) int { return strings.Compare(a.Name, b.Name) })

	_, err := ParseConnections([]byte(`{"connections": [{"name": "o", "provider": "onegrant", "standby": true}]}`))
	if err == nil || !strings.Contains(err.Error(), `field "standby"`) || !strings.Contains(err.Error(), "https://id.example.com/docs") {
		t.Fatalf("err = %v, want standby refused with the source", err)
	}
	if _, err := ParseConnections([]byte(`{"connections": [{"name": "o", "provider": "onegrant"}]}`)); err != nil {
		t.Fatalf("without standby: %v", err)
	}
}

// TestSeveralGrantsHaveSources: every preset that says how many grants it
// keeps names where that is documented.
func TestSeveralGrantsHaveSources(t *testing.T) {
	for _, p := range Presets() {
		if (p.SeveralGrants != GrantsUnknown) != strings.HasPrefix(p.SeveralGrantsSource, "https://") {
			t.Errorf("preset %q: SeveralGrants %d with source %q", p.Name, p.SeveralGrants, p.SeveralGrantsSource)
		}
	}
	for _, name := range []string{"google", "microsoft"} {
		if p, _ := LookupPreset(name); p.SeveralGrants != GrantsSeveral {
			t.Errorf("preset %q: SeveralGrants = %d, want GrantsSeveral", name, p.SeveralGrants)
		}
	}
}
