package diagnose

import (
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// TestInvalidClientNamesTheCredentialThatMatters: invalid_client's
// remediation, diagnose's and the broker's generic one alike, names what the
// connection authenticates with: the client secret of a secret-
// authenticated client; for one that sends an assertion the signing key and
// its registration (handler key), or the federated credential, and never a
// client secret, which such a connection does not have.
func TestInvalidClientNamesTheCredentialThatMatters(t *testing.T) {
	tests := []struct {
		name     string
		conn     broker.Connection
		want     []string
		wantNone []string
	}{
		{name: "client secret", conn: broker.Connection{Name: "xero", AuthStyle: broker.AuthBasic, TokenURL: "https://id.example.com/token"},
			want: []string{`secret "xero-client-secret" the current client secret`}, wantNone: []string{"signing key", "federated"}},
		{name: "private_key_jwt", conn: broker.Connection{Name: "pkj", AuthStyle: broker.AuthPrivateKeyJWT, TokenURL: "https://id.example.com/token",
			Assertion: broker.Assertion{Key: "pkj-key"}},
			want: []string{`signing key "pkj-key"`, "`handler key pkj`", "registered for the app at"}, wantNone: []string{"client-secret", "current client secret"}},
		{name: "jwt_bearer", conn: broker.Connection{Name: "google", Grant: broker.GrantJWTBearer, AuthStyle: broker.AuthNone,
			TokenURL: "https://oauth2.googleapis.com/token", Assertion: broker.Assertion{Key: "google-signing-key"}},
			want: []string{`signing key "google-signing-key"`, "`handler key google`"}, wantNone: []string{"client-secret", "current client secret"}},
		{name: "managedIdentity", conn: broker.Connection{Name: "mi", AuthStyle: broker.AuthManagedIdentity, TokenURL: "https://id.example.com/token"},
			want: []string{"federated credential", "managed identity", "api://AzureADTokenExchange"}, wantNone: []string{"client-secret", "current client secret", "signing key", "{"}},
	}
	generic, _ := broker.Failure(broker.CategoryRotateClientSecret)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Diagnose(Input{Connection: &tt.conn, HTTPStatus: 401, Body: Body{Code: "invalid_client"}})
			for _, text := range []string{d.Remediation, generic.Remediation(&tt.conn)} {
				for _, w := range tt.want {
					if !strings.Contains(text, w) {
						t.Errorf("remediation does not say %q:\n%s", w, text)
					}
				}
				for _, w := range append(tt.wantNone, "{") {
					if strings.Contains(text, w) {
						t.Errorf("remediation says %q:\n%s", w, text)
					}
				}
			}
		})
	}
}
