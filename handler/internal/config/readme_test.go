package config

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// The README's table of presets is generated from the presets, so the two
// cannot drift: TestREADMEPresetTable fails when they differ, and rewrites
// the table when run with -update-readme.
var updateREADME = flag.Bool("update-readme", false, "rewrite the preset table in README.md from the presets")

const (
	readmePath          = "../../../README.md"
	presetTableBegin    = "<!-- BEGIN generated from handler/internal/config/presets.go; to change, edit the presets and run: go test ./handler/internal/config -run TestREADMEPresetTable -update-readme -->"
	presetTableEnd      = "<!-- END generated preset table -->"
	presetTableNoExpiry = "—"
)

func TestREADMEPresetTable(t *testing.T) {
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	begin := bytes.Index(readme, []byte(presetTableBegin))
	end := bytes.Index(readme, []byte(presetTableEnd))
	if begin < 0 || end < begin {
		t.Fatalf("%s has no %q ... %q block for the preset table", readmePath, presetTableBegin, presetTableEnd)
	}
	begin += len(presetTableBegin)
	want := "\n" + presetTable(Presets())
	if string(readme[begin:end]) == want {
		return
	}
	if !*updateREADME {
		t.Fatalf("the preset table in %s is not what the presets say; run\n\tgo test ./handler/internal/config -run TestREADMEPresetTable -update-readme\nwant:%s", readmePath, want)
	}
	updated := slices.Concat(readme[:begin], []byte(want), readme[end:])
	if err := os.WriteFile(readmePath, updated, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("rewrote the preset table in %s", readmePath)
}

// presetTable renders presets as the README shows them: one table row each,
// generic last, then what "tenant" means for the presets that need one.
func presetTable(presets []Preset) string {
	var b strings.Builder
	b.WriteString("| preset | provider | grant | token endpoint | client auth | refresh tokens | lifetime without `expires_in` | idle expiry | several grants | notes |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	var generic *Preset
	for i, p := range presets {
		if p.Name == genericPreset {
			generic = &presets[i]
			continue
		}
		endpoint, auth, rotation := "`"+p.TokenURL+"`", string(p.AuthStyle), "kept"
		switch {
		case p.Rotating && p.ReuseGrace > 0:
			rotation = "rotating, old one valid " + formatDuration(p.ReuseGrace)
		case p.Rotating:
			rotation = "rotating"
		case p.Grant == broker.GrantJWTBearer:
			rotation = "none (a signed assertion)"
		}
		idle := presetTableNoExpiry
		if p.IdleExpiry > 0 {
			idle = formatDuration(p.IdleExpiry)
		}
		notes := p.Summary
		if p.RefreshBefore != defaultRefreshBefore {
			notes += fmt.Sprintf("; refreshBefore %s", formatDuration(p.RefreshBefore))
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s | %s | %s | %s | %s ([source](%s)) |\n",
			p.Name, p.Title, p.Grant, endpoint, auth, rotation, formatDuration(p.DefaultLifetime), idle, severalGrants(p), notes, p.Source)
	}
	if generic != nil {
		fmt.Fprintf(&b, "| `%s` | %s | %s | `tokenUrl` | `clientAuth` | `rotating`, `reuseGrace` | %s | `idleExpiry` | unknown | %s |\n",
			generic.Name, generic.Title, generic.Grant, formatDuration(generic.DefaultLifetime), generic.Summary)
	}
	b.WriteString("\nWhere the token endpoint has `{tenant}`, the connection's `tenant` fills it in:\n\n")
	for _, p := range presets {
		if p.NeedsTenant {
			fmt.Fprintf(&b, "- `%s`: %s.\n", p.Name, p.TenantHint)
		}
	}
	return b.String()
}

// severalGrants is the "several grants" cell: whether a standby grant
// (a second consent of the same user and client) can live beside the
// first, with its source.
func severalGrants(p Preset) string {
	switch p.SeveralGrants {
	case GrantsSeveral:
		return fmt.Sprintf("yes ([source](%s))", p.SeveralGrantsSource)
	case GrantsOne:
		return fmt.Sprintf("no ([source](%s))", p.SeveralGrantsSource)
	}
	return "unknown"
}

func TestPresetTable(t *testing.T) {
	table := presetTable(Presets())
	lines := strings.Split(table, "\n")
	rows := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "| `") {
			rows++
			if got := strings.Count(l, " | ") + 1; got != 10 {
				t.Errorf("row has %d cells, want 10: %s", got, l)
			}
		}
	}
	if rows != len(Presets()) {
		t.Errorf("%d rows for %d presets", rows, len(Presets()))
	}
	for _, want := range []string{
		"| `xero` | Xero | refresh_token | `https://identity.xero.com/connect/token` | basic | rotating, old one valid 30m | 30m | 60d | unknown |",
		"| 1h | 180d | yes ([source](https://developers.google.com/identity/protocols/oauth2#expiration)) |",
		"| `exact-online` | Exact Online |",
		"; refreshBefore 30s (",
		"| `generic` |",
		"- `netsuite`: the account id",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if strings.Index(table, "| `generic` |") < strings.Index(table, "| `zoho` |") {
		t.Errorf("generic is not the last row")
	}
}
