package cli

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault/kvtest"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// runWith runs the CLI with stdin and the Key Vault client factory given.
func runWith(env map[string]string, stdin string, kv func(config.Settings, func(string) string) (*azsecrets.Client, error), args ...string) result {
	var stdout, stderr strings.Builder
	var r result
	r.code = Run(context.Background(), args, Env{Getenv: func(k string) string { return env[k] }, Stdin: strings.NewReader(stdin),
		Stdout: &stdout, Stderr: &stderr, KeyVault: kv}, func(context.Context) int { r.served = true; return 0 }, "test")
	r.stdout, r.stderr = stdout.String(), stderr.String()
	return r
}

// TestSecretCommandsUseKeyVault: with KEY_VAULT_URL set, secret set,
// get-info and list work on the vault (the kvtest double, through the
// real azsecrets client), not on a local file, and never print a value.
func TestSecretCommandsUseKeyVault(t *testing.T) {
	vault := kvtest.New(t, nil)
	state := filepath.Join(t.TempDir(), "state")
	env := map[string]string{"KEY_VAULT_URL": "https://kv1.vault.azure.net", "LOCAL_STATE_DIR": state}
	kv := func(s config.Settings, _ func(string) string) (*azsecrets.Client, error) {
		if s.KeyVaultURL != env["KEY_VAULT_URL"] {
			t.Errorf("client asked for %q", s.KeyVaultURL)
		}
		return vault.Client, nil
	}
	const value = "cs_value_that_must_never_be_printed_0123456789"
	vault.Put("other-secret", "another-value-never-printed-0123456789", time.Time{})

	tests := []struct {
		name   string
		stdin  string
		args   []string
		code   int
		stdout []string
	}{
		{"set with expiry", value + "\n", []string{"secret", "set", "xero-client-secret", "-expires", "2027-06-30T00:00:00Z"}, 0,
			[]string{`stored secret "xero-client-secret" in https://kv1.vault.azure.net`}},
		{"get-info", "", []string{"secret", "get-info", "xero-client-secret"}, 0,
			[]string{"xero-client-secret", "2027-06-30", strconv.Itoa(len(value)) + " characters"}},
		{"get-info of a missing secret", "", []string{"secret", "get-info", "nope"}, 1, nil},
		{"list", "", []string{"secret", "list"}, 0, []string{"xero-client-secret", "other-secret", "2027-06-30"}},
		{"unknown subcommand", "", []string{"secret", "show", "x"}, 2, nil},
		{"-expires on list", "", []string{"secret", "list", "-expires", "2027-06-30T00:00:00Z"}, 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runWith(env, tt.stdin, kv, tt.args...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, tt.code, r.stderr)
			}
			for _, w := range tt.stdout {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("stdout %q does not contain %q", r.stdout, w)
				}
			}
			for _, secret := range []string{value, "another-value-never-printed"} {
				if strings.Contains(r.stdout+r.stderr, secret) {
					t.Errorf("a secret's value was printed: %q %q", r.stdout, r.stderr)
				}
			}
		})
	}
	if got, ok := vault.Value("xero-client-secret"); !ok || got != value {
		t.Errorf("the vault holds %t, want the value set", ok)
	}
	if v, _ := vault.Latest("xero-client-secret"); v.Expires.IsZero() {
		t.Error("the expiry did not reach the vault")
	}
	// Nothing went to the local store.
	if st, err := local.NewStore(state); err == nil {
		if _, err := st.Get(context.Background(), "xero-client-secret"); err == nil {
			t.Error("secret set wrote the local store while KEY_VAULT_URL was set")
		}
	}
}

// TestImportRefreshToken: the command redeems the token from stdin once
// and stores what the provider issued; a refused token leaves the store
// empty and exits 1; the token is never printed.
func TestImportRefreshTokenCommand(t *testing.T) {
	p := testprovider.New(testprovider.Config{ClientID: "client", ClientSecret: "cs_0123456789abcdef", AuthStyle: broker.AuthBody, Rotate: true})
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	for _, valid := range []bool{true, false} {
		state := filepath.Join(t.TempDir(), "state")
		store, err := local.NewStore(state)
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Set(context.Background(), "demo-client-secret", broker.StoredSecret{Value: "cs_0123456789abcdef"}); err != nil {
			t.Fatal(err)
		}
		env := map[string]string{"LOCAL_STATE_DIR": state, "CONNECTIONS": `{"connections": [
  {"name": "demo", "tokenUrl": "` + srv.URL + `/token", "clientAuth": "body", "clientId": "client", "rotating": true}]}`}
		rt := "refresh-token-not-issued-by-the-provider-0123"
		if valid {
			rt = p.IssueRefreshToken()
		}
		before := p.Stats().TokenRequests
		r := runWith(env, rt+"\n", nil, "import-refresh-token", "demo")
		if n := p.Stats().TokenRequests - before; n != 1 {
			t.Errorf("valid %t: %d token requests, want 1", valid, n)
		}
		if strings.Contains(r.stdout+r.stderr, rt) {
			t.Errorf("valid %t: the refresh token was printed", valid)
		}
		stored, gerr := store.Get(context.Background(), "demo-refresh-token")
		if valid {
			if r.code != 0 || gerr != nil || stored.Value.IsZero() || !strings.Contains(r.stdout, "healthy") {
				t.Errorf("valid: exit %d, stored %t (%v); stdout %q stderr %q", r.code, gerr == nil, gerr, r.stdout, r.stderr)
			}
			continue
		}
		if r.code != 1 || gerr == nil {
			t.Errorf("refused: exit %d, a refresh token stored %t; stderr %q", r.code, gerr == nil, r.stderr)
		}
	}
}
