package broker_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// TestValidConnectionName walks every boundary of DESIGN.md's rule: 1-63
// characters of a-z, 0-9 and '-', starting with a letter.
func TestValidConnectionName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"", false},
		{"a", true},
		{"z", true},
		{"xero", true},
		{"xero-prod-2", true},
		{"a-", true}, // the rule allows a trailing '-'
		{"a--b", true},
		{"a0", true},
		{"a9", true},
		{strings.Repeat("a", 62), true},
		{strings.Repeat("a", 63), true},
		{"a" + strings.Repeat("-", 62), true},
		{"a" + strings.Repeat("9", 62), true},
		{strings.Repeat("a", 64), false},
		{strings.Repeat("a", 1000), false},
		{"0abc", false}, // first character: a letter only
		{"9", false},
		{"-abc", false},
		{"Abc", false}, // lower case only, anywhere
		{"aBc", false},
		{"Z", false},
		{"`a", false}, // the bytes either side of each range
		{"{a", false},
		{"a`", false},
		{"a{", false},
		{"a/", false},
		{"a:", false},
		{"a,", false},
		{"a.", false},
		{"a_b", false},
		{"a b", false},
		{"a\x00", false},
		{"a\n", false},
		{"caf\u00e9", false}, // non-ASCII
		{"\u212Aey", false},  // the Kelvin sign, which some case folds turn into "k"
		{"a\xff", false},     // invalid UTF-8
		{"a/../b", false},
		{"a%2Fb", false},
	}
	for _, tt := range tests {
		if got := broker.ValidConnectionName(tt.name); got != tt.want {
			t.Errorf("ValidConnectionName(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// FuzzValidConnectionName holds the byte loop to the rule as a regular
// expression, ConnectionNamePattern.
func FuzzValidConnectionName(f *testing.F) {
	rule := regexp.MustCompile(broker.ConnectionNamePattern)
	for _, s := range []string{"", "a", "xero-1", "0a", strings.Repeat("a", 63), strings.Repeat("a", 64), "a\n", "a-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := broker.ValidConnectionName(name), rule.MatchString(name); got != want {
			t.Errorf("ValidConnectionName(%q) = %v; the rule says %v", name, got, want)
		}
	})
}
