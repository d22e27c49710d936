package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
)

// TestTokenURLCredentialsAreNeverRepeated: a password in a tokenUrl is
// kept out of every message, whatever else is wrong with the URL.
func TestTokenURLCredentialsAreNeverRepeated(t *testing.T) {
	const password = "S3CRET-pw"
	tests := []struct {
		name string
		conn string
	}{
		{"https", `{"name": "c", "tokenUrl": "https://id:S3CRET-pw@id.example.com/token", "clientAuth": "body"}`},
		{"another scheme", `{"name": "c", "tokenUrl": "ftp://id:S3CRET-pw@id.example.com/token", "clientAuth": "body"}`},
		{"plain http", `{"name": "c", "tokenUrl": "http://id:S3CRET-pw@id.example.com/token", "clientAuth": "body"}`},
		{"not absolute", `{"name": "c", "tokenUrl": "//id:S3CRET-pw@id.example.com/token", "clientAuth": "body"}`},
		{"bad escape in the password", `{"name": "c", "tokenUrl": "https://id:S3CRET-pw%zz@id.example.com/token", "clientAuth": "body"}`},
		{"bad port", `{"name": "c", "tokenUrl": "https://id:S3CRET-pw@id.example.com:port/token", "clientAuth": "body"}`},
		{"tenant placeholder without a tenant", `{"name": "c", "tokenUrl": "https://id:S3CRET-pw@login.example.com/{tenant}/token", "clientAuth": "body"}`},
		{"tenant without a placeholder", `{"name": "c", "provider": "xero", "tokenUrl": "https://id:S3CRET-pw@id.example.com/token", "tenant": "common"}`},
		{"secret in the query of an http URL", `{"name": "c", "tokenUrl": "http://id.example.com/token?client_secret=S3CRET-pw", "clientAuth": "body"}`},
		{"secret in the query with a fragment", `{"name": "c", "tokenUrl": "https://id.example.com/token?client_secret=S3CRET-pw#x", "clientAuth": "body"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.ParseConnections([]byte(`{"connections": [` + tt.conn + `]}`))
			var ve *config.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a *ValidationError", err)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("the error repeats the URL's password:\n%s", strings.ReplaceAll(err.Error(), password, "<LEAKED>"))
			}
			found := false
			for _, p := range ve.Problems {
				found = found || p.Field == "tokenUrl"
			}
			if !found {
				t.Errorf("no problem on tokenUrl:\n%s", err)
			}
		})
	}
}

// TestLoopbackAgreesWithTheGrant: an http token URL the file accepts is
// one the grant sends requests to, so a connection never passes start-up
// only to fail at its first refresh.
func TestLoopbackAgreesWithTheGrant(t *testing.T) {
	for _, u := range []string{
		"http://127.0.0.1:8080/token",
		"http://127.8.9.10/token",
		"http://localhost/token",
		"http://LOCALHOST:1/token",
		"http://[::1]:8080/token",
		"http://[0:0:0:0:0:0:0:1]/token",
		"http://[::ffff:127.0.0.1]/token",
		"http://[::1%25lo]:8080/token",
		"http://[fe80::1%25eth0]/token",
		"http://0.0.0.0/token",
		"http://[::]/token",
		"http://10.0.0.1/token",
		"http://localhost.example.com/token",
		"http://127.1/token",
	} {
		t.Run(u, func(t *testing.T) {
			_, err := config.ParseConnections([]byte(`{"connections": [{"name": "c", "tokenUrl": "` + u + `", "clientAuth": "basic"}]}`))
			grantErr := oauth.CheckTokenURL(u)
			if (err == nil) != (grantErr == nil) {
				t.Errorf("config says %v, oauth.CheckTokenURL says %v", err, grantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "must be https") {
				t.Errorf("the error does not say why: %v", err)
			}
		})
	}
}
