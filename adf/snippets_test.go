package adf

// The snippets of SNIPPETS.md against the handler: each fenced block is read
// by its label (```json fabric, ```python get_token.py, ...). The Python one
// runs against a TLS test server that answers as the handler's token route
// does; the others are held to the route, header and fields by their JSON
// or their text.

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// snippets returns SNIPPETS.md's fenced blocks by their label, the word
// after the language.
func snippets(t *testing.T) map[string]string {
	t.Helper()
	md := readText(t, "SNIPPETS.md")
	out := map[string]string{}
	for _, m := range regexp.MustCompile("(?ms)^```(\\w+) ([\\w.-]+)\\n(.*?)^```$").FindAllStringSubmatch(md, -1) {
		out[m[2]] = m[3]
	}
	for _, want := range []string{"synapse", "fabric", "logicapp", "get_token.py", "Get-Token.ps1"} {
		if out[want] == "" {
			t.Fatalf("SNIPPETS.md has no block labelled %s", want)
		}
	}
	return out
}

// checkTokenCall holds one call to the token route to the handler: the
// path, minValidity, no key in the URL, the key from an expression.
func checkTokenCall(t *testing.T, h *handlerSurface, what, method, rawURL string, key value, hasKey bool) {
	t.Helper()
	if !slices.Contains(h.methods, strings.ToLower(method)) {
		t.Errorf("%s: method %s; functions/token/function.json allows %v", what, method, h.methods)
	}
	u := parseURL(rawURL)
	if u.scheme != "https" {
		t.Errorf("%s: calls %s; the function app is HTTPS only", what, rawURL)
	}
	if err := h.matchTokenPath(u.path); err != nil {
		t.Errorf("%s: %v", what, err)
	}
	if err := h.checkMinValidity(u.query); err != nil {
		t.Errorf("%s: %v", what, err)
	}
	if strings.Contains(strings.ToLower(u.query), "code=") {
		t.Errorf("%s: sends the function key in the URL", what)
	}
	if !hasKey || !key.expression {
		t.Errorf("%s: the x-functions-key header is missing or a literal (%q)", what, key.text)
	}
}

func TestPipelineSnippets(t *testing.T) {
	t.Parallel()
	h := loadHandler(t)
	blocks := snippets(t)
	for _, label := range []string{"synapse", "fabric"} {
		t.Run(label, func(t *testing.T) {
			var a struct {
				activity
				ExternalReferences struct {
					Connection string `json:"connection"`
				} `json:"externalReferences"`
			}
			if err := json.Unmarshal([]byte(blocks[label]), &a); err != nil {
				t.Fatalf("SNIPPETS.md %s: %v", label, err)
			}
			if a.Type != "WebActivity" || a.Policy == nil || !a.Policy.SecureOutput || !a.Policy.SecureInput || a.Policy.Retry < 1 || a.Policy.RetryIntervalInSeconds < 30 {
				t.Errorf("SNIPPETS.md %s: want a WebActivity with secure input and output and at least one retry 30 s apart: %+v", label, a.Policy)
			}
			w := a.activity.web(t)
			url := w.URL.text
			if label == "fabric" {
				// The Web v2 connection's base URL is https://<host>/api/.
				var fp struct {
					RelativeURL value `json:"relativeUrl"`
				}
				_ = json.Unmarshal(a.TypeProperties, &fp)
				if a.ExternalReferences.Connection == "" || fp.RelativeURL.text == "" || url != "" {
					t.Errorf("SNIPPETS.md fabric: want externalReferences.connection and typeProperties.relativeUrl, no url")
				}
				url = "https://@{connection}/" + h.routePrefix + "/" + fp.RelativeURL.text
			}
			key, hasKey := headerValue(w.Headers, "x-functions-key")
			checkTokenCall(t, h, "SNIPPETS.md "+label, w.Method, url, key, hasKey)
		})
	}
	t.Run("logicapp", func(t *testing.T) {
		var actions map[string]struct {
			Type   string `json:"type"`
			Inputs struct {
				Method      string           `json:"method"`
				URI         value            `json:"uri"`
				Headers     map[string]value `json:"headers"`
				RetryPolicy *struct {
					Type  string `json:"type"`
					Count int    `json:"count"`
				} `json:"retryPolicy"`
			} `json:"inputs"`
			RuntimeConfiguration struct {
				SecureData struct {
					Properties []string `json:"properties"`
				} `json:"secureData"`
			} `json:"runtimeConfiguration"`
		}
		if err := json.Unmarshal([]byte(blocks["logicapp"]), &actions); err != nil {
			t.Fatal(err)
		}
		a, ok := actions["Get_token"]
		if !ok || a.Type != "Http" {
			t.Fatalf("SNIPPETS.md logicapp: want an Http action Get_token, have %+v", actions)
		}
		key, hasKey := headerValue(a.Inputs.Headers, "x-functions-key")
		// Logic Apps' @{parameters('x')} is an expression, as in ADF.
		key.expression = key.expression && strings.Contains(key.text, "parameters(")
		checkTokenCall(t, h, "SNIPPETS.md logicapp", a.Inputs.Method, a.Inputs.URI.text, key, hasKey)
		if sd := a.RuntimeConfiguration.SecureData.Properties; !slices.Contains(sd, "inputs") || !slices.Contains(sd, "outputs") {
			t.Errorf("SNIPPETS.md logicapp: secureData covers %q; the inputs hold the key, the outputs the token", sd)
		}
		if a.Inputs.RetryPolicy == nil || a.Inputs.RetryPolicy.Count < 1 {
			t.Error("SNIPPETS.md logicapp: no retry policy; 502 and 503 are retryable")
		}
	})
	md := readText(t, "SNIPPETS.md")
	for _, read := range regexp.MustCompile(`\['(\w+)'\]`).FindAllStringSubmatch(md, -1) {
		if !slices.Contains(h.tokenFields, read[1]) {
			t.Errorf("SNIPPETS.md reads ['%s']; the handler answers with %v", read[1], h.tokenFields)
		}
	}
}

// TestPowerShellSnippet checks the PowerShell block's shape: no PowerShell
// is installed where these tests run (apt-cache policy powershell: no
// candidate), so it is not run.
func TestPowerShellSnippet(t *testing.T) {
	t.Parallel()
	h := loadHandler(t)
	ps := snippets(t)["Get-Token.ps1"]
	uri := regexp.MustCompile(`-Uri "([^"]+)"`).FindStringSubmatch(ps)
	if uri == nil || !strings.Contains(ps, "Invoke-RestMethod -Method Get") {
		t.Fatalf("the PowerShell snippet has no Invoke-RestMethod -Method Get -Uri \"...\":\n%s", ps)
	}
	// PowerShell variables ($x, $($x)) stand where ADF has @{...}.
	url := regexp.MustCompile(`\$\(\$\w+\)|\$\w+`).ReplaceAllString(uri[1], "@{x}")
	key := value{}
	if m := regexp.MustCompile(`-Headers @\{ 'x-functions-key' = (\$\w+) \}`).FindStringSubmatch(ps); m != nil {
		key = value{text: m[1], expression: true}
	}
	checkTokenCall(t, h, "SNIPPETS.md Get-Token.ps1", "GET", url, key, key.text != "")
	if !regexp.MustCompile(`\$\(\$Connection\)\?`).MatchString(uri[1]) {
		t.Error("the PowerShell snippet must write $($Connection)? in the URI: in a string, $Connection?minValidity is one variable name")
	}
	for _, read := range regexp.MustCompile(`\$answer\.(\w+)`).FindAllStringSubmatch(ps, -1) {
		if !slices.Contains(h.tokenFields, read[1]) {
			t.Errorf("the PowerShell snippet reads .%s; the handler answers with %v", read[1], h.tokenFields)
		}
	}
	if !strings.Contains(ps, "-MaximumRetryCount") || !strings.Contains(ps, "-TimeoutSec 65") {
		t.Error("the PowerShell snippet must retry and wait longer than the handler's 60 s")
	}
}

// TestPythonSnippet runs the Python block against a TLS server that answers
// as the token route does: a 503 with Retry-After, then the token; a 424
// with the handler's error body.
func TestPythonSnippet(t *testing.T) {
	t.Parallel()
	h := loadHandler(t)
	python, err := exec.LookPath("python3")
	if err == nil {
		err = exec.Command(python, "-c", "import requests").Run()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3 with requests is needed: %v", err)
		}
		t.Skipf("python3 with requests is not installed (%v); the Python snippet is not run", err)
	}
	const secretToken = "at-5ecret-value-never-printed"
	const key = "test-function-key"
	var calls atomic.Int32
	token := map[string]any{}
	for _, f := range h.tokenFields {
		token[f] = map[string]any{h.accessTokenField: secretToken, "token_type": "Bearer", "expires_in": 1800, "expires_on": "2026-01-02T04:04:05Z"}[f]
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("x-functions-key") != key || r.URL.Query().Has("code") {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		conn, ok := strings.CutPrefix(r.URL.Path, "/"+h.routePrefix+"/token/")
		if !ok || r.Method != http.MethodGet || r.URL.Query().Get("minValidity") != "900" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		switch {
		case conn == "revoked":
			w.WriteHeader(http.StatusFailedDependency)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": "provider_rejected", "message": "the provider rejected the request: invalid_grant",
				"remediation": "Re-authorize connection revoked.", "connection": conn, "retryable": false})
		case calls.Load() == 1:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": "temporarily_unavailable", "message": "busy", "connection": conn, "retryable": true})
		default:
			_ = json.NewEncoder(w).Encode(token)
		}
	}))
	defer srv.Close()

	dir := t.TempDir()
	script := filepath.Join(dir, "get_token.py")
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(script, []byte(snippets(t)["get_token.py"]), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(connection string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, python, script, connection)
		cmd.Env = append(os.Environ(), "TOKENREFRESHER_HOST="+strings.TrimPrefix(srv.URL, "https://"),
			"TOKENREFRESHER_KEY="+key, "REQUESTS_CA_BUNDLE="+ca, "NO_PROXY=*", "no_proxy=*")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("xero")
	printed := strings.Contains(out, secretToken)
	out = strings.ReplaceAll(out, secretToken, "<the access token>") // test output shows no token, even a fake one
	if err != nil || strings.TrimSpace(out) != "xero: token valid until 2026-01-02T04:04:05Z" || calls.Load() != 2 {
		t.Errorf("python3 get_token.py xero: %v, %d calls, output:\n%s", err, calls.Load(), out)
	}
	if printed {
		t.Error("the Python snippet printed the access token")
	}
	out, err = run("revoked")
	if err == nil || !strings.Contains(out, "424 provider_rejected: the provider rejected the request: invalid_grant Re-authorize connection revoked.") {
		t.Errorf("python3 get_token.py revoked: %v, want a failure with the error, message and remediation; output:\n%s", err, out)
	}
}

// TestFactoryBicepDeploysTheKit: factory.bicep deploys every file of the kit
// once, each from its folder's array, and sets only properties and
// parameters the kit has.
func TestFactoryBicepDeploysTheKit(t *testing.T) {
	t.Parallel()
	src := readText(t, "factory.bicep")
	kit := loadKit(t)
	arrays := map[string]string{"linkedService": "linkedServiceFiles", "dataset": "datasetFiles", "pipeline": "pipelineFiles"}
	seen := map[string]int{}
	for kind, array := range arrays {
		m := regexp.MustCompile(`(?s)var ` + array + ` = \[(.*?)\n\]`).FindStringSubmatch(src)
		if m == nil {
			t.Fatalf("factory.bicep: no var %s = [ ... ]", array)
		}
		for _, f := range regexp.MustCompile(`loadJsonContent\('([\w.-]+/[\w.-]+\.json)'\)`).FindAllStringSubmatch(m[1], -1) {
			seen[f[1]]++
			if !strings.HasPrefix(f[1], kind+"/") {
				t.Errorf("factory.bicep: %s is in %s", f[1], array)
			}
		}
	}
	for _, f := range kit.files {
		if seen[f.path] != 1 {
			t.Errorf("factory.bicep deploys %s %d times, want once", f.path, seen[f.path])
		}
		delete(seen, f.path)
	}
	for path := range seen {
		t.Errorf("factory.bicep loads %s, which is not in the kit", path)
	}
	// linkedServiceValues: typeProperties the named linked service has.
	block := regexp.MustCompile(`(?s)var linkedServiceValues = \{\n(.*?)\n\}`).FindStringSubmatch(src)
	if block == nil {
		t.Fatal("factory.bicep: no var linkedServiceValues")
	}
	for _, m := range regexp.MustCompile(`(?s)  (\w+): \{\n(.*?)\n  \}`).FindAllStringSubmatch(block[1], -1) {
		ls := kit.find("linkedService", m[1])
		if ls == nil {
			t.Errorf("factory.bicep sets values of linked service %s, which is not in the kit", m[1])
			continue
		}
		var doc struct {
			Properties struct {
				TypeProperties map[string]any `json:"typeProperties"`
			} `json:"properties"`
		}
		_ = json.Unmarshal(ls.raw, &doc)
		for _, k := range regexp.MustCompile(`(?m)^\s+(\w+):`).FindAllStringSubmatch(m[2], -1) {
			if _, ok := doc.Properties.TypeProperties[k[1]]; !ok {
				t.Errorf("factory.bicep sets %s.typeProperties.%s, which %s lacks", m[1], k[1], ls.path)
			}
		}
	}
	defaults := regexp.MustCompile(`(?s)var pipelineDefaults = union\(\{(.*?)\}\)\n`).FindStringSubmatch(src)
	if defaults == nil {
		t.Fatal("factory.bicep: no var pipelineDefaults")
	}
	for _, k := range regexp.MustCompile(`(?m)^\s+(\w+): \w+$`).FindAllStringSubmatch(defaults[1], -1) {
		if !slices.ContainsFunc(kit.pipelines, func(p *pipeline) bool { _, ok := p.Parameters[k[1]]; return ok }) {
			t.Errorf("factory.bicep sets the default of pipeline parameter %s, which no pipeline declares", k[1])
		}
	}
	// The syntax, with the grammar infra's tests use, when it is installed.
	node, err := exec.LookPath("node")
	tools := filepath.Join(repoRoot, ".tools", "bicep")
	if dir, ok := os.LookupEnv("BICEP_TOOLS_DIR"); ok {
		tools = dir
	}
	if err == nil {
		_, err = os.Stat(filepath.Join(tools, "node_modules", "tree-sitter-bicep"))
	}
	if err != nil {
		t.Logf("the syntax of factory.bicep is not checked: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	abs, _ := filepath.Abs(tools)
	cmd := exec.CommandContext(ctx, node, filepath.Join(repoRoot, "infra", "check", "bicep-parse.js"), "factory.bicep")
	cmd.Env = append(os.Environ(), "BICEP_TOOLS_DIR="+abs)
	if out, err := cmd.CombinedOutput(); err != nil || string(out) != "bicep-parse: 1 files parse\n" {
		t.Errorf("factory.bicep: %v\n%s", err, out)
	}
}
