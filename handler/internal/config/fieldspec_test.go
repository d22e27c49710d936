package config

import (
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"slices"
	"testing"
)

// TestEveryDocumentedFieldIsChecked: each field of connectionFields (the
// fields a connection may have, which unknown-field messages list) has its
// spec in nameField or fieldSpecs, so a field added to the list cannot be
// accepted and then silently ignored. provider, tenant and $comment are
// read outside the table (provider picks the preset every spec starts
// from; tenant is checked with tokenUrl, whose template decides its rule).
func TestEveryDocumentedFieldIsChecked(t *testing.T) {
	outside := []string{"provider", "tenant", commentField}
	specified := []string{nameField.field}
	for _, f := range fieldSpecs {
		specified = append(specified, f.field)
	}
	for _, f := range connectionFields {
		if !slices.Contains(specified, f) && !slices.Contains(outside, f) {
			t.Errorf("connection field %q has no fieldSpec", f)
		}
	}
	for _, f := range specified {
		if !slices.Contains(connectionFields, f) {
			t.Errorf("fieldSpec %q is not in connectionFields, so a file that uses it is told it is unknown", f)
		}
	}
	for i, f := range fieldSpecs {
		if f.resolve == nil && (f.read == nil || f.set == nil) {
			t.Errorf("fieldSpecs[%d] (%q) has neither resolve nor read and set", i, f.field)
		}
		for j, r := range f.rules {
			if r.refuses == nil || r.message == nil {
				t.Errorf("fieldSpecs[%d] (%q) rule %d lacks its condition or its message", i, f.field, j)
			}
		}
	}
}

// TestEverySecretFieldHasASlot: each secrets field has its place in
// broker.SecretNames (secretSlot panics otherwise), a distinct one, and
// secretRules name only secrets fields.
func TestEverySecretFieldHasASlot(t *testing.T) {
	seen := map[*string]string{}
	var names broker.SecretNames
	for _, k := range secretFields {
		p := secretSlot(&names, k)
		if other, dup := seen[p]; dup {
			t.Errorf("secrets fields %q and %q share one slot", other, k)
		}
		seen[p] = k
	}
	for k := range secretRules {
		if !slices.Contains(secretFields, k) {
			t.Errorf("secretRules has rules for %q, which is not a secrets field", k)
		}
	}
}
