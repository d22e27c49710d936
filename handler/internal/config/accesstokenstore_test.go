package config

import (
	"errors"
	"strings"
	"testing"
)

// TestAccessTokenStore: ACCESS_TOKEN_STORE is keyvault unless set; blob
// needs the lock storage account, and is refused with a start-up error
// naming it without one (locally there is no lock blob to keep the token
// in); anything else is refused.
func TestAccessTokenStore(t *testing.T) {
	blobLock := map[string]string{"AzureWebJobsStorage__accountName": "tokenlocks"}
	tests := []struct {
		name    string
		env     map[string]string
		want    string
		problem string // a word of the problem about ACCESS_TOKEN_STORE; "" for none
	}{
		{name: "default", env: minimalEnv, want: AccessTokensInStore},
		{name: "keyvault", env: with(minimalEnv, map[string]string{"ACCESS_TOKEN_STORE": "keyvault"}), want: AccessTokensInStore},
		{name: "blob with the blob lock", env: with(with(minimalEnv, blobLock), map[string]string{"ACCESS_TOKEN_STORE": "blob"}), want: AccessTokensInBlob},
		{name: "blob locally", env: with(minimalEnv, map[string]string{"ACCESS_TOKEN_STORE": "blob"}), problem: "lock storage account"},
		{name: "unknown", env: with(with(minimalEnv, blobLock), map[string]string{"ACCESS_TOKEN_STORE": "cosmos"}), problem: `"keyvault"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := LoadSettings(env(tt.env))
			if tt.problem == "" {
				if err != nil || s.AccessTokenStore != tt.want {
					t.Fatalf("AccessTokenStore = %q, %v; want %q", s.AccessTokenStore, err, tt.want)
				}
				return
			}
			var se *SettingsError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), "ACCESS_TOKEN_STORE") || !strings.Contains(err.Error(), tt.problem) {
				t.Fatalf("LoadSettings = %v; want a problem with ACCESS_TOKEN_STORE saying %s", err, tt.problem)
			}
		})
	}
}
