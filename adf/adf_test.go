package adf

// These tests hold the ADF kit to the handler. The kit is JSON that Data
// Factory reads and the handler never sees, so nothing else would notice
// when a route, a response field, a status or a secret name changes on one
// side only. The handler's side is read from its source with go/ast (adf/
// cannot import handler/internal/...), and from host.json and function.json.

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
)

// repoRoot is the module root; go test runs in adf/.
const repoRoot = ".."

// kitFolders are the folders of a factory's Git repository the kit uses,
// named as Data Factory names them, so they can be copied in as they are.
var kitFolders = []string{"pipeline", "dataset", "linkedService"}

// ---------------------------------------------------------------------------
// The kit's files.

func TestKitFiles(t *testing.T) {
	t.Parallel()
	kit := loadKit(t)
	if len(kit.pipelines) == 0 {
		t.Fatal("the kit has no pipeline")
	}
	// JSON anywhere else would not be found by a factory's Git integration.
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".json" {
			return err
		}
		if !slices.Contains(kitFolders, filepath.Dir(path)) {
			t.Errorf("%s: Data Factory reads only %s/*.json from a factory's repository", path, strings.Join(kitFolders, "/*.json, "))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range kit.files {
		if want := strings.TrimSuffix(filepath.Base(f.path), ".json"); f.Name != want {
			t.Errorf("%s: name %q, want %q: Data Factory keeps each resource in <name>.json", f.path, f.Name, want)
		}
	}
}

func TestPipelineShape(t *testing.T) {
	t.Parallel()
	kit := loadKit(t)
	for _, p := range kit.pipelines {
		t.Run(p.Name, func(t *testing.T) {
			if len(p.Activities) == 0 {
				t.Fatalf("%s: properties.activities is empty", p.path)
			}
			byName := map[string]*activity{}
			for _, a := range p.Activities {
				if a.Name == "" || a.Type == "" {
					t.Errorf("%s: an activity lacks name or type", p.path)
				}
				if byName[a.Name] != nil {
					t.Errorf("%s: two activities are named %q", p.path, a.Name)
				}
				byName[a.Name] = a
				if a.Policy == nil {
					t.Errorf("%s: activity %q has no policy (timeout, retry, secure input and output)", p.path, a.Name)
				}
			}
			for _, a := range p.Activities {
				for _, d := range a.DependsOn {
					if byName[d.Activity] == nil {
						t.Errorf("%s: %q depends on %q, which does not exist", p.path, a.Name, d.Activity)
					}
				}
				refs := scanExpressions(a.raw)
				for _, r := range refs.activities {
					if !p.dependsOn(a.Name, r.name) {
						t.Errorf("%s: %q reads activity(%q), but does not depend on it: the value would not exist yet", p.path, a.Name, r.name)
					}
				}
				for _, name := range refs.pipelineParams {
					if _, ok := p.Parameters[name]; !ok {
						t.Errorf("%s: %q reads pipeline().parameters.%s, which is not declared", p.path, a.Name, name)
					}
				}
			}
			for name, prm := range p.Parameters {
				if !slices.Contains([]string{"string", "int", "float", "bool", "array", "object", "securestring"}, strings.ToLower(prm.Type)) {
					t.Errorf("%s: parameter %s has type %q, which Data Factory does not know", p.path, name, prm.Type)
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// The token activity against the handler.

// TestHandlerServesTheHostRoute: with forwarding on, the host passes the
// original path to the handler, so the route the host exposes (what the
// kit calls) must be a pattern the handler's mux serves.
func TestHandlerServesTheHostRoute(t *testing.T) {
	t.Parallel()
	h := loadHandler(t)
	if !slices.Contains(h.muxPatterns, h.tokenRoute()) {
		t.Errorf("the host exposes %s (host.json routePrefix + functions/token route), but the handler's mux serves %v", h.tokenRoute(), h.muxPatterns)
	}
}

func TestTokenActivityCallsTheHandler(t *testing.T) {
	t.Parallel()
	kit := loadKit(t)
	h := loadHandler(t)
	for _, p := range kit.pipelines {
		t.Run(p.Name, func(t *testing.T) {
			a := p.tokenActivity(t, h)
			web := a.web(t)
			if !slices.Contains(h.methods, strings.ToLower(web.Method)) {
				t.Errorf("%s: %q uses method %s; functions/token/function.json allows %v", p.path, a.Name, web.Method, h.methods)
			}
			u := parseURL(web.URL.text)
			if u.scheme != "https" {
				t.Errorf("%s: %q calls %s; the function app is HTTPS only", p.path, a.Name, web.URL.text)
			}
			if err := h.matchTokenPath(u.path); err != nil {
				t.Errorf("%s: %q: %v", p.path, a.Name, err)
			}
			if err := h.checkMinValidity(u.query); err != nil {
				t.Errorf("%s: %q: %v", p.path, a.Name, err)
			}
			if strings.Contains(strings.ToLower(u.query), "code=") {
				t.Errorf("%s: %q sends the function key in the URL (?code=); send it in the x-functions-key header, URLs are logged", p.path, a.Name)
			}

			// Authentication: the function key whenever the function asks
			// for one, and the factory's managed identity when given.
			key, hasKey := headerValue(web.Headers, "x-functions-key")
			if h.authLevel != "anonymous" && !hasKey {
				t.Errorf("%s: %q sends no x-functions-key header, but functions/token/function.json has authLevel %q", p.path, a.Name, h.authLevel)
			}
			if hasKey && !key.expression {
				t.Errorf("%s: %q has a literal x-functions-key; read it from Key Vault at run time", p.path, a.Name)
			}
			if web.Authentication != nil {
				if web.Authentication.Type != "MSI" || web.Authentication.Resource.text == "" {
					t.Errorf("%s: %q authenticates with %q, resource %q; the kit documents MSI with the app registration's Application ID URI as resource",
						p.path, a.Name, web.Authentication.Type, web.Authentication.Resource.text)
				}
			}

			// The policy: the token stays out of run history, and a retry
			// is as safe as the first call.
			pol := a.Policy
			if pol == nil {
				t.Fatalf("%s: %q has no policy", p.path, a.Name)
			}
			if !pol.SecureOutput {
				t.Errorf("%s: %q lacks policy.secureOutput: true; its output is the access token, which would be logged to run history", p.path, a.Name)
			}
			if !pol.SecureInput {
				t.Errorf("%s: %q lacks policy.secureInput: true; its input carries the function key", p.path, a.Name)
			}
			// 503 and 502 are retryable. ADF ignores Retry-After, so the
			// interval stands in for it: the handler asks for 5-15 s on a
			// 503 and at least 30 s on a 502 (broker.go).
			if pol.Retry < 1 || pol.RetryIntervalInSeconds < 30 {
				t.Errorf("%s: %q retries %d times every %d s; want at least 1 retry, at least 30 s apart (503 and 502 are retryable; ADF ignores Retry-After)", p.path, a.Name, pol.Retry, pol.RetryIntervalInSeconds)
			}
			// The handler keeps every answer, a 503 included, inside ADF's
			// default 1-minute request timeout; a shorter one would cut it.
			reqTimeout := time.Minute
			if web.HTTPRequestTimeout != "" {
				reqTimeout = parseTimeSpan(t, web.HTTPRequestTimeout)
			}
			if reqTimeout < h.callerTimeout || reqTimeout > 10*time.Minute {
				t.Errorf("%s: %q has httpRequestTimeout %s; want from %s (what the handler's timeouts are sized for) to 10m (ADF's maximum)", p.path, a.Name, reqTimeout, h.callerTimeout)
			}
			if pol.Timeout == "" || parseTimeSpan(t, pol.Timeout) < reqTimeout {
				t.Errorf("%s: %q has policy.timeout %q, shorter than its request timeout %s", p.path, a.Name, pol.Timeout, reqTimeout)
			}
		})
	}
}

func TestConsumersReadTheTokenSecurely(t *testing.T) {
	t.Parallel()
	kit := loadKit(t)
	h := loadHandler(t)
	for _, p := range kit.pipelines {
		t.Run(p.Name, func(t *testing.T) {
			token := p.tokenActivity(t, h)
			readsAccessToken := false
			for _, a := range p.Activities {
				for _, r := range scanExpressions(a.raw).activities {
					if r.name != token.Name || !r.output {
						continue
					}
					if !slices.Contains(h.tokenFields, r.field) {
						t.Errorf("%s: %q reads activity(%q).output.%s; the handler answers with %v (tokenResponse in handler/internal/functions)", p.path, a.Name, token.Name, r.field, h.tokenFields)
					}
					if r.field == h.accessTokenField {
						readsAccessToken = true
					}
				}
			}
			if !readsAccessToken {
				t.Errorf("%s: no activity reads activity(%q).output.%s", p.path, token.Name, h.accessTokenField)
			}
			// Whatever a secure output holds must not reach run history
			// through the input of the activity that uses it.
			for _, a := range p.Activities {
				for _, r := range scanExpressions(a.raw).activities {
					src := p.activity(r.name)
					if src == nil || src.Policy == nil || !src.Policy.SecureOutput || !r.output {
						continue
					}
					if a.Policy == nil || !a.Policy.SecureInput {
						t.Errorf("%s: %q uses the secure output of %q but lacks policy.secureInput: true, so the value is logged to run history", p.path, a.Name, r.name)
					}
				}
			}
			// A Key Vault read is a secret in the output.
			for _, a := range p.Activities {
				if a.Type != "WebActivity" {
					continue
				}
				web := a.web(t)
				if web.Authentication != nil && strings.TrimSuffix(web.Authentication.Resource.text, "/") == "https://vault.azure.net" {
					if a.Policy == nil || !a.Policy.SecureOutput {
						t.Errorf("%s: %q reads Key Vault but lacks policy.secureOutput: true", p.path, a.Name)
					}
				}
			}
		})
	}
}

// TestMinValidityDefaultsFitProviders: a pipeline's default minValidity is
// one the handler grants for the providers most pipelines call, and the
// README names each preset whose tokens live too short for it, with the
// most it can ask. The handler refuses a minValidity above a token's
// lifetime less a margin (broker.maxMinValidityFor: lifetime - min(1m,
// lifetime/10)): Xero's tokens live 1800 s, so 1740 s at most, and the
// default of 1800 the kit once had failed every run.
func TestMinValidityDefaultsFitProviders(t *testing.T) {
	t.Parallel()
	broker, err := parsePackage("broker")
	if err != nil {
		t.Fatal(err)
	}
	const rule = "lifetime - min(time.Minute, lifetime/10)"
	body := broker.funcBody("maxMinValidityFor")
	if !strings.Contains(body, rule) {
		t.Fatalf("broker.maxMinValidityFor no longer returns %s; update this test:\n%s", rule, body)
	}
	most := func(lifetime time.Duration) int { return int((lifetime - min(time.Minute, lifetime/10)) / time.Second) }
	if most(30*time.Minute) != 1740 {
		t.Fatalf("most(30m) = %d", most(30*time.Minute))
	}
	lifetimes, err := presetLifetimes()
	if err != nil {
		t.Fatal(err)
	}
	if lifetimes["xero"] != 30*time.Minute || len(lifetimes) < 10 {
		t.Fatalf("presets read: %v; want xero at 30m among them", lifetimes)
	}
	readme := readText(t, "README.md")
	for _, p := range loadKit(t).pipelines {
		prm, ok := p.Parameters["minValiditySeconds"]
		if !ok {
			t.Errorf("%s: no minValiditySeconds parameter", p.path)
			continue
		}
		def, _ := prm.DefaultValue.(float64)
		for name, lifetime := range lifetimes {
			switch {
			case lifetime >= 30*time.Minute && int(def) > most(lifetime):
				t.Errorf("%s: minValiditySeconds defaults to %v, but preset %s's tokens live %v: the handler grants at most %d, and every run would fail", p.path, def, name, lifetime, most(lifetime))
			case int(def) > most(lifetime) && !regexp.MustCompile("`"+regexp.QuoteMeta(name)+"`[^\n]*\\b"+strconv.Itoa(most(lifetime))+"\\b").MatchString(readme):
				t.Errorf("README.md: preset %s's tokens live %v, below %s's default minValiditySeconds %v; say on one line that `%s` allows at most %d", name, lifetime, p.path, def, name, most(lifetime))
			}
		}
	}
}

// presetLifetimes reads each provider preset's DefaultLifetime from
// handler/internal/config/presets.go.
func presetLifetimes() (map[string]time.Duration, error) {
	config, err := parsePackage("config")
	if err != nil {
		return nil, err
	}
	out := map[string]time.Duration{}
	var firstErr error
	for _, f := range config.files {
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			var name string
			var lifetime ast.Expr
			for _, e := range lit.Elts {
				kv, ok := e.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				switch k, _ := kv.Key.(*ast.Ident); {
				case k == nil:
				case k.Name == "Name":
					name, _ = stringLit(kv.Value)
				case k.Name == "DefaultLifetime":
					lifetime = kv.Value
				}
			}
			if name != "" && lifetime != nil {
				d, err := config.durationExpr(lifetime)
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("preset %s: %v", name, err)
				}
				out[name] = d
			}
			return true
		})
	}
	return out, firstErr
}

// ---------------------------------------------------------------------------
// No secret in the kit.

// credentialHeader names headers whose values are credentials.
var credentialHeader = regexp.MustCompile(`(?i)^(authorization|x-functions-key|.*(key|token|secret|password).*)$`)

var (
	jwtLiteral    = regexp.MustCompile(`^eyJ[A-Za-z0-9_-]{10,}\.`)
	base64Literal = regexp.MustCompile(`^[A-Za-z0-9+/_-]{32,}={0,2}$`)
)

// credentialLike reports whether s looks like a credential rather than a
// name, a URL or prose: a JWT, or a long unbroken run of base64 with digits
// in it (function keys are 56 characters of it; long identifiers have no
// digits).
func credentialLike(s string) bool {
	return jwtLiteral.MatchString(s) || (base64Literal.MatchString(s) && strings.ContainsAny(s, "0123456789"))
}

func TestNoSecretInTheKit(t *testing.T) {
	t.Parallel()
	kit := loadKit(t)
	for _, f := range kit.files {
		for _, problem := range secretProblems(f.doc) {
			t.Errorf("%s: %s", f.path, problem)
		}
	}
}

// TestSecretProblems shows that secretProblems finds what it is for, so
// that TestNoSecretInTheKit passing means something.
func TestSecretProblems(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		json string
		want int
	}{
		{"key from an activity", `{"headers": {"x-functions-key": {"value": "@activity('Get function key').output.value", "type": "Expression"}}}`, 0},
		{"bearer interpolated", `{"headers": {"Authorization": {"value": "Bearer @{activity('Get token').output.access_token}", "type": "Expression"}}}`, 0},
		{"header that is not a credential", `{"headers": {"Accept": "application/json"}}`, 0},
		{"literal function key", `{"headers": {"x-functions-key": "not-an-expression"}}`, 1},
		{"literal bearer", `{"additionalHeaders": {"Authorization": "Bearer abc"}}`, 1},
		{"expression type with a literal", `{"authHeaders": {"x-api-key": {"value": "abc", "type": "Expression"}}}`, 1},
		{"secure string", `{"password": {"type": "SecureString", "value": "x"}}`, 1},
		{"key in the URL", `{"url": "https://app.azurewebsites.net/api/token/xero?code=abc"}`, 1},
		{"key-like string", `{"description": "Q2hhbmdlTWVDaGFuZ2VNZUNoYW5nZU1lQ2hhbmdlTWU="}`, 1},
		{"JWT", `{"value": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"}`, 1},
		{"prose", `{"description": "Reads the function key from the factory's Key Vault."}`, 0},
		{"long identifier", `{"type": "AzureBlobFSWriteSettingsWithAVeryLongName"}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var doc any
			if err := json.Unmarshal([]byte(tt.json), &doc); err != nil {
				t.Fatal(err)
			}
			if got := secretProblems(doc); len(got) != tt.want {
				t.Errorf("secretProblems(%s) = %q, want %d problem(s)", tt.json, got, tt.want)
			}
		})
	}
}

func secretProblems(doc any) []string {
	var problems []string
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			if typ, _ := v["type"].(string); strings.EqualFold(typ, "SecureString") {
				problems = append(problems, at+": a SecureString stores the secret in the factory (and its Git repository); reference Key Vault instead")
				return
			}
			for k, sub := range v {
				if slices.Contains([]string{"headers", "additionalHeaders", "authHeaders", "authHeader"}, k) {
					if hs, ok := sub.(map[string]any); ok {
						for name, hv := range hs {
							if credentialHeader.MatchString(name) && !isExpression(hv) {
								problems = append(problems, fmt.Sprintf("%s.%s.%s is a literal; a credential must come from an expression (Key Vault, or the token activity's output)", at, k, name))
							}
						}
					}
				}
				walk(sub, at+"."+k)
			}
		case []any:
			for i, sub := range v {
				walk(sub, fmt.Sprintf("%s[%d]", at, i))
			}
		case string:
			if strings.Contains(v, "?code=") || strings.Contains(v, "&code=") {
				problems = append(problems, at+": a function key in a URL (code=) is logged with the URL; send the x-functions-key header")
			}
			if credentialLike(v) {
				problems = append(problems, at+": looks like a credential (a long base64 run or a JWT)")
			}
		}
	}
	walk(doc, "$")
	return problems
}

// isExpression reports whether Data Factory evaluates v at run time rather
// than sending it as it is, and whether it does more than spell a constant.
func isExpression(v any) bool {
	var val value
	data, _ := json.Marshal(v)
	if json.Unmarshal(data, &val) != nil {
		return false
	}
	return val.expression && (strings.Contains(val.text, "activity(") || strings.Contains(val.text, "parameters."))
}

// ---------------------------------------------------------------------------
// References between the kit's files.

func TestReferencesResolve(t *testing.T) {
	t.Parallel()
	kit := loadKit(t)
	for _, f := range kit.files {
		for _, ref := range references(f.doc) {
			target := kit.find(ref.kind, ref.name)
			if target == nil {
				t.Errorf("%s: references %s %q, which is not in the kit (%s/%s.json)", f.path, ref.kind, ref.name, ref.kind, ref.name)
				continue
			}
			for name := range ref.params {
				if _, ok := target.params[name]; !ok {
					t.Errorf("%s: passes parameter %q to %s, which does not declare it", f.path, name, target.path)
				}
			}
			for name, prm := range target.params {
				if _, passed := ref.params[name]; !passed && prm.DefaultValue == nil {
					t.Errorf("%s: does not pass parameter %q, which %s requires", f.path, name, target.path)
				}
			}
		}
		// Inside a dataset or linked service, dataset()/linkedService()
		// name its own parameters.
		refs := scanExpressions(f.raw)
		for kind, names := range map[string][]string{"dataset": refs.datasetParams, "linkedService": refs.linkedServiceParams} {
			for _, name := range names {
				if f.kind != kind {
					t.Errorf("%s: reads %s().%s outside a %s", f.path, kind, name, kind)
				} else if _, ok := f.params[name]; !ok {
					t.Errorf("%s: reads %s().%s, which is not declared", f.path, kind, name)
				}
			}
		}
	}
}

type reference struct {
	kind, name string
	params     map[string]any
}

func references(doc any) []reference {
	var refs []reference
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			name, _ := v["referenceName"].(string)
			typ, _ := v["type"].(string)
			kind := map[string]string{"DatasetReference": "dataset", "LinkedServiceReference": "linkedService"}[typ]
			if name != "" && kind != "" {
				params, _ := v["parameters"].(map[string]any)
				refs = append(refs, reference{kind: kind, name: name, params: params})
			}
			for _, sub := range v {
				walk(sub)
			}
		case []any:
			for _, sub := range v {
				walk(sub)
			}
		}
	}
	walk(doc)
	return refs
}

// ---------------------------------------------------------------------------
// The guides against the handler.

func TestREADMEDocumentsEveryAnswer(t *testing.T) {
	t.Parallel()
	h := loadHandler(t)
	readme := readText(t, "README.md")
	rows := tableRows(readme)
	for _, field := range h.errorFields {
		if !slices.ContainsFunc(rows, func(cells []string) bool { return cells[0] == "`"+field+"`" }) {
			t.Errorf("README.md has no table row | `%s` | …; it is a field of every error body (errorBody in handler/internal/functions)", field)
		}
	}
	for status, code := range h.statuses {
		found := slices.ContainsFunc(rows, func(cells []string) bool {
			return len(cells) >= 2 && cells[0] == strconv.Itoa(status) && strings.Contains(cells[1], "`"+code+"`")
		})
		if !found {
			t.Errorf("README.md has no table row | %d | `%s` | …; the handler answers with it (statusOf in handler/internal/functions)", status, code)
		}
	}
	for _, p := range loadKit(t).pipelines {
		if !strings.Contains(readme, "("+p.path+")") {
			t.Errorf("README.md does not link %s", p.path)
		}
	}
}

func TestMigrationNamesTheSecrets(t *testing.T) {
	t.Parallel()
	h := loadHandler(t)
	guide := readText(t, "MIGRATION.md")
	for _, suffix := range h.secretSuffixes {
		if !strings.Contains(guide, "`<name>"+suffix+"`") {
			t.Errorf("MIGRATION.md does not name the default secret `<name>%s` (DefaultSecretNames in handler/internal/broker)", suffix)
		}
	}
	for _, field := range h.secretFields {
		if !strings.Contains(guide, "`"+field+"`") {
			t.Errorf("MIGRATION.md does not show the connections file's secrets.%s override (secretFields in handler/internal/config)", field)
		}
	}
}

// TestGuideLinksResolve checks the relative links of the guides, and of the
// deployment guide that leads to them, down to the heading a link names.
func TestGuideLinksResolve(t *testing.T) {
	t.Parallel()
	link := regexp.MustCompile(`\]\(([^)#\s]*)(?:#([^)\s]*))?\)`)
	for _, doc := range []string{"README.md", "MIGRATION.md", filepath.Join(repoRoot, "infra", "README.md")} {
		for _, m := range link.FindAllStringSubmatch(readText(t, doc), -1) {
			target, fragment := m[1], m[2]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path := doc // a bare #fragment is in the same file
			if target != "" {
				path = filepath.Join(filepath.Dir(doc), filepath.FromSlash(target))
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s links %s, which does not exist", doc, target)
				continue
			}
			if fragment != "" && !slices.Contains(headingAnchors(readText(t, path)), fragment) {
				t.Errorf("%s links %s#%s, but %s has no such heading", doc, target, fragment, path)
			}
		}
	}
}

// headingAnchors are the anchors GitHub gives a Markdown file's headings:
// lower case, punctuation dropped, spaces to hyphens.
func headingAnchors(md string) []string {
	var out []string
	for line := range strings.Lines(md) {
		text, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " ")
		if !ok || !strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Map(func(r rune) rune {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				return unicode.ToLower(r)
			case r == ' ':
				return '-'
			}
			return -1
		}, strings.TrimSpace(text)))
	}
	return out
}

// ---------------------------------------------------------------------------
// The kit, decoded.

type kit struct {
	files     []*kitFile
	pipelines []*pipeline
}

type kitFile struct {
	path, kind string
	Name       string `json:"name"`
	Properties struct {
		Parameters map[string]parameter `json:"parameters"`
	} `json:"properties"`
	params map[string]parameter
	doc    any
	raw    []byte
}

type parameter struct {
	Type         string `json:"type"`
	DefaultValue any    `json:"defaultValue"`
}

type pipeline struct {
	*kitFile
	Activities []*activity
	Parameters map[string]parameter
}

type activity struct {
	Name      string `json:"name"`
	Type      string `json:"type"`
	DependsOn []struct {
		Activity             string   `json:"activity"`
		DependencyConditions []string `json:"dependencyConditions"`
	} `json:"dependsOn"`
	Policy *struct {
		Timeout                string `json:"timeout"`
		Retry                  int    `json:"retry"`
		RetryIntervalInSeconds int    `json:"retryIntervalInSeconds"`
		SecureOutput           bool   `json:"secureOutput"`
		SecureInput            bool   `json:"secureInput"`
	} `json:"policy"`
	TypeProperties json.RawMessage `json:"typeProperties"`
	raw            json.RawMessage
}

// webActivity is a Web activity's typeProperties.
type webActivity struct {
	Method             string           `json:"method"`
	URL                value            `json:"url"`
	Headers            map[string]value `json:"headers"`
	HTTPRequestTimeout string           `json:"httpRequestTimeout"`
	Authentication     *struct {
		Type     string `json:"type"`
		Resource value  `json:"resource"`
	} `json:"authentication"`
}

// value is a property that may hold dynamic content: a string, or
// {"value": "...", "type": "Expression"} as Data Factory Studio writes it.
type value struct {
	text       string
	expression bool
}

func (v *value) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		// A leading @ makes the whole string an expression (@@ escapes it);
		// @{...} interpolates one into a string.
		v.text, v.expression = s, (strings.HasPrefix(s, "@") && !strings.HasPrefix(s, "@@")) || strings.Contains(s, "@{")
		return nil
	}
	var e struct {
		Value string `json:"value"`
		Type  string `json:"type"`
	}
	if err := json.Unmarshal(data, &e); err != nil {
		return err
	}
	v.text, v.expression = e.Value, e.Type == "Expression"
	return nil
}

var (
	kitOnce sync.Once
	kitData *kit
	kitErr  error
)

// loadKit reads and decodes the kit once per test binary.
func loadKit(t *testing.T) *kit {
	t.Helper()
	kitOnce.Do(func() { kitData, kitErr = readKit() })
	if kitErr != nil {
		t.Fatal(kitErr)
	}
	return kitData
}

func readKit() (*kit, error) {
	k := &kit{}
	for _, kind := range kitFolders {
		paths, err := filepath.Glob(filepath.Join(kind, "*.json"))
		if err != nil {
			return nil, err
		}
		for _, path := range paths {
			data, err := os.ReadFile(path)
			if err != nil {
				return nil, err
			}
			f := &kitFile{path: filepath.ToSlash(path), kind: kind, raw: data}
			if err := json.Unmarshal(data, f); err != nil {
				return nil, fmt.Errorf("%s: %v", path, err)
			}
			if err := json.Unmarshal(data, &f.doc); err != nil {
				return nil, fmt.Errorf("%s: %v", path, err)
			}
			f.params = f.Properties.Parameters
			k.files = append(k.files, f)
			if kind == "pipeline" {
				p, err := decodePipeline(f)
				if err != nil {
					return nil, fmt.Errorf("%s: %v", path, err)
				}
				k.pipelines = append(k.pipelines, p)
			}
		}
	}
	return k, nil
}

func decodePipeline(f *kitFile) (*pipeline, error) {
	var doc struct {
		Properties struct {
			Activities []json.RawMessage `json:"activities"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(f.raw, &doc); err != nil {
		return nil, err
	}
	p := &pipeline{kitFile: f, Parameters: f.params}
	for _, raw := range doc.Properties.Activities {
		a := &activity{raw: raw}
		if err := json.Unmarshal(raw, a); err != nil {
			return nil, err
		}
		p.Activities = append(p.Activities, a)
	}
	return p, nil
}

func (k *kit) find(kind, name string) *kitFile {
	for _, f := range k.files {
		if f.kind == kind && f.Name == name {
			return f
		}
	}
	return nil
}

func (p *pipeline) activity(name string) *activity {
	for _, a := range p.Activities {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// dependsOn reports whether activity from runs after activity on.
func (p *pipeline) dependsOn(from, on string) bool {
	seen := map[string]bool{}
	var walk func(name string) bool
	walk = func(name string) bool {
		a := p.activity(name)
		if a == nil || seen[name] {
			return false
		}
		seen[name] = true
		for _, d := range a.DependsOn {
			if d.Activity == on || walk(d.Activity) {
				return true
			}
		}
		return false
	}
	return walk(from)
}

// tokenActivity is the one activity calling the handler's token route: a
// Web activity, or an Azure Function activity.
func (p *pipeline) tokenActivity(t *testing.T, h *handlerSurface) *activity {
	t.Helper()
	var found []*activity
	for _, a := range p.Activities {
		if a.Type != "WebActivity" && a.Type != "AzureFunctionActivity" {
			continue
		}
		if h.matchTokenPath(parseURL(a.web(t).URL.text).path) == nil {
			found = append(found, a)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: want exactly one Web or Azure Function activity calling %s, found %d", p.path, h.tokenRoute(), len(found))
	}
	return found[0]
}

// azureFunctionTimeout is how long an Azure Function activity waits: "Azure
// Functions times out after 230 seconds regardless of the functionTimeout
// setting" (https://learn.microsoft.com/azure/data-factory/control-flow-azure-function-activity,
// "Timeout and long running functions").
const azureFunctionTimeout = 230 * time.Second

// web returns a Web activity's typeProperties, or what an Azure Function
// activity sends, as a Web activity would say it: Data Factory calls the
// linked service's functionAppUrl + "/api/" + functionName, query included
// ("Routing and queries", the page above), with the linked service's
// function key in x-functions-key.
func (a *activity) web(t *testing.T) webActivity {
	t.Helper()
	var w webActivity
	if a.Type != "AzureFunctionActivity" {
		if err := json.Unmarshal(a.TypeProperties, &w); err != nil {
			t.Fatalf("activity %q: typeProperties: %v", a.Name, err)
		}
		return w
	}
	var af struct {
		FunctionName value            `json:"functionName"`
		Method       string           `json:"method"`
		Headers      map[string]value `json:"headers"`
	}
	var ref struct {
		LinkedServiceName struct {
			ReferenceName string `json:"referenceName"`
		} `json:"linkedServiceName"`
	}
	if err := json.Unmarshal(a.TypeProperties, &af); err != nil {
		t.Fatalf("activity %q: typeProperties: %v", a.Name, err)
	}
	if err := json.Unmarshal(a.raw, &ref); err != nil {
		t.Fatalf("activity %q: %v", a.Name, err)
	}
	ls := loadKit(t).find("linkedService", ref.LinkedServiceName.ReferenceName)
	if ls == nil {
		t.Fatalf("activity %q: linked service %q is not in the kit", a.Name, ref.LinkedServiceName.ReferenceName)
	}
	var fn struct {
		Properties struct {
			Type           string `json:"type"`
			TypeProperties struct {
				FunctionAppURL value `json:"functionAppUrl"`
				FunctionKey    struct {
					Type       string `json:"type"`
					SecretName value  `json:"secretName"`
				} `json:"functionKey"`
			} `json:"typeProperties"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(ls.raw, &fn); err != nil || fn.Properties.Type != "AzureFunction" {
		t.Fatalf("%s: not an AzureFunction linked service (%v)", ls.path, err)
	}
	tp := fn.Properties.TypeProperties
	w.Method, w.Headers = af.Method, af.Headers
	w.URL = value{text: strings.TrimSuffix(tp.FunctionAppURL.text, "/") + "/api/" + af.FunctionName.text, expression: af.FunctionName.expression}
	w.HTTPRequestTimeout = fmt.Sprintf("00:%02d:%02d", int(azureFunctionTimeout.Minutes()), int(azureFunctionTimeout.Seconds())%60)
	if w.Headers == nil {
		w.Headers = map[string]value{}
	}
	// A Key Vault reference is read when the activity runs, like an
	// expression; a literal key would be a secret in the factory.
	if tp.FunctionKey.Type == "AzureKeyVaultSecret" && tp.FunctionKey.SecretName.text != "" {
		w.Headers["x-functions-key"] = value{text: "@linkedService().functionKey", expression: true}
	}
	return w
}

func headerValue(headers map[string]value, name string) (value, bool) {
	for k, v := range headers {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return value{}, false
}

// expressionRefs is what the expressions in a piece of JSON refer to.
type expressionRefs struct {
	activities          []activityRef
	pipelineParams      []string
	datasetParams       []string
	linkedServiceParams []string
}

type activityRef struct {
	name   string
	output bool   // activity('x').output...
	field  string // activity('x').output.<field>
}

var (
	activityRefPattern = regexp.MustCompile(`activity\('([^']*)'\)(\.output(?:\.([A-Za-z_][A-Za-z0-9_]*))?)?`)
	pipelineParamRef   = regexp.MustCompile(`pipeline\(\)\.parameters\.([A-Za-z_][A-Za-z0-9_]*)`)
	datasetParamRef    = regexp.MustCompile(`dataset\(\)\.([A-Za-z_][A-Za-z0-9_]*)`)
	linkedServiceRef   = regexp.MustCompile(`linkedService\(\)\.([A-Za-z_][A-Za-z0-9_]*)`)
)

// scanExpressions finds the references in every string of raw. Descriptions
// are prose and skipped.
func scanExpressions(raw []byte) expressionRefs {
	var refs expressionRefs
	var doc any
	if json.Unmarshal(raw, &doc) != nil {
		return refs
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, sub := range v {
				if k != "description" {
					walk(sub)
				}
			}
		case []any:
			for _, sub := range v {
				walk(sub)
			}
		case string:
			for _, m := range activityRefPattern.FindAllStringSubmatch(v, -1) {
				refs.activities = append(refs.activities, activityRef{name: m[1], output: m[2] != "", field: m[3]})
			}
			for _, m := range pipelineParamRef.FindAllStringSubmatch(v, -1) {
				refs.pipelineParams = append(refs.pipelineParams, m[1])
			}
			for _, m := range datasetParamRef.FindAllStringSubmatch(v, -1) {
				refs.datasetParams = append(refs.datasetParams, m[1])
			}
			for _, m := range linkedServiceRef.FindAllStringSubmatch(v, -1) {
				refs.linkedServiceParams = append(refs.linkedServiceParams, m[1])
			}
		}
	}
	walk(doc)
	return refs
}

// interpolation is one @{...} in a string; the kit's expressions hold no
// braces of their own.
var interpolation = regexp.MustCompile(`@\{[^{}]*\}`)

type splitURL struct{ scheme, path, query string }

// parseURL splits a URL that may hold @{...} interpolations, which
// url.Parse would reject in the host.
func parseURL(s string) splitURL {
	var u splitURL
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		u.scheme, s = scheme, rest
	}
	s, u.query, _ = strings.Cut(s, "?")
	_, path, _ := strings.Cut(s, "/") // the host may be an expression
	u.path = "/" + path
	return u
}

// parseTimeSpan reads a .NET TimeSpan as Data Factory writes it:
// [d.]hh:mm:ss.
func parseTimeSpan(t *testing.T, s string) time.Duration {
	t.Helper()
	m := regexp.MustCompile(`^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$`).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("%q is not a [d.]hh:mm:ss time span", s)
	}
	var parts [4]int
	for i := range parts {
		parts[i], _ = strconv.Atoi(m[i+1]) // an absent day is ""
	}
	return time.Duration(parts[0])*24*time.Hour + time.Duration(parts[1])*time.Hour +
		time.Duration(parts[2])*time.Minute + time.Duration(parts[3])*time.Second
}

func readText(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// tableRows returns the cells of every Markdown table row, trimmed.
func tableRows(md string) [][]string {
	var rows [][]string
	for line := range strings.Lines(md) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			continue
		}
		var cells []string
		for c := range strings.SplitSeq(strings.Trim(line, "|"), "|") {
			cells = append(cells, strings.TrimSpace(c))
		}
		rows = append(rows, cells)
	}
	return rows
}

// ---------------------------------------------------------------------------
// The handler's surface, read from host.json, function.json and the source.

type handlerSurface struct {
	routePrefix, route string   // host.json extensions.http.routePrefix; functions/token route
	methods            []string // functions/token methods, lower case
	authLevel          string
	muxPatterns        []string       // what the handler's mux serves
	connectionName     *regexp.Regexp // the handler's rule for {connection}
	maxMinValidity     time.Duration
	callerTimeout      time.Duration // the caller timeout the handler's timeouts are sized for
	tokenFields        []string      // tokenResponse's JSON fields
	accessTokenField   string
	errorFields        []string       // errorBody's JSON fields
	statuses           map[int]string // HTTP status -> error code, from statusOf
	secretSuffixes     []string       // DefaultSecretNames: "-client-id", ...
	secretFields       []string       // the connections file's "secrets" keys
}

var (
	handlerOnce sync.Once
	handlerData *handlerSurface
	handlerErr  error
)

func loadHandler(t *testing.T) *handlerSurface {
	t.Helper()
	handlerOnce.Do(func() { handlerData, handlerErr = readHandler() })
	if handlerErr != nil {
		t.Fatal(handlerErr)
	}
	return handlerData
}

func readHandler() (*handlerSurface, error) {
	h := &handlerSurface{routePrefix: "api"} // the host's default
	var host struct {
		Extensions struct {
			HTTP struct {
				RoutePrefix *string `json:"routePrefix"`
			} `json:"http"`
		} `json:"extensions"`
	}
	if err := readJSON(filepath.Join(repoRoot, "host.json"), &host); err != nil {
		return nil, err
	}
	if p := host.Extensions.HTTP.RoutePrefix; p != nil {
		h.routePrefix = *p
	}
	var fn struct {
		Bindings []struct {
			Type      string   `json:"type"`
			Route     string   `json:"route"`
			Methods   []string `json:"methods"`
			AuthLevel string   `json:"authLevel"`
		} `json:"bindings"`
	}
	if err := readJSON(filepath.Join(repoRoot, "functions", "token", "function.json"), &fn); err != nil {
		return nil, err
	}
	for _, b := range fn.Bindings {
		if b.Type == "httpTrigger" {
			// The host's defaults: the function's name, and a function key.
			h.route, h.authLevel = cmp.Or(b.Route, "token"), strings.ToLower(cmp.Or(b.AuthLevel, "function"))
			for _, m := range b.Methods {
				h.methods = append(h.methods, strings.ToLower(m))
			}
		}
	}
	if h.route == "" {
		return nil, fmt.Errorf("functions/token/function.json has no httpTrigger")
	}

	functions, err := parsePackage("functions")
	if err != nil {
		return nil, err
	}
	broker, err := parsePackage("broker")
	if err != nil {
		return nil, err
	}
	config, err := parsePackage("config")
	if err != nil {
		return nil, err
	}
	h.muxPatterns = functions.muxPatterns()
	// The functions' routes go through the handler's host router, a table
	// of hostRoute{template: ...} under the package's routePrefix.
	prefix, err := functions.stringValue("routePrefix")
	if err != nil {
		return nil, err
	}
	for _, tmpl := range functions.hostRouteTemplates() {
		h.muxPatterns = append(h.muxPatterns, "/"+prefix+"/"+tmpl)
	}
	if h.tokenFields, err = functions.jsonFields("tokenResponse"); err != nil {
		return nil, err
	}
	if h.errorFields, err = functions.jsonFields("errorBody"); err != nil {
		return nil, err
	}
	if h.accessTokenField, err = functions.jsonTagOf("tokenResponse", "AccessToken"); err != nil {
		return nil, err
	}
	// The rule of connection names, as config and the token route apply
	// it (broker.ValidConnectionName), written out as a regexp beside it.
	pattern, err := broker.stringValue("ConnectionNamePattern")
	if err != nil {
		return nil, err
	}
	if h.connectionName, err = regexp.Compile(pattern); err != nil {
		return nil, err
	}
	if h.maxMinValidity, err = broker.durationValue("MaxMinValidity"); err != nil {
		return nil, err
	}
	if h.callerTimeout, err = config.durationValue("callerTimeout"); err != nil {
		return nil, err
	}
	if h.statuses, err = functions.statusTable(broker); err != nil {
		return nil, err
	}
	if h.secretSuffixes, err = broker.secretSuffixes(); err != nil {
		return nil, err
	}
	if h.secretFields, err = config.stringSlice("secretFields"); err != nil {
		return nil, err
	}
	return h, nil
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	return nil
}

// tokenRoute is the path the Functions host exposes for the token function.
func (h *handlerSurface) tokenRoute() string { return "/" + h.routePrefix + "/" + h.route }

// matchTokenPath checks a path against the token route, whose wildcard
// takes a connection name.
func (h *handlerSurface) matchTokenPath(path string) error {
	want := h.tokenRoute()
	got, exp := strings.Split(strings.Trim(path, "/"), "/"), strings.Split(strings.Trim(want, "/"), "/")
	if len(got) != len(exp) {
		return fmt.Errorf("path %s does not match %s", path, want)
	}
	for i, seg := range exp {
		switch {
		case strings.HasPrefix(seg, "{"):
			// A wildcard takes a connection name, given or computed.
			if !interpolation.MatchString(got[i]) && !h.connectionName.MatchString(got[i]) {
				return fmt.Errorf("path %s: %q is neither an expression nor a connection name", path, got[i])
			}
		case got[i] != seg:
			return fmt.Errorf("path %s does not match %s", path, want)
		}
	}
	return nil
}

// checkMinValidity wants minValidity in the query: an expression, or whole
// seconds the handler accepts.
func (h *handlerSurface) checkMinValidity(query string) error {
	for kv := range strings.SplitSeq(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if k != "minValidity" {
			continue
		}
		if interpolation.MatchString(v) {
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || time.Duration(n)*time.Second > h.maxMinValidity {
			return fmt.Errorf("minValidity=%s is not whole seconds from 0 to %d", v, int(h.maxMinValidity/time.Second))
		}
		return nil
	}
	return fmt.Errorf("the URL has no minValidity: without it a token may expire while the pipeline still uses it")
}

// goPackage is the non-test source of one handler/internal package.
type goPackage struct {
	name  string
	files []*ast.File
}

func parsePackage(name string) (*goPackage, error) {
	dir := filepath.Join(repoRoot, "handler", "internal", name)
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	p := &goPackage{name: name}
	fset := token.NewFileSet()
	for _, path := range paths {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		p.files = append(p.files, f)
	}
	if len(p.files) == 0 {
		return nil, fmt.Errorf("%s: no Go files", dir)
	}
	return p, nil
}

// valueSpec finds the package-level const or var named name.
func (p *goPackage) valueSpec(name string) (ast.Expr, error) {
	for _, f := range p.files {
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok {
				continue
			}
			for _, spec := range gd.Specs {
				vs, ok := spec.(*ast.ValueSpec)
				if !ok {
					continue
				}
				for i, id := range vs.Names {
					if id.Name == name && i < len(vs.Values) {
						return vs.Values[i], nil
					}
				}
			}
		}
	}
	return nil, fmt.Errorf("package %s has no const or var %s; update adf_test.go", p.name, name)
}

func (p *goPackage) stringValue(name string) (string, error) {
	e, err := p.valueSpec(name)
	if err != nil {
		return "", err
	}
	// A string literal, or regexp.MustCompile of one.
	if call, ok := e.(*ast.CallExpr); ok && len(call.Args) == 1 {
		e = call.Args[0]
	}
	if s, ok := stringLit(e); ok {
		return s, nil
	}
	return "", fmt.Errorf("package %s: %s is not a string literal; update adf_test.go", p.name, name)
}

func (p *goPackage) stringSlice(name string) ([]string, error) {
	e, err := p.valueSpec(name)
	if err != nil {
		return nil, err
	}
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil, fmt.Errorf("package %s: %s is not a slice literal; update adf_test.go", p.name, name)
	}
	var out []string
	for _, elt := range lit.Elts {
		s, ok := stringLit(elt)
		if !ok {
			return nil, fmt.Errorf("package %s: %s holds a non-literal; update adf_test.go", p.name, name)
		}
		out = append(out, s)
	}
	return out, nil
}

// durationValue evaluates N * time.Unit.
func (p *goPackage) durationValue(name string) (time.Duration, error) {
	e, err := p.valueSpec(name)
	if err != nil {
		return 0, err
	}
	d, err := p.durationExpr(e)
	if err != nil {
		return 0, fmt.Errorf("package %s: %s: %v", p.name, name, err)
	}
	return d, nil
}

// durationExpr evaluates N * time.Unit, time.Unit, or a constant of the
// package that is one of those.
func (p *goPackage) durationExpr(e ast.Expr) (time.Duration, error) {
	units := map[string]time.Duration{"Second": time.Second, "Minute": time.Minute, "Hour": time.Hour}
	switch e := e.(type) {
	case *ast.BinaryExpr:
		n, nok := e.X.(*ast.BasicLit)
		if e.Op == token.MUL && nok && n.Kind == token.INT {
			v, err := strconv.Atoi(n.Value)
			u, uerr := p.durationExpr(e.Y)
			if err == nil && uerr == nil {
				return time.Duration(v) * u, nil
			}
		}
	case *ast.SelectorExpr:
		if x, ok := e.X.(*ast.Ident); ok && x.Name == "time" && units[e.Sel.Name] != 0 {
			return units[e.Sel.Name], nil
		}
	case *ast.Ident:
		return p.durationValue(e.Name)
	}
	return 0, fmt.Errorf("%s is not of the form N * time.Unit; update adf_test.go", render(e))
}

// funcBody renders the body of the package-level function named name.
func (p *goPackage) funcBody(name string) string {
	for _, f := range p.files {
		for _, decl := range f.Decls {
			if fd, ok := decl.(*ast.FuncDecl); ok && fd.Recv == nil && fd.Name.Name == name && fd.Body != nil {
				var b bytes.Buffer
				_ = printer.Fprint(&b, token.NewFileSet(), fd.Body)
				return b.String()
			}
		}
	}
	return ""
}

// structType finds the struct type named name.
func (p *goPackage) structType(name string) (*ast.StructType, error) {
	for _, f := range p.files {
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok {
				continue
			}
			for _, spec := range gd.Specs {
				if ts, ok := spec.(*ast.TypeSpec); ok && ts.Name.Name == name {
					if st, ok := ts.Type.(*ast.StructType); ok {
						return st, nil
					}
				}
			}
		}
	}
	return nil, fmt.Errorf("package %s has no struct %s; update adf_test.go", p.name, name)
}

func jsonName(field *ast.Field) string {
	if field.Tag == nil {
		return ""
	}
	tag, _ := strconv.Unquote(field.Tag.Value)
	name, _, _ := strings.Cut(reflect.StructTag(tag).Get("json"), ",")
	return name
}

func (p *goPackage) jsonFields(typeName string) ([]string, error) {
	st, err := p.structType(typeName)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range st.Fields.List {
		if n := jsonName(f); n != "" && n != "-" {
			out = append(out, n)
		}
	}
	return out, nil
}

func (p *goPackage) jsonTagOf(typeName, field string) (string, error) {
	st, err := p.structType(typeName)
	if err != nil {
		return "", err
	}
	for _, f := range st.Fields.List {
		for _, id := range f.Names {
			if id.Name == field && jsonName(f) != "" {
				return jsonName(f), nil
			}
		}
	}
	return "", fmt.Errorf("package %s: %s has no field %s with a json tag; update adf_test.go", p.name, typeName, field)
}

// muxPatterns are the paths of every mux.Handle and mux.HandleFunc call,
// without a method prefix.
func (p *goPackage) muxPatterns() []string {
	var out []string
	for _, f := range p.files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
				return true
			}
			if s, ok := stringLit(call.Args[0]); ok {
				if i := strings.IndexByte(s, '/'); i >= 0 {
					out = append(out, s[i:])
				}
			}
			return true
		})
	}
	return out
}

// hostRouteTemplates are the template fields of every hostRoute literal:
// the routes the handler's host router serves, without routePrefix.
func (p *goPackage) hostRouteTemplates() []string {
	var out []string
	for _, f := range p.files {
		ast.Inspect(f, func(n ast.Node) bool {
			kv, ok := n.(*ast.KeyValueExpr)
			if !ok {
				return true
			}
			if key, ok := kv.Key.(*ast.Ident); ok && key.Name == "template" {
				if s, ok := stringLit(kv.Value); ok {
					out = append(out, s)
				}
			}
			return true
		})
	}
	return out
}

// statusTable reads the HTTP statuses the handler answers with, as HTTP
// status -> the error code's string: the broker's vocabulary (the answers
// table in handler/internal/broker/failures.go, which statusOf looks up)
// and the codes statusOf answers itself (if code == X { return http.StatusY }).
func (p *goPackage) statusTable(broker *goPackage) (map[int]string, error) {
	statusByName := map[string]int{}
	for code := 100; code < 600; code++ {
		if text := http.StatusText(code); text != "" {
			statusByName["Status"+strings.Map(func(r rune) rune {
				if unicode.IsLetter(r) {
					return r
				}
				return -1
			}, text)] = code
		}
	}
	statusOf := func(e ast.Expr) (int, error) {
		if sel, ok := e.(*ast.SelectorExpr); ok && statusByName[sel.Sel.Name] != 0 {
			return statusByName[sel.Sel.Name], nil
		}
		return 0, fmt.Errorf("%s is not a net/http status constant this test knows; update adf_test.go", render(e))
	}
	table := map[int]string{}
	var problem error
	add := func(pkg *goPackage, codeExpr, statusExpr ast.Expr) {
		status, err := statusOf(statusExpr)
		if err != nil {
			problem = err
			return
		}
		var code string
		switch e := codeExpr.(type) {
		case *ast.SelectorExpr:
			code, err = broker.stringValue(e.Sel.Name)
		case *ast.Ident:
			code, err = pkg.stringValue(e.Name)
		default:
			err = fmt.Errorf("an error code %s this test cannot read; update adf_test.go", render(e))
		}
		if err != nil {
			problem = err
			return
		}
		table[status] = code
	}
	// The broker's answers: var answers = map[ErrorCode]answer{Code: {status: http.StatusX, ...}}.
	found := false
	for _, f := range broker.files {
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok || len(vs.Names) != 1 || vs.Names[0].Name != "answers" || len(vs.Values) != 1 {
				return true
			}
			lit, ok := vs.Values[0].(*ast.CompositeLit)
			if !ok {
				return true
			}
			found = true
			for _, elt := range lit.Elts {
				kv, ok := elt.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				val, ok := kv.Value.(*ast.CompositeLit)
				if !ok {
					continue
				}
				for _, field := range val.Elts {
					if fkv, ok := field.(*ast.KeyValueExpr); ok && render(fkv.Key) == "status" {
						add(broker, kv.Key, fkv.Value)
					}
				}
			}
			return false
		})
	}
	if !found {
		return nil, fmt.Errorf("package %s has no var answers; update adf_test.go", broker.name)
	}
	// statusOf's own: if code == X { return http.StatusY }.
	for _, f := range p.files {
		for _, decl := range f.Decls {
			d, ok := decl.(*ast.FuncDecl)
			if !ok || d.Name.Name != "statusOf" {
				continue
			}
			ast.Inspect(d, func(n ast.Node) bool {
				is, ok := n.(*ast.IfStmt)
				if !ok || len(is.Body.List) != 1 {
					return true
				}
				cond, ok := is.Cond.(*ast.BinaryExpr)
				ret, ok2 := is.Body.List[0].(*ast.ReturnStmt)
				if ok && ok2 && cond.Op == token.EQL && len(ret.Results) == 1 {
					add(p, cond.Y, ret.Results[0])
				}
				return true
			})
		}
	}
	if problem != nil {
		return nil, problem
	}
	if len(table) == 0 {
		return nil, fmt.Errorf("no HTTP status this test can read; update adf_test.go")
	}
	return table, nil
}

// secretSuffixes reads the "-client-id"-like literals DefaultSecretNames
// appends to the connection name.
func (p *goPackage) secretSuffixes() ([]string, error) {
	var out []string
	for _, f := range p.files {
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Name.Name != "DefaultSecretNames" {
				continue
			}
			ast.Inspect(fn, func(n ast.Node) bool {
				if s, ok := stringLit(n); ok && strings.HasPrefix(s, "-") {
					out = append(out, s)
				}
				return true
			})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("package %s: DefaultSecretNames has no \"-suffix\" literals; update adf_test.go", p.name)
	}
	return out, nil
}

func stringLit(n ast.Node) (string, bool) {
	lit, ok := n.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// render prints an expression as Go source, for a message.
func render(e ast.Expr) string {
	var b bytes.Buffer
	if err := printer.Fprint(&b, token.NewFileSet(), e); err != nil {
		return fmt.Sprintf("%T", e)
	}
	return b.String()
}
