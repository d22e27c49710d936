package config

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

// TestCertificateThumbprint: certificateThumbprint is accepted as the
// base64url SHA-256 of a certificate (Entra's x5t#S256) on a connection
// that signs, and refused elsewhere and in any other form, notably the hex
// SHA-1 that az keyvault certificate show prints as x509ThumbprintHex.
func TestCertificateThumbprint(t *testing.T) {
	digest := sha256.Sum256([]byte("a DER certificate"))
	thumb := base64.RawURLEncoding.EncodeToString(digest[:])
	const pkj = `"name": "c", "grant": "client_credentials", "tokenUrl": "https://login.example.com/token", "clientAuth": "private_key_jwt", "clientId": "app"`
	tests := []struct {
		name, conn string
		want       string // the problem's words; "" when accepted
	}{
		{"private_key_jwt", `{` + pkj + `, "certificateThumbprint": "` + thumb + `"}`, ""},
		{"jwt_bearer", `{"name": "c", "grant": "jwt_bearer", "tokenUrl": "https://login.example.com/token", "clientAuth": "none", "assertionSubject": "u", "certificateThumbprint": "` + thumb + `"}`, ""},
		{"padded", `{` + pkj + `, "certificateThumbprint": "` + thumb + `="}`, "43 characters without padding"},
		{"standard base64", `{` + pkj + `, "certificateThumbprint": "` + base64.StdEncoding.EncodeToString(digest[:]) + `"}`, "base64url SHA-256"},
		{"hex SHA-1", `{` + pkj + `, "certificateThumbprint": "` + strings.ToUpper(hex.EncodeToString(digest[:20])) + `"}`, "x509ThumbprintHex"},
		{"client secret", `{"name": "c", "tokenUrl": "https://login.example.com/token", "clientAuth": "basic", "certificateThumbprint": "` + thumb + `"}`, "is never used"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == "" {
				if got := mustParse(t, file(tt.conn))[0].Assertion.CertificateThumbprint; got != thumb {
					t.Errorf("CertificateThumbprint = %q, want %q", got, thumb)
				}
				return
			}
			problems := problemsOf(t, file(tt.conn))
			if len(problems) != 1 || problems[0].Field != "certificateThumbprint" || !strings.Contains(problems[0].Message, tt.want) {
				t.Errorf("problems %+v; want one at certificateThumbprint saying %q", problems, tt.want)
			}
		})
	}
}
