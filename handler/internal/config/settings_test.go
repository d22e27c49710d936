package config

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// env is a getenv over a map.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// with returns base plus extra.
func with(base map[string]string, extra map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

var minimalEnv = map[string]string{"CONNECTIONS_FILE": "connections.json"}

func TestLoadSettingsDefaults(t *testing.T) {
	s, err := LoadSettings(env(minimalEnv))
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{
		ListenAddr:               "127.0.0.1:8080",
		ConnectionsFile:          "connections.json",
		LocalStateDir:            ".tokenrefresher",
		LockContainer:            "token-locks",
		ProviderTimeout:          20 * time.Second,
		ProviderAttemptTimeout:   10 * time.Second,
		ProviderMaxResponseBytes: 1048576,
		LockWait:                 30 * time.Second,
		LeaseDuration:            30 * time.Second,
		SweepInterval:            5 * time.Minute,
		KeyVaultWriteBudget:      150,
		AccessTokenStore:         AccessTokensInStore,
		LogLevel:                 slog.LevelInfo,
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("LoadSettings =\n%+v\nwant\n%+v", s, want)
	}
	if s.Mode() != ModeStandalone || s.Addr() != "127.0.0.1:8080" || s.UsesBlobLock() || s.UsesKeyVault() {
		t.Errorf("defaults: mode %q addr %q blob %v keyvault %v", s.Mode(), s.Addr(), s.UsesBlobLock(), s.UsesKeyVault())
	}
}

func TestLoadSettingsEverySetting(t *testing.T) {
	s, err := LoadSettings(env(map[string]string{
		"FUNCTIONS_CUSTOMHANDLER_PORT":        " 41234 ",
		"LISTEN_ADDR":                         ":9090",
		"CONNECTIONS":                         `{"connections": []}`,
		"KEY_VAULT_URL":                       "https://kv-tokens.vault.azure.net/",
		"LOCAL_STATE_DIR":                     "/var/lib/tr",
		"AzureWebJobsStorage":                 "UseDevelopmentStorage=true",
		"AzureWebJobsStorage__blobServiceUri": "https://sttokens.blob.core.windows.net",
		"AzureWebJobsStorage__accountName":    "sttokens",
		"LOCK_CONTAINER":                      "locks-2",
		"AZURE_CLIENT_ID":                     "0f8fad5b-d9cb-469f-a165-70867728950e",
		"PROVIDER_TIMEOUT":                    "30s",
		"PROVIDER_ATTEMPT_TIMEOUT":            "30s",
		"PROVIDER_MAX_RESPONSE_BYTES":         "65536",
		"LOCK_WAIT":                           "25s",
		"LOCK_LEASE_DURATION":                 "45s",
		"SWEEP_INTERVAL":                      "1m30s",
		"KEY_VAULT_WRITE_BUDGET":              "60",
		"ACCESS_TOKEN_STORE":                  "blob",
		"WEBSITE_AUTH_ENABLED":                "True",
		"API_KEY_SECRET":                      "tokenrefresher-api-key",
		"LOG_LEVEL":                           "DEBUG",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{
		FunctionsPort:            "41234",
		ListenAddr:               ":9090",
		ConnectionsJSON:          `{"connections": []}`,
		KeyVaultURL:              "https://kv-tokens.vault.azure.net/",
		LocalStateDir:            "/var/lib/tr",
		StorageConnectionString:  "UseDevelopmentStorage=true",
		StorageBlobServiceURI:    "https://sttokens.blob.core.windows.net",
		StorageAccountName:       "sttokens",
		LockContainer:            "locks-2",
		AzureClientID:            "0f8fad5b-d9cb-469f-a165-70867728950e",
		ProviderTimeout:          30 * time.Second,
		ProviderAttemptTimeout:   30 * time.Second,
		ProviderMaxResponseBytes: 65536,
		LockWait:                 25 * time.Second,
		LeaseDuration:            45 * time.Second,
		SweepInterval:            90 * time.Second,
		KeyVaultWriteBudget:      60,
		AccessTokenStore:         AccessTokensInBlob,
		AuthEnabled:              true,
		APIKeySecret:             "tokenrefresher-api-key",
		LogLevel:                 slog.LevelDebug,
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("LoadSettings =\n%+v\nwant\n%+v", s, want)
	}
	if s.Mode() != ModeFunctions || s.Addr() != "127.0.0.1:41234" || !s.UsesBlobLock() || !s.UsesKeyVault() {
		t.Errorf("mode %q addr %q blob %v keyvault %v", s.Mode(), s.Addr(), s.UsesBlobLock(), s.UsesKeyVault())
	}
}

func TestLoadSettingsProblems(t *testing.T) {
	tests := []struct {
		name      string
		env       map[string]string
		setting   string
		value     string // the value the problem must show ("" for hidden or unset)
		want      []string
		notInLine string
	}{
		{"port not a number", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "http"}, "FUNCTIONS_CUSTOMHANDLER_PORT", "http", []string{"between 1 and 65535"}, ""},
		{"port zero", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "0"}, "FUNCTIONS_CUSTOMHANDLER_PORT", "0", []string{"between 1 and 65535"}, ""},
		{"port too big", map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "65536"}, "FUNCTIONS_CUSTOMHANDLER_PORT", "65536", []string{"between 1 and 65535"}, ""},
		{"listen addr without port", map[string]string{"LISTEN_ADDR": "127.0.0.1"}, "LISTEN_ADDR", "127.0.0.1", []string{"host:port", `":8080"`}, ""},
		{"listen addr bad port", map[string]string{"LISTEN_ADDR": "127.0.0.1:http"}, "LISTEN_ADDR", "127.0.0.1:http", []string{"host:port"}, ""},
		{"listen addr port out of range", map[string]string{"LISTEN_ADDR": ":70000"}, "LISTEN_ADDR", ":70000", []string{"host:port"}, ""},
		{"key vault over http", map[string]string{"KEY_VAULT_URL": "http://kv.vault.azure.net/"}, "KEY_VAULT_URL", "http://kv.vault.azure.net/", []string{"https URL", "vault.azure.net"}, ""},
		{"key vault on loopback http", map[string]string{"KEY_VAULT_URL": "http://127.0.0.1:8443/"}, "KEY_VAULT_URL", "http://127.0.0.1:8443/", []string{"https URL"}, ""},
		{"key vault name only", map[string]string{"KEY_VAULT_URL": "kv-tokens"}, "KEY_VAULT_URL", "kv-tokens", []string{"https URL"}, ""},
		{"key vault with credentials", map[string]string{"KEY_VAULT_URL": "https://u:s3cr3t@kv.vault.azure.net/"}, "KEY_VAULT_URL", "", []string{"without credentials", "not shown"}, "s3cr3t"},
		{"storage connection string malformed", map[string]string{"AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountKey=s3cr3t;garbage"}, "AzureWebJobsStorage", "",
			[]string{"not a storage connection string", "not shown"}, "s3cr3t"},
		{"blob service over http", map[string]string{"AzureWebJobsStorage__blobServiceUri": "http://st.blob.core.windows.net"}, "AzureWebJobsStorage__blobServiceUri",
			"http://st.blob.core.windows.net", []string{"https URL", "Azurite"}, ""},
		{"blob service with SAS", map[string]string{"AzureWebJobsStorage__blobServiceUri": "https://st.blob.core.windows.net/?sig=s3cr3t"}, "AzureWebJobsStorage__blobServiceUri",
			"", []string{"query string", "not shown"}, "s3cr3t"},
		{"account name upper case", map[string]string{"AzureWebJobsStorage__accountName": "StTokens"}, "AzureWebJobsStorage__accountName", "StTokens", []string{"3-24 lower-case letters and digits"}, ""},
		{"account name too short", map[string]string{"AzureWebJobsStorage__accountName": "st"}, "AzureWebJobsStorage__accountName", "st", []string{"3-24"}, ""},
		{"container upper case", map[string]string{"LOCK_CONTAINER": "Token-Locks"}, "LOCK_CONTAINER", "Token-Locks", []string{"blob container name", "3-63"}, ""},
		{"container double hyphen", map[string]string{"LOCK_CONTAINER": "token--locks"}, "LOCK_CONTAINER", "token--locks", []string{`without "--"`}, ""},
		{"container trailing hyphen", map[string]string{"LOCK_CONTAINER": "locks-"}, "LOCK_CONTAINER", "locks-", []string{"ending with a letter or digit"}, ""},
		{"container too short", map[string]string{"LOCK_CONTAINER": "lk"}, "LOCK_CONTAINER", "lk", []string{"3-63"}, ""},
		{"client id not a GUID", map[string]string{"AZURE_CLIENT_ID": "my-identity"}, "AZURE_CLIENT_ID", "my-identity", []string{"GUID"}, ""},
		{"provider timeout without unit", map[string]string{"PROVIDER_TIMEOUT": "20"}, "PROVIDER_TIMEOUT", "20", []string{`Go duration such as "20s"`, "between 1s and 59s"}, ""},
		{"provider timeout too long", map[string]string{"PROVIDER_TIMEOUT": "2m"}, "PROVIDER_TIMEOUT", "2m", []string{"between 1s and 59s", "60 s"}, ""},
		{"provider timeout zero", map[string]string{"PROVIDER_TIMEOUT": "0s"}, "PROVIDER_TIMEOUT", "0s", []string{"between 1s and 59s"}, ""},
		{"attempt timeout negative", map[string]string{"PROVIDER_ATTEMPT_TIMEOUT": "-1s"}, "PROVIDER_ATTEMPT_TIMEOUT", "-1s", []string{"between 1s and 59s"}, ""},
		{"attempt longer than whole", map[string]string{"PROVIDER_TIMEOUT": "15s", "PROVIDER_ATTEMPT_TIMEOUT": "16s"}, "PROVIDER_ATTEMPT_TIMEOUT", "16s",
			[]string{"must not exceed PROVIDER_TIMEOUT (15s)"}, ""},
		{"attempt longer than default whole", map[string]string{"PROVIDER_ATTEMPT_TIMEOUT": "25s"}, "PROVIDER_ATTEMPT_TIMEOUT", "25s",
			[]string{"must not exceed PROVIDER_TIMEOUT (20s)"}, ""},
		{"response limit not a number", map[string]string{"PROVIDER_MAX_RESPONSE_BYTES": "1MB"}, "PROVIDER_MAX_RESPONSE_BYTES", "1MB", []string{"between 1024 and 1048576"}, ""},
		{"response limit too big", map[string]string{"PROVIDER_MAX_RESPONSE_BYTES": "2097152"}, "PROVIDER_MAX_RESPONSE_BYTES", "2097152", []string{"between 1024 and 1048576", "golang.org/x/oauth2"}, ""},
		{"response limit too small", map[string]string{"PROVIDER_MAX_RESPONSE_BYTES": "10"}, "PROVIDER_MAX_RESPONSE_BYTES", "10", []string{"between 1024 and 1048576"}, ""},
		{"lock wait at ADF's timeout", map[string]string{"LOCK_WAIT": "60s"}, "LOCK_WAIT", "60s", []string{"between 1s and 59s", "ADF"}, ""},
		{"lock wait plus provider timeout past ADF's timeout", map[string]string{"LOCK_WAIT": "40s"}, "LOCK_WAIT", "40s", []string{"plus PROVIDER_TIMEOUT (20s)", "55s", "ADF"}, ""},
		{"lock wait zero", map[string]string{"LOCK_WAIT": "0"}, "LOCK_WAIT", "0", []string{"between 1s and 59s"}, ""},
		{"lease shorter than Azure allows", map[string]string{"LOCK_LEASE_DURATION": "10s"}, "LOCK_LEASE_DURATION", "10s", []string{"between 15s and 1m", "15 to 60 seconds"}, ""},
		{"lease in fractions of a second", map[string]string{"LOCK_LEASE_DURATION": "15500ms"}, "LOCK_LEASE_DURATION", "15500ms", []string{"whole seconds"}, ""},
		{"lease longer than Azure allows", map[string]string{"LOCK_LEASE_DURATION": "2m"}, "LOCK_LEASE_DURATION", "2m", []string{"between 15s and 1m"}, ""},
		{"write budget beyond the vault's", map[string]string{"KEY_VAULT_WRITE_BUDGET": "301"}, "KEY_VAULT_WRITE_BUDGET", "301", []string{"between 1 and 300", "300 secret writes per 10 seconds per vault"}, ""},
		{"write budget not a number", map[string]string{"KEY_VAULT_WRITE_BUDGET": "half"}, "KEY_VAULT_WRITE_BUDGET", "half", []string{"between 1 and 300"}, ""},
		{"sweep too often", map[string]string{"SWEEP_INTERVAL": "1s"}, "SWEEP_INTERVAL", "1s", []string{"between 10s and 24h"}, ""},
		{"sweep too rare", map[string]string{"SWEEP_INTERVAL": "48h"}, "SWEEP_INTERVAL", "48h", []string{"between 10s and 24h"}, ""},
		{"sweep with days", map[string]string{"SWEEP_INTERVAL": "1d"}, "SWEEP_INTERVAL", "1d", []string{`Go duration such as "5m"`}, ""},
		{"auth enabled not a boolean", map[string]string{"WEBSITE_AUTH_ENABLED": "yes"}, "WEBSITE_AUTH_ENABLED", "yes", []string{`"true" or "false"`}, ""},
		{"API key secret not a secret name", map[string]string{"API_KEY_SECRET": "api_key"}, "API_KEY_SECRET", "api_key", []string{"name of a secret", "1-127"}, ""},
		{"API key secret starting with a digit", map[string]string{"API_KEY_SECRET": "1key"}, "API_KEY_SECRET", "1key", []string{"starting with a letter"}, ""},
		{"every interface without an API key", map[string]string{"LISTEN_ADDR": ":8080"}, "LISTEN_ADDR and API_KEY_SECRET", "",
			[]string{`LISTEN_ADDR ":8080"`, "API_KEY_SECRET is not set", "x-functions-key", "at least 32 characters", `"127.0.0.1:8080"`}, ""},
		{"all IPv4 addresses without an API key", map[string]string{"LISTEN_ADDR": "0.0.0.0:8080"}, "LISTEN_ADDR and API_KEY_SECRET", "", []string{`"0.0.0.0:8080"`}, ""},
		{"log level unknown", map[string]string{"LOG_LEVEL": "verbose"}, "LOG_LEVEL", "verbose", []string{"debug, info, warn, error"}, ""},
		{"no connections", map[string]string{"CONNECTIONS_FILE": ""}, "CONNECTIONS_FILE, CONNECTIONS and CONNECTIONS_BLOB", "", []string{"none is set", "exactly one", "CONNECTIONS_BLOB to <container>/<blob>"}, ""},
		{"both connections", map[string]string{"CONNECTIONS": `{"connections": []}`}, "CONNECTIONS_FILE, CONNECTIONS and CONNECTIONS_BLOB", "", []string{"more than one is set", "exactly one"}, ""},
		{"blob beside the file", map[string]string{"CONNECTIONS_BLOB": "token-locks/connections.json", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}, "CONNECTIONS_FILE, CONNECTIONS and CONNECTIONS_BLOB", "", []string{"more than one is set", "exactly one"}, ""},
		{"blob without a container", map[string]string{"CONNECTIONS_FILE": "", "CONNECTIONS_BLOB": "connections.json", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}, "CONNECTIONS_BLOB", "connections.json", []string{"<container>/<blob>", "token-locks/connections.json"}, ""},
		{"blob with a bad container name", map[string]string{"CONNECTIONS_FILE": "", "CONNECTIONS_BLOB": "Token_Locks/c.json", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}, "CONNECTIONS_BLOB", "Token_Locks/c.json", []string{"3-63 characters"}, ""},
		{"blob without lock storage", map[string]string{"CONNECTIONS_FILE": "", "CONNECTIONS_BLOB": "token-locks/connections.json"}, "CONNECTIONS_BLOB", "token-locks/connections.json", []string{"lock storage account", "AzureWebJobsStorage"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := LoadSettings(env(with(minimalEnv, tt.env)))
			var se *SettingsError
			if !errors.As(err, &se) {
				t.Fatalf("LoadSettings = %+v, %v; want a *SettingsError", s, err)
			}
			if !reflect.DeepEqual(s, Settings{}) {
				t.Errorf("LoadSettings returned settings along with the error: %+v", s)
			}
			if len(se.Problems) != 1 {
				t.Fatalf("got %d problems, want 1:\n%v", len(se.Problems), err)
			}
			p := se.Problems[0]
			if p.Setting != tt.setting || p.Value != tt.value {
				t.Errorf("problem on %s=%q, want %s=%q", p.Setting, p.Value, tt.setting, tt.value)
			}
			for _, w := range tt.want {
				if !strings.Contains(p.Message, w) {
					t.Errorf("message %q does not contain %q", p.Message, w)
				}
			}
			line := err.Error()
			if !strings.HasPrefix(line, tt.setting) {
				t.Errorf("line %q does not start with the setting", line)
			}
			if tt.value != "" && !strings.Contains(line, `"`+tt.value+`"`) {
				t.Errorf("line %q does not show the value %q", line, tt.value)
			}
			if tt.notInLine != "" && strings.Contains(line, tt.notInLine) {
				t.Errorf("line %q repeats %q", line, tt.notInLine)
			}
		})
	}
}

func TestLoadSettingsReportsEveryProblem(t *testing.T) {
	_, err := LoadSettings(env(map[string]string{
		"LOCK_WAIT":        "90s",
		"PROVIDER_TIMEOUT": "soon",
		"LOG_LEVEL":        "loud",
		"KEY_VAULT_URL":    "ftp://kv",
	}))
	var se *SettingsError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want *SettingsError", err)
	}
	var got []string
	for _, p := range se.Problems {
		got = append(got, p.Setting)
	}
	want := []string{"KEY_VAULT_URL", "PROVIDER_TIMEOUT", "LOCK_WAIT", "LOG_LEVEL", "CONNECTIONS_FILE, CONNECTIONS and CONNECTIONS_BLOB"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems on %q, want %q", got, want)
	}
	if lines := strings.Split(err.Error(), "\n"); len(lines) != len(want) {
		t.Errorf("Error() has %d lines, want %d:\n%s", len(lines), len(want), err)
	}
}

func TestSettingsBooleansAndLevels(t *testing.T) {
	for _, v := range []string{"true", "True", "TRUE", "1"} {
		if s, err := LoadSettings(env(with(minimalEnv, map[string]string{"WEBSITE_AUTH_ENABLED": v}))); err != nil || !s.AuthEnabled {
			t.Errorf("WEBSITE_AUTH_ENABLED=%q: AuthEnabled %v, err %v", v, s.AuthEnabled, err)
		}
	}
	for _, v := range []string{"false", "False", "0", ""} {
		if s, err := LoadSettings(env(with(minimalEnv, map[string]string{"WEBSITE_AUTH_ENABLED": v}))); err != nil || s.AuthEnabled {
			t.Errorf("WEBSITE_AUTH_ENABLED=%q: AuthEnabled %v, err %v", v, s.AuthEnabled, err)
		}
	}
	levels := map[string]slog.Level{"debug": slog.LevelDebug, "Info": slog.LevelInfo, "warn": slog.LevelWarn, "WARNING": slog.LevelWarn, "error": slog.LevelError}
	for v, want := range levels {
		if s, err := LoadSettings(env(with(minimalEnv, map[string]string{"LOG_LEVEL": v}))); err != nil || s.LogLevel != want {
			t.Errorf("LOG_LEVEL=%q: %v, %v; want %v", v, s.LogLevel, err, want)
		}
	}
}

// TestListenAddrNeedsAPIKey: standalone mode listens beyond loopback only
// with API_KEY_SECRET; loopback addresses and Functions mode (where the
// host checks keys and the handler listens on 127.0.0.1) need none.
func TestListenAddrNeedsAPIKey(t *testing.T) {
	tests := []struct {
		listen, apiKey, functionsPort string
		ok                            bool
	}{
		{"127.0.0.1:8080", "", "", true},
		{"127.8.9.10:0", "", "", true},
		{"[::1]:8080", "", "", true},
		{"[::ffff:127.0.0.1]:8080", "", "", true},
		{"localhost:8080", "", "", true},
		{"LocalHost:8080", "", "", true},
		{":8080", "", "", false},
		{"0.0.0.0:8080", "", "", false},
		{"[::]:8080", "", "", false},
		{"10.1.2.3:8080", "", "", false},
		{"128.0.0.1:8080", "", "", false},
		{"[fe80::1%eth0]:8080", "", "", false},
		{"localhost.example.com:8080", "", "", false},
		{"tokenrefresher.internal:8080", "", "", false},
		{":8080", "tokenrefresher-api-key", "", true},
		{"0.0.0.0:8080", "tokenrefresher-api-key", "", true},
		{"0.0.0.0:8080", "", "41234", true},
	}
	for _, tt := range tests {
		t.Run(tt.listen+" key="+tt.apiKey+" port="+tt.functionsPort, func(t *testing.T) {
			s, err := LoadSettings(env(with(minimalEnv, map[string]string{
				"LISTEN_ADDR": tt.listen, "API_KEY_SECRET": tt.apiKey, "FUNCTIONS_CUSTOMHANDLER_PORT": tt.functionsPort,
			})))
			if tt.ok {
				if err != nil {
					t.Fatalf("LoadSettings: %v", err)
				}
				if s.APIKeySecret != tt.apiKey {
					t.Errorf("APIKeySecret %q, want %q", s.APIKeySecret, tt.apiKey)
				}
				return
			}
			var se *SettingsError
			if !errors.As(err, &se) || len(se.Problems) != 1 || se.Problems[0].Setting != "LISTEN_ADDR and API_KEY_SECRET" {
				t.Fatalf("LoadSettings = %v; want the one problem on LISTEN_ADDR and API_KEY_SECRET", err)
			}
		})
	}
}

// TestPrincipalHeadersTrusted: X-MS-CLIENT-PRINCIPAL-ID identifies the
// caller only with App Service authentication on and the Functions host in
// front; standalone mode has no front end that strips forged copies.
func TestPrincipalHeadersTrusted(t *testing.T) {
	tests := []struct {
		auth, functionsPort string
		want                bool
	}{
		{"true", "41234", true},
		{"false", "41234", false},
		{"", "41234", false},
		{"true", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		s, err := LoadSettings(env(with(minimalEnv, map[string]string{"WEBSITE_AUTH_ENABLED": tt.auth, "FUNCTIONS_CUSTOMHANDLER_PORT": tt.functionsPort})))
		if err != nil {
			t.Fatal(err)
		}
		if got := s.PrincipalHeadersTrusted(); got != tt.want {
			t.Errorf("WEBSITE_AUTH_ENABLED=%q FUNCTIONS_CUSTOMHANDLER_PORT=%q: PrincipalHeadersTrusted %v, want %v", tt.auth, tt.functionsPort, got, tt.want)
		}
	}
}

func TestStorageSettings(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		blobLock bool
		url      string
	}{
		{"none", nil, false, ""},
		{"connection string", map[string]string{"AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=st;AccountKey=a2V5;EndpointSuffix=core.windows.net"}, true, ""},
		{"connection string wins", map[string]string{"AzureWebJobsStorage": "UseDevelopmentStorage=true", "AzureWebJobsStorage__accountName": "sttokens"}, true, ""},
		{"account name", map[string]string{"AzureWebJobsStorage__accountName": "sttokens"}, true, "https://sttokens.blob.core.windows.net/"},
		{"service URI", map[string]string{"AzureWebJobsStorage__blobServiceUri": "https://sttokens.blob.core.usgovcloudapi.net/"}, true, "https://sttokens.blob.core.usgovcloudapi.net/"},
		{"service URI wins", map[string]string{"AzureWebJobsStorage__blobServiceUri": "https://a.example/", "AzureWebJobsStorage__accountName": "sttokens"}, true, "https://a.example/"},
		{"Azurite over http", map[string]string{"AzureWebJobsStorage__blobServiceUri": "http://127.0.0.1:10000/devstoreaccount1"}, true, "http://127.0.0.1:10000/devstoreaccount1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := LoadSettings(env(with(minimalEnv, tt.env)))
			if err != nil {
				t.Fatal(err)
			}
			if s.UsesBlobLock() != tt.blobLock || s.BlobServiceURL() != tt.url {
				t.Errorf("UsesBlobLock %v, BlobServiceURL %q; want %v, %q", s.UsesBlobLock(), s.BlobServiceURL(), tt.blobLock, tt.url)
			}
		})
	}
}

// TestSettingsDoNotPrintSecrets checks both ways settings reach a log.
func TestSettingsDoNotPrintSecrets(t *testing.T) {
	s, err := LoadSettings(env(map[string]string{
		"CONNECTIONS":         `{"connections": [{"name": "inline-only-marker", "provider": "xero"}]}`,
		"AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=st;AccountKey=S3CR3TKEY==",
	}))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("settings", "settings", s)
	for _, out := range []string{s.String(), buf.String()} {
		if strings.Contains(out, "S3CR3TKEY") || strings.Contains(out, "AccountKey") || strings.Contains(out, "inline-only-marker") {
			t.Errorf("settings output leaks the connection string or inline JSON: %s", out)
		}
		if !strings.Contains(out, "blob (connection string)") || !strings.Contains(out, "bytes inline") {
			t.Errorf("settings output lacks the lock or connections summary: %s", out)
		}
	}
}

func TestReadConnections(t *testing.T) {
	valid := `{"connections": [{"name": "xero", "provider": "xero"}]}`
	dir := t.TempDir()
	path := filepath.Join(dir, "connections.json")
	if err := os.WriteFile(path, []byte(valid), 0o600); err != nil {
		t.Fatal(err)
	}
	badPath := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(badPath, []byte(`{"connections": [{"name": "Xero"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("file", func(t *testing.T) {
		conns, err := Settings{ConnectionsFile: path}.ReadConnections()
		if err != nil || len(conns) != 1 || conns[0].Name != "xero" {
			t.Errorf("ReadConnections = %v, %v", conns, err)
		}
	})
	t.Run("inline", func(t *testing.T) {
		conns, err := Settings{ConnectionsJSON: valid}.ReadConnections()
		if err != nil || len(conns) != 1 || conns[0].Provider != "xero" {
			t.Errorf("ReadConnections = %v, %v", conns, err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		missing := filepath.Join(dir, "nope.json")
		_, err := Settings{ConnectionsFile: missing}.ReadConnections()
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "CONNECTIONS_FILE") || !strings.Contains(err.Error(), missing) {
			t.Errorf("err = %v; want a not-exist error naming CONNECTIONS_FILE and the path", err)
		}
	})
	t.Run("bad file", func(t *testing.T) {
		_, err := Settings{ConnectionsFile: badPath}.ReadConnections()
		var ve *ValidationError
		if !errors.As(err, &ve) || len(ve.Problems) != 3 {
			t.Fatalf("err = %v; want a *ValidationError with 3 problems", err)
		}
		if first := strings.SplitN(err.Error(), "\n", 2)[0]; !strings.Contains(first, badPath) {
			t.Errorf("first line %q does not say which file", first)
		}
	})
	t.Run("bad inline", func(t *testing.T) {
		_, err := Settings{ConnectionsJSON: `{"connections": `}.ReadConnections()
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Problems[0].Line != 1 || !strings.HasPrefix(err.Error(), "connections from CONNECTIONS:") {
			t.Errorf("err = %v; want a syntax problem from CONNECTIONS", err)
		}
	})
	t.Run("neither", func(t *testing.T) {
		if _, err := (Settings{}).ReadConnections(); err == nil {
			t.Errorf("ReadConnections without a source succeeded")
		}
	})
}
