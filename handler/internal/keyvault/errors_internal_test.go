package keyvault

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		header http.Header
		want   time.Duration
	}{
		{"none", http.Header{}, 0},
		{"seconds", http.Header{"Retry-After": {"7"}}, 7 * time.Second},
		{"date", http.Header{"Retry-After": {now.Add(90 * time.Second).Format(http.TimeFormat)}}, 90 * time.Second},
		{"date in the past", http.Header{"Retry-After": {now.Add(-time.Minute).Format(http.TimeFormat)}}, 0},
		{"milliseconds first", http.Header{"Retry-After-Ms": {"250"}, "Retry-After": {"7"}}, 250 * time.Millisecond},
		{"x-ms milliseconds", http.Header{"X-Ms-Retry-After-Ms": {"1500"}}, 1500 * time.Millisecond},
		{"garbage", http.Header{"Retry-After": {"soon"}}, 0},
		{"negative", http.Header{"Retry-After": {"-3"}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryAfter(tt.header, now); got != tt.want {
				t.Errorf("retryAfter = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestOneLine(t *testing.T) {
	if got := oneLine("Caller is not authorized.\r\nCaller: oid=x\r\n  Vault: kv;location=westeurope\r\n"); got != "Caller is not authorized. Caller: oid=x Vault: kv;location=westeurope" {
		t.Errorf("oneLine = %q", got)
	}
	// Byte maxMessage falls inside an "é": the cut moves back to its start.
	long := oneLine("a" + strings.Repeat("é", maxMessage))
	if len(long) != maxMessage-1+len("…") || !strings.HasSuffix(long, "é…") || !strings.HasPrefix(long, "aé") {
		t.Errorf("shortened message: %d bytes, %q...", len(long), long[:10])
	}
}

func TestSecretName(t *testing.T) {
	tests := map[string]string{
		"https://kv.vault.azure.net/secrets/acme":             "acme",
		"https://kv.vault.azure.net:443/secrets/acme/0123abc": "acme",
		"https://kv.vault.azure.net/secrets":                  "",
		"https://kv.vault.azure.net/keys/acme":                "",
		"%":                                                   "",
	}
	for id, want := range tests {
		if got := secretName(id); got != want {
			t.Errorf("secretName(%q) = %q, want %q", id, got, want)
		}
	}
}
