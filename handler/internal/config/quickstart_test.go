package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestQuickStartConnectionsFile: examples/connections.json is the file the
// README's quick start runs the handler with on a workstation. It must be
// valid (TestExamplesMatchSchema also holds it to the schema), name the
// connection whose secrets the quick start loads, and set no
// allowedCallers: callers are identified only behind App Service
// authentication, so on a workstation such a connection answers 403.
func TestQuickStartConnectionsFile(t *testing.T) {
	data, err := os.ReadFile("../../../examples/connections.json")
	if err != nil {
		t.Fatal(err)
	}
	conns, err := ParseConnections(data)
	if err != nil {
		t.Fatalf("examples/connections.json: %v", err)
	}
	found := false
	for _, c := range conns {
		if c.Name == "xero" {
			found = true
		}
		if len(c.AllowedCallers) > 0 {
			t.Errorf("examples/connections.json: connection %q sets allowedCallers, which answers 403 on a workstation", c.Name)
		}
	}
	if !found {
		t.Error(`examples/connections.json has no connection "xero", whose secrets the quick start loads`)
	}
}

// TestLocalSettingsExampleWorksFromTheAppFolder: local.settings.json.example
// is for `func start` in dist/app, the function app `make package` lays out
// (host.json, the handler and the function folders side by side: the host
// reads the function folders from its script root,
// HostFunctionMetadataProvider in Azure/azure-functions-host, and the
// repository keeps them under functions/). The host starts the handler in
// that folder (HttpWorkerOptionsSetup: an empty workingDirectory is the
// script root), so its relative paths must resolve from there.
func TestLocalSettingsExampleWorksFromTheAppFolder(t *testing.T) {
	data, err := os.ReadFile("../../../local.settings.json.example")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Values map[string]string
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("local.settings.json.example: %v", err)
	}
	if rt := f.Values["FUNCTIONS_WORKER_RUNTIME"]; !strings.EqualFold(rt, "custom") {
		t.Errorf("FUNCTIONS_WORKER_RUNTIME %q, want custom", rt)
	}
	appDir := filepath.Join("..", "..", "..", "dist", "app")
	conns, err := os.ReadFile(filepath.Join(appDir, f.Values["CONNECTIONS_FILE"]))
	if err != nil {
		t.Fatalf("CONNECTIONS_FILE %q does not resolve from dist/app: %v", f.Values["CONNECTIONS_FILE"], err)
	}
	if _, err := ParseConnections(conns); err != nil {
		t.Errorf("CONNECTIONS_FILE %q: %v", f.Values["CONNECTIONS_FILE"], err)
	}
	root, _ := filepath.Abs(filepath.Join("..", "..", ".."))
	state, _ := filepath.Abs(filepath.Join(appDir, f.Values["LOCAL_STATE_DIR"]))
	if state != filepath.Join(root, ".tokenrefresher") {
		t.Errorf("LOCAL_STATE_DIR %q resolves from dist/app to %s, not the repository's git-ignored .tokenrefresher (where `handler secret set` run at the root writes)", f.Values["LOCAL_STATE_DIR"], state)
	}
	if _, err := LoadSettings(func(k string) string { return f.Values[k] }); err != nil {
		t.Errorf("the handler refuses the settings: %v", err)
	}
}
