package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
)

// TestTokenURLCredentialQueryKeysAreRefused: a token URL whose query has a
// key that names a credential is refused, naming the key, never the value.
func TestTokenURLCredentialQueryKeysAreRefused(t *testing.T) {
	const value = "V4LUE-n0t-shown"
	refused := []string{"client_secret", "Client-Secret", "clientSecret", "password", "pwd", "api_key", "apikey", "token",
		"access_token", "refresh_token", "code", "client_assertion", "sig", "x-api-key", "auth", "sessionid", "cl%69ent_secret"}
	for _, key := range refused {
		t.Run(key, func(t *testing.T) {
			_, err := config.ParseConnections([]byte(`{"connections": [{"name": "c", "tokenUrl": "https://id.example.com/token?a=1&` + key + `=` + value + `", "clientAuth": "body"}]}`))
			var ve *config.ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Field != "tokenUrl" || !strings.Contains(err.Error(), "looks like a credential") {
				t.Fatalf("err = %v; want one tokenUrl problem saying the key looks like a credential", err)
			}
			if strings.Contains(err.Error(), value) {
				t.Fatal("the error repeats the value")
			}
		})
	}
	for _, ok := range []string{"", "?api-version=2", "?tenant=common&resource=x"} {
		if _, err := config.ParseConnections([]byte(`{"connections": [{"name": "c", "tokenUrl": "https://id.example.com/token` + ok + `", "clientAuth": "body"}]}`)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

// TestReservedSecretNamesAreRefused: no connection may name one of the
// handler's own secrets, for reading or writing; the message names the
// secret and whose it is.
func TestReservedSecretNamesAreRefused(t *testing.T) {
	tests := []struct {
		name, secrets, field, want string
	}{
		{"access token over another connection's consent state", `{"accessToken": "xero-consent-state"}`, "secrets.accessToken", `consent of connection "xero"`},
		{"refresh token over its own consent state", `{"refreshToken": "c-consent-state"}`, "secrets.refreshToken", `consent of connection "c"`},
		{"client secret from a consent state", `{"clientSecret": "Other-Consent-State"}`, "secrets.clientSecret", `consent of connection "Other"`},
		{"the write-ahead key", `{"accessToken": "tokenrefresher-write-ahead-key"}`, "secrets.accessToken", "write-ahead records"},
		{"the write-ahead key as client secret", `{"clientSecret": "TokenRefresher-Write-Ahead-Key"}`, "secrets.clientSecret", "write-ahead records"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.ParseConnections([]byte(`{"connections": [
				{"name": "xero", "provider": "xero"},
				{"name": "c", "tokenUrl": "https://id.example.com/token", "clientAuth": "body", "secrets": ` + tt.secrets + `}]}`))
			var ve *config.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a *ValidationError", err)
			}
			found := false
			for _, p := range ve.Problems {
				found = found || (p.Index == 1 && p.Field == tt.field && strings.Contains(p.Message, tt.want) && strings.Contains(p.Message, "keeps for itself"))
			}
			if !found {
				t.Fatalf("no %s problem saying %q:\n%v", tt.field, tt.want, err)
			}
		})
	}
}

// TestAPIKeySecretIsRefusedToConnections: in standalone mode no connection
// may name the secret API_KEY_SECRET names.
func TestAPIKeySecretIsRefusedToConnections(t *testing.T) {
	env := map[string]string{
		"API_KEY_SECRET": "handler-api-key",
		"CONNECTIONS":    `{"connections": [{"name": "c", "tokenUrl": "https://id.example.com/token", "clientAuth": "body", "secrets": {"accessToken": "Handler-API-Key"}}]}`,
	}
	s, err := config.LoadSettings(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.ReadConnections()
	if err == nil || !strings.Contains(err.Error(), `connections[0] ("c")`) || !strings.Contains(err.Error(), "secrets.accessToken") || !strings.Contains(err.Error(), "API_KEY_SECRET") {
		t.Fatalf("err = %v; want the connection's accessToken refused as the API key's secret", err)
	}
	delete(env, "API_KEY_SECRET")
	if s, err = config.LoadSettings(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadConnections(); err != nil {
		t.Fatalf("without API_KEY_SECRET: %v", err)
	}
}
