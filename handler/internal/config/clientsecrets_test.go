package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestClientSecretsField(t *testing.T) {
	conn := func(secrets string) string {
		return `{"connections":[{"name":"crm","tokenUrl":"https://idp.example.com/token","clientAuth":"basic","secrets":` + secrets + `}]}`
	}
	conns, err := ParseConnections([]byte(conn(`{"clientSecrets":["crm-secret-2026","crm-secret-2025"]}`)))
	if err != nil {
		t.Fatal(err)
	}
	c := conns[0]
	if !slices.Equal(c.ClientSecrets, []string{"crm-secret-2026", "crm-secret-2025"}) || c.Secrets.ClientSecret != "crm-secret-2026" {
		t.Fatalf("ClientSecrets %q, ClientSecret %q", c.ClientSecrets, c.Secrets.ClientSecret)
	}
	if got := c.ClientSecretNames(); !slices.Equal(got, c.ClientSecrets) {
		t.Fatalf("ClientSecretNames %q", got)
	}

	for _, tt := range []struct{ secrets, want string }{
		{`{"clientSecret":"a-b","clientSecrets":["c-d","e-f"]}`, "not both"},
		{`{"clientSecrets":["only-one"]}`, "2 to 3"},
		{`{"clientSecrets":["a","b","c","d"]}`, "2 to 3"},
		{`{"clientSecrets":"a"}`, "array"},
		{`{"clientSecrets":["a-b","a-b"]}`, "twice"},
		{`{"clientSecrets":["a-b","p@ssw0rd value"]}`, "not a secret name"},
	} {
		_, err := ParseConnections([]byte(conn(tt.secrets)))
		var ve *ValidationError
		if !errors.As(err, &ve) || !strings.Contains(err.Error(), "secrets.clientSecrets") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v; want a problem with secrets.clientSecrets naming %q", tt.secrets, err, tt.want)
		}
		if strings.Contains(err.Error(), "p@ssw0rd") {
			t.Errorf("%s: the value was repeated: %v", tt.secrets, err)
		}
	}
}
