package config

import (
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// TestPresetFacts pins the documented provider facts, so a change to one is
// a deliberate edit of this table too.
func TestPresetFacts(t *testing.T) {
	tests := []struct {
		name            string
		tokenURL        string
		auth            broker.AuthStyle
		rotating        bool
		reuseGrace      time.Duration
		defaultLifetime time.Duration
		idleExpiry      time.Duration
		needsTenant     bool
	}{
		{"xero", "https://identity.xero.com/connect/token", broker.AuthBasic, true, 30 * time.Minute, 30 * time.Minute, 60 * day, false},
		{"microsoft", "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token", broker.AuthBody, true, 24 * time.Hour, time.Hour, 90 * day, true},
		{"salesforce", "https://login.salesforce.com/services/oauth2/token", broker.AuthBody, true, 0, time.Hour, 30 * day, false},
		{"salesforce-sandbox", "https://test.salesforce.com/services/oauth2/token", broker.AuthBody, true, 0, time.Hour, 30 * day, false},
		{"google", "https://oauth2.googleapis.com/token", broker.AuthBody, false, 0, time.Hour, 180 * day, false},
		{"hubspot", "https://api.hubapi.com/oauth/2026-03/token", broker.AuthBody, false, 0, 30 * time.Minute, 0, false},
		{"generic", "", "", false, 0, time.Hour, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := LookupPreset(tt.name)
			if !ok {
				t.Fatalf("LookupPreset(%q) found nothing", tt.name)
			}
			if p.Name != tt.name || p.TokenURL != tt.tokenURL || p.AuthStyle != tt.auth || p.Rotating != tt.rotating ||
				p.ReuseGrace != tt.reuseGrace || p.DefaultLifetime != tt.defaultLifetime || p.IdleExpiry != tt.idleExpiry ||
				p.NeedsTenant != tt.needsTenant || p.Grant != broker.GrantRefreshToken || p.RefreshBefore != 5*time.Minute {
				t.Errorf("preset %q = %+v", tt.name, p)
			}
		})
	}
	if got, want := len(Presets()), len(tests); got != want {
		t.Errorf("%d presets, %d checked here: add the new one to this table", got, want)
	}
}

// TestPresetInvariants checks what every preset must satisfy, so a new one
// cannot be added half-done.
func TestPresetInvariants(t *testing.T) {
	all := Presets()
	if !slices.IsSortedFunc(all, func(a, b Preset) int { return strings.Compare(a.Name, b.Name) }) {
		t.Errorf("Presets() is not sorted by name")
	}
	for i, p := range all {
		if i > 0 && all[i-1].Name == p.Name {
			t.Errorf("preset %q listed twice", p.Name)
		}
		if !connectionNamePattern.MatchString(p.Name) {
			t.Errorf("preset name %q is not lower-case a-z, 0-9 and -", p.Name)
		}
		if p.Notes == "" {
			t.Errorf("preset %q has no notes", p.Name)
		}
		if u, err := url.Parse(p.Source); err != nil || u.Scheme != "https" || u.Host == "" {
			t.Errorf("preset %q source %q is not an https URL", p.Name, p.Source)
		}
		if p.Name == genericPreset {
			if p.TokenURL != "" || p.AuthStyle != "" || p.Rotating || p.NeedsTenant {
				t.Errorf("generic preset must leave the endpoint to the connection: %+v", p)
			}
		} else {
			for _, u := range []string{p.TokenURL, p.AuthorizationURL} {
				if msg := checkTokenURL(strings.ReplaceAll(u, tenantPlaceholder, "common")); msg != "" || !strings.HasPrefix(u, "https://") {
					t.Errorf("preset %q URL %q: %s", p.Name, u, msg)
				}
			}
			if _, ok := clientAuthStyle(string(p.AuthStyle)); !ok {
				t.Errorf("preset %q has no valid AuthStyle: %q", p.Name, p.AuthStyle)
			}
		}
		if p.NeedsTenant != strings.Contains(p.TokenURL, tenantPlaceholder) {
			t.Errorf("preset %q: NeedsTenant = %v but TokenURL is %q", p.Name, p.NeedsTenant, p.TokenURL)
		}
		if p.ReuseGrace > 0 && !p.Rotating {
			t.Errorf("preset %q has a reuse grace without rotation", p.Name)
		}
		if p.DefaultLifetime < minDefaultLifetime || p.DefaultLifetime > maxDefaultLifetime ||
			p.RefreshBefore < 0 || p.RefreshBefore > maxRefreshBefore ||
			p.ReuseGrace < 0 || p.ReuseGrace > maxReuseGrace ||
			p.IdleExpiry < 0 || p.IdleExpiry > maxIdleExpiry {
			t.Errorf("preset %q has a duration outside what a connection may set: %+v", p.Name, p)
		}
	}
}

func TestLookupPreset(t *testing.T) {
	for _, p := range Presets() {
		got, ok := LookupPreset(p.Name)
		if !ok || got.Name != p.Name || got.TokenURL != p.TokenURL {
			t.Errorf("LookupPreset(%q) = %+v, %v", p.Name, got, ok)
		}
	}
	for _, name := range []string{"", "Xero", "xero ", "entra", "zzz"} {
		if got, ok := LookupPreset(name); ok {
			t.Errorf("LookupPreset(%q) = %+v, want not found", name, got)
		}
	}
}

func TestPresetsAreCopies(t *testing.T) {
	all := Presets()
	all[0].Name = "changed"
	all[0].TokenURL = "https://changed.example/"
	if again := Presets(); again[0].Name == "changed" || again[0].TokenURL == "https://changed.example/" {
		t.Errorf("changing the result of Presets changed the presets")
	}
	p := Preset{Name: "p", Scopes: []string{"a"}}
	c := p.clone()
	c.Scopes[0] = "b"
	if p.Scopes[0] != "a" {
		t.Errorf("clone shares Scopes with the original")
	}
}
