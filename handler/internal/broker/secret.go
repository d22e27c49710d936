package broker

import (
	"fmt"
	"log/slog"
)

// Secret holds a token, refresh token or client secret. It redacts itself
// wherever a value is usually printed (fmt verbs, slog, encoding/json), so a
// Secret that slips into a log line or an error body shows as "[redacted]".
// Reveal is the one way to read the value, and every call of it is a place
// where the value is meant to leave the process.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s == "" }

// String implements fmt.Stringer.
func (s Secret) String() string { return redacted }

// GoString implements fmt.GoStringer, so %#v redacts too.
func (s Secret) GoString() string { return `broker.Secret("` + redacted + `")` }

// Format implements fmt.Formatter: every verb, %x and %q included, prints
// the redaction marker.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, s.GoString())
		return
	}
	fmt.Fprint(f, redacted)
}

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON implements json.Marshaler. Code that must send the value
// builds its response from Reveal.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler (encoding/xml and other
// encoders use it). encoding/json does not for a map key: a key of string
// kind goes out as it is, so a Secret is never a key of a map that is
// encoded (TestSecretRedactsItselfEverywhere shows both).
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// MaxSecretNameLen is the longest secret name: Key Vault's limit.
const MaxSecretNameLen = 127

// ValidSecretName reports whether name follows Key Vault's rules for a
// secret name: 1-127 characters of 0-9, a-z, A-Z and '-', starting with a
// letter. Every store keeps to them, so a name that works locally works in
// Key Vault, and (for the local store) no name reaches outside its folder.
func ValidSecretName(name string) bool {
	if len(name) == 0 || len(name) > MaxSecretNameLen || !isLetter(name[0]) {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !isLetter(c) && !('0' <= c && c <= '9') && c != '-' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
