package cli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// TestConnectExchangeAuthenticatesAsTheBroker: the Flow handler connect
// redeems the code with carries what the connection's clientAuth needs, as
// the broker's grant does: a Key Vault signer for private_key_jwt, the
// managed identity's federated token for managedIdentity, the client
// secret (and nothing else) for a secret-authenticated client. The
// assertion makers are only constructed here; nothing reaches Azure.
func TestConnectExchangeAuthenticatesAsTheBroker(t *testing.T) {
	env := workstation(t)
	conns, err := config.ParseConnections([]byte(`{"connections": [
  {"name": "demo", "tokenUrl": "https://id.example.com/token", "clientAuth": "body", "clientId": "client"},
  {"name": "pkj", "tokenUrl": "https://id.example.com/token", "clientAuth": "private_key_jwt", "clientId": "client", "signingKey": "pkj-key"},
  {"name": "mi", "tokenUrl": "https://id.example.com/token", "clientAuth": "managedIdentity", "clientId": "client"}
]}`))
	if err != nil {
		t.Fatal(err)
	}
	store, err := local.NewStore(env["LOCAL_STATE_DIR"])
	if err != nil {
		t.Fatal(err)
	}
	settings := config.Settings{KeyVaultURL: "https://kv-test.vault.azure.net/", LocalStateDir: env["LOCAL_STATE_DIR"]}
	tests := []struct {
		conn                      int
		wantSigner, wantFederated bool
		wantSecret                bool
	}{
		{conn: 0, wantSecret: true},
		{conn: 1, wantSigner: true},
		{conn: 2, wantFederated: true},
	}
	for _, tt := range tests {
		c := conns[tt.conn]
		t.Run(c.Name, func(t *testing.T) {
			flow, err := exchangeFlow(context.Background(), settings, c, store, func(string) string { return "" })
			if err != nil {
				t.Fatal(err)
			}
			if got := flow.Signer != nil; got != tt.wantSigner {
				t.Errorf("Signer set %v, want %v", got, tt.wantSigner)
			}
			if got := flow.Federated != nil; got != tt.wantFederated {
				t.Errorf("Federated set %v, want %v", got, tt.wantFederated)
			}
			if got := flow.ClientSecret != ""; got != tt.wantSecret {
				t.Errorf("client secret read %v, want %v", got, tt.wantSecret)
			}
			if flow.ClientID != "client" {
				t.Errorf("ClientID %q, want client", flow.ClientID)
			}
		})
	}
}

// TestConnectRefusesAnAssertionItCannotMake: a private_key_jwt connection
// without KEY_VAULT_URL cannot sign its code exchange, so connect says so
// before anyone is sent to consent, instead of failing after the consent.
func TestConnectRefusesAnAssertionItCannotMake(t *testing.T) {
	env := map[string]string{
		"LOCAL_STATE_DIR": filepath.Join(t.TempDir(), "state"),
		"CONNECTIONS": `{"connections": [
  {"name": "pkj", "tokenUrl": "https://id.example.com/token", "clientAuth": "private_key_jwt", "clientId": "client", "signingKey": "pkj-key"}
]}`,
	}
	opened := false
	r := runCLI(env, func(string) error { opened = true; return nil }, "connect", "pkj", "-timeout", "50ms", "-authorization-url", "https://id.example.com/authorize")
	if r.code != 1 || !strings.Contains(r.stderr, "KEY_VAULT_URL is not set") {
		t.Fatalf("exit %d, stderr %q; want 1 and that KEY_VAULT_URL is not set", r.code, r.stderr)
	}
	if opened || strings.Contains(r.stdout, "authorize") {
		t.Errorf("connect sent the person to consent anyway (opened %v):\n%s", opened, r.stdout)
	}
}
