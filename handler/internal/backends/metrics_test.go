package backends

import "testing"

func TestAADAuthentication(t *testing.T) {
	for _, tt := range []struct {
		in       string
		clientID string
		aad      bool
	}{
		{"Authorization=AAD", "", true},
		{"ClientId=1234;Authorization=AAD", "1234", true},
		{" clientid = 1234 ; authorization = aad ", "1234", true},
		{"", "", false},
		{"ClientId=1234", "1234", false},
	} {
		id, aad := aadAuthentication(tt.in)
		if id != tt.clientID || aad != tt.aad {
			t.Errorf("aadAuthentication(%q) = %q, %v; want %q, %v", tt.in, id, aad, tt.clientID, tt.aad)
		}
	}
}

// TestMetricsWithoutApplicationInsights: off Azure, no exporter and no
// credential is made; a bad connection string fails start-up.
func TestMetricsWithoutApplicationInsights(t *testing.T) {
	env := map[string]string{}
	m, err := Metrics(func(k string) string { return env[k] }, "", "")
	if err != nil || m == nil {
		t.Fatalf("Metrics() = %v, %v", m, err)
	}
	env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = "IngestionEndpoint=https://x/"
	if _, err := Metrics(func(k string) string { return env[k] }, "", ""); err == nil {
		t.Error("a connection string without InstrumentationKey was accepted")
	}
}
