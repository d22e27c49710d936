package infra

// These tests hold the Bicep templates against the handler's code. No Bicep
// compiler runs here, so they read the .bicep text with the small reader at
// the end of this file (declarations, decorators, object literals, strings,
// comments), and the handler's Go source with go/ast. TestBicepSyntax runs
// the tree-sitter Bicep grammar over every file on top.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// repoRoot is the module root; go test runs in infra/.
const repoRoot = ".."

// ---------------------------------------------------------------------------
// What the templates must say, as tables.

type builtInRole struct {
	key, name, guid string
	scopeType       string // the resource type the role is assigned on
}

// builtInRoles are the only roles the app's identity may hold, by the key
// modules/roles.bicep gives them. The GUIDs are Azure's built-in role
// definitions (the same in every subscription), checked against
// MicrosoftDocs/azure-docs articles/role-based-access-control/built-in-roles/
// security.md, storage.md and monitor.md.
var builtInRoles = []builtInRole{
	{"keyVaultSecretsOfficer", "Key Vault Secrets Officer", "b86a8fe4-44ce-4948-aee5-eccb2c155cd7", "Microsoft.KeyVault/vaults"},
	{"storageBlobDataOwner", "Storage Blob Data Owner", "b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "Microsoft.Storage/storageAccounts"},
	{"storageTableDataContributor", "Storage Table Data Contributor", "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", "Microsoft.Storage/storageAccounts"},
	{"monitoringMetricsPublisher", "Monitoring Metrics Publisher", "3913510d-42f4-4e42-8a64-420c390055eb", "Microsoft.Insights/components"},
	// security.md, "Key Vault Crypto User"
	// (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/security#key-vault-crypto-user):
	// keys/read and keys/sign/action among its data actions.
	{"keyVaultCryptoUser", "Key Vault Crypto User", "12338af0-0e69-4776-bea7-57ae8d297424", "Microsoft.KeyVault/vaults"},
}

// How each setting the handler reads reaches it on Azure.
type provision string

const (
	// fromTemplate: modules/functionapp.bicep sets it.
	fromTemplate provision = "set by the template"
	// ifUserAssigned: set when the app runs as a user-assigned identity.
	ifUserAssigned provision = "set by the template when a user-assigned identity is given"
	// byPlatform: the Functions host or App Service sets it; an app setting
	// would override or fake it.
	byPlatform provision = "set by the platform"
	// tunable: has a default; an operator may pass it in handlerSettings.
	tunable provision = "has a default; may come from handlerSettings"
	// offAzure: for standalone or local runs; on Azure it must stay unset.
	offAzure provision = "not used on Azure"
)

// handlerSettingsOnAzure classifies every environment variable the handler
// binary reads. A new setting in the code fails
// TestAppSettingsCoverHandlerSettings until it is classified here.
var handlerSettingsOnAzure = map[string]struct {
	how provision
	why string
}{
	"FUNCTIONS_CUSTOMHANDLER_PORT":              {byPlatform, "the host picks a free port at each start"},
	"LISTEN_ADDR":                               {offAzure, "standalone mode only"},
	"CONNECTIONS":                               {fromTemplate, "the connections file, inline"},
	"CONNECTIONS_FILE":                          {offAzure, "CONNECTIONS carries the file; both set fails start-up"},
	"CONNECTIONS_BLOB":                          {tunable, "the file in a blob of the lock container; the template then leaves CONNECTIONS out (more than one set fails start-up)"},
	"KEY_VAULT_URL":                             {fromTemplate, "secrets live in the vault"},
	"LOCAL_STATE_DIR":                           {offAzure, "the local store and lock are not used on Azure"},
	"AzureWebJobsStorage":                       {offAzure, "a connection string needs an account key; the account has none"},
	"AzureWebJobsStorage__blobServiceUri":       {fromTemplate, "the blob-lease lock's endpoint, shared with the host"},
	"AzureWebJobsStorage__accountName":          {offAzure, "the template sets the service URIs instead (they work in every cloud)"},
	"LOCK_CONTAINER":                            {fromTemplate, "the lock container the template creates"},
	"AZURE_CLIENT_ID":                           {ifUserAssigned, "which managed identity the handler uses"},
	"PROVIDER_TIMEOUT":                          {tunable, ""},
	"PROVIDER_ATTEMPT_TIMEOUT":                  {tunable, ""},
	"PROVIDER_MAX_RESPONSE_BYTES":               {tunable, ""},
	"LOCK_WAIT":                                 {tunable, ""},
	"LOCK_LEASE_DURATION":                       {tunable, ""},
	"SWEEP_INTERVAL":                            {tunable, "sets the sweep horizon; the timer schedule must match (TestTimerScheduleMatchesSweepInterval)"},
	"API_KEY_SECRET":                            {offAzure, "standalone mode's key; on Azure the Functions host checks function keys, and the handler ignores it"},
	"STATUS_PAGE_GROUP":                         {fromTemplate, "statusPageGroupId, with App Service authentication: the group whose members sign in to /api/operator/status"},
	"TOKEN_CALLERS":                             {fromTemplate, "adfPrincipalId, set with STATUS_PAGE_GROUP: the token route then serves Data Factory alone (start-up fails with the group and without it)"},
	"WEBSITE_AUTH_ENABLED":                      {byPlatform, "set by App Service authentication; set by hand it would make forged X-MS-CLIENT-PRINCIPAL-ID headers trusted"},
	"LOG_LEVEL":                                 {tunable, ""},
	"KEY_VAULT_WRITE_BUDGET":                    {tunable, "this instance's share of the vault's 300 secret writes per 10 s"},
	"ACCESS_TOKEN_STORE":                        {tunable, "keyvault (DESIGN's layout) or blob (access tokens beside each lock: one vault write per rotating refresh)"},
	"IDENTITY_ENDPOINT":                         {byPlatform, "the managed identity endpoint"},
	"MSI_ENDPOINT":                              {byPlatform, "the older managed identity endpoint"},
	"APPLICATIONINSIGHTS_CONNECTION_STRING":     {fromTemplate, "where the handler's metrics go (customMetrics); the host reads it too"},
	"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": {fromTemplate, "Authorization=AAD: the metrics are posted with the managed identity's token, as the host's telemetry is"},
	"WEBSITE_SITE_NAME":                         {byPlatform, "the app's name, the metrics' cloud_RoleName"},
	"FUNCTIONS_APP_ROOT_PATH":                   {byPlatform, "the host sets it on the worker (HttpWorkerProcess.CreateWorkerProcess); the handler reads host.json's functionTimeout there"},
}

// hostSettings are app settings for the Functions host rather than the
// handler; anything else in the template's app settings is a typo.
var hostSettings = []string{
	"AzureWebJobsStorage__queueServiceUri",
	"AzureWebJobsStorage__tableServiceUri",
	"AzureWebJobsStorage__credential",
	"AzureWebJobsStorage__clientId",
	"APPLICATIONINSIGHTS_CONNECTION_STRING",
	"APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}

// flexForbidden are settings Flex Consumption rejects or ignores, or that
// would undo the identity-only storage. Source: "Flex Consumption plan
// deprecations",
// https://learn.microsoft.com/azure/azure-functions/functions-app-settings#flex-consumption-plan-deprecations
// (shared/reference/azure-functions-and-sdk-facts.md §3.2).
var flexForbidden = map[string]string{
	"FUNCTIONS_WORKER_RUNTIME":                       "Flex takes the runtime from functionAppConfig.runtime",
	"FUNCTIONS_EXTENSION_VERSION":                    "not used on Flex",
	"WEBSITE_RUN_FROM_PACKAGE":                       "Flex runs from the deployment container",
	"WEBSITE_CONTENTAZUREFILECONNECTIONSTRING":       "not used on Flex, and it holds an account key",
	"WEBSITE_CONTENTSHARE":                           "not used on Flex",
	"SCM_DO_BUILD_DURING_DEPLOYMENT":                 "not used on Flex; the zip is prebuilt",
	"ENABLE_ORYX_BUILD":                              "not used on Flex; the zip is prebuilt",
	"WEBSITE_TIME_ZONE":                              "not supported on Flex; the timer runs in UTC",
	"TZ":                                             "not supported on Flex; the timer runs in UTC",
	"APPINSIGHTS_INSTRUMENTATIONKEY":                 "local auth is off; the connection string and Entra ID are used",
	"AzureWebJobsStorage__managedIdentityResourceId": "the template uses __clientId",
}

// ---------------------------------------------------------------------------
// Template properties.

func TestTemplateProperties(t *testing.T) {
	t.Parallel()
	files := loadTemplates(t)
	equals := func(want string) func(string) error {
		return func(got string) error {
			if normalize(got) != normalize(want) {
				return fmt.Errorf("is %s, want %s", got, want)
			}
			return nil
		}
	}
	contains := func(want string) func(string) error {
		return func(got string) error {
			if !strings.Contains(got, want) {
				return fmt.Errorf("is %s, want it to contain %s", got, want)
			}
			return nil
		}
	}
	tests := []struct {
		why      string
		file     string
		resource string // symbolic name
		path     string
		check    func(string) error
	}{
		{"Flex Consumption plan", "modules/functionapp.bicep", "plan", "sku.name", equals("'FC1'")},
		{"Flex Consumption plan", "modules/functionapp.bicep", "plan", "sku.tier", equals("'FlexConsumption'")},
		{"Linux plan", "modules/functionapp.bicep", "plan", "properties.reserved", equals("true")},
		{"a Linux function app", "modules/functionapp.bicep", "site", "kind", equals("'functionapp,linux'")},
		{"a custom handler", "modules/functionapp.bicep", "site", "properties.functionAppConfig.runtime.name", equals("'custom'")},
		{"the only custom runtime version", "modules/functionapp.bicep", "site", "properties.functionAppConfig.runtime.version", equals("'1.0'")},
		{"the system-assigned identity is always on", "modules/functionapp.bicep", "site", "identity.type", contains("'SystemAssigned")},
		{"deployment from a blob container", "modules/functionapp.bicep", "site", "properties.functionAppConfig.deployment.storage.type", equals("'blobContainer'")},
		{"deployment storage reached with an identity", "modules/functionapp.bicep", "site", "properties.functionAppConfig.deployment.storage.authentication.type",
			equals("useUserAssignedIdentity ? 'UserAssignedIdentity' : 'SystemAssignedIdentity'")},
		{"HTTPS only", "modules/functionapp.bicep", "site", "properties.httpsOnly", equals("true")},
		{"TLS 1.2", "modules/functionapp.bicep", "site", "properties.siteConfig.minTlsVersion", equals("'1.2'")},
		{"no shared keys: identity only", "modules/storage.bicep", "account", "properties.allowSharedKeyAccess", equals("false")},
		{"TLS 1.2", "modules/storage.bicep", "account", "properties.minimumTlsVersion", equals("'TLS1_2'")},
		{"HTTPS only", "modules/storage.bicep", "account", "properties.supportsHttpsTrafficOnly", equals("true")},
		{"no anonymous blobs", "modules/storage.bicep", "account", "properties.allowBlobPublicAccess", equals("false")},
		{"Azure RBAC on the vault", "modules/keyvault.bicep", "vault", "properties.enableRbacAuthorization", equals("true")},
		{"soft delete", "modules/keyvault.bicep", "vault", "properties.enableSoftDelete", equals("true")},
		{"purge protection from a parameter; the API rejects false", "modules/keyvault.bicep", "vault", "properties.enablePurgeProtection",
			equals("enablePurgeProtection ? true : null")},
		{"workspace-based Application Insights", "modules/monitoring.bicep", "appInsights", "properties.WorkspaceResourceId", equals("workspace.id")},
		{"telemetry only with Entra ID", "modules/monitoring.bicep", "appInsights", "properties.DisableLocalAuth", equals("true")},
		{"the alerts query Application Insights", "modules/log-alert.bicep", "rule", "properties.scopes", contains("appInsights.id")},
		{"an alert resolves itself, and says so", "modules/log-alert.bicep", "rule", "properties.autoMitigate", equals("true")},
		{"the workbook reads Application Insights", "modules/workbook.bicep", "workbook", "properties.sourceId", equals("appInsights.id")},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.resource+"."+tt.path, func(t *testing.T) {
			d := files[tt.file].find("resource", tt.resource)
			if d == nil {
				t.Fatalf("%s: no resource %q", tt.file, tt.resource)
			}
			p := d.body.get(tt.path)
			if p == nil {
				t.Fatalf("%s: resource %s has no %s (%s)", tt.file, tt.resource, tt.path, tt.why)
			}
			if err := tt.check(p.value); err != nil {
				t.Errorf("%s:%d: %s.%s %v (%s)", tt.file, p.line, tt.resource, tt.path, err, tt.why)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Role assignments.

func TestRoleAssignments(t *testing.T) {
	t.Parallel()
	files := loadTemplates(t)
	rolesFile := files["modules/roles.bicep"]

	// The role table in the template is exactly the verified one.
	rolesVar := rolesFile.find("var", "roles")
	if rolesVar == nil || rolesVar.body == nil {
		t.Fatal("modules/roles.bicep: no object var roles")
	}
	declared := map[string]string{}
	for _, p := range rolesVar.body.props {
		guid, ok := stringLit(p.value)
		if !ok {
			t.Errorf("modules/roles.bicep:%d: roles.%s is %s, want a GUID literal", p.line, p.key, p.value)
		}
		declared[p.key] = guid
	}
	byKey := map[string]int{}
	for i, r := range builtInRoles {
		byKey[r.key] = i
		if got := declared[r.key]; got != r.guid {
			t.Errorf("modules/roles.bicep: roles.%s (%s) is %q, want %q", r.key, r.name, got, r.guid)
		}
	}
	for key := range declared {
		if _, ok := byKey[key]; !ok {
			t.Errorf("modules/roles.bicep: roles.%s is not a role the app should hold; add it to builtInRoles with its source, or remove it", key)
		}
	}

	// Every GUID anywhere in the templates is one of those roles: no other
	// role definition can slip in as a literal.
	guidRE := regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)
	for name, f := range files {
		for _, g := range guidRE.FindAllString(f.src, -1) {
			if !slices.ContainsFunc(builtInRoles, func(r builtInRole) bool { return strings.EqualFold(r.guid, g) }) {
				t.Errorf("%s: GUID %s is not one of the verified role definitions", name, g)
			}
		}
	}

	// Each assignment: a known role, on a resource of the role's type, with
	// a deterministic name.
	type assignment struct{ role, principal string }
	var got []assignment
	roleRef := regexp.MustCompile(`^subscriptionResourceId\('Microsoft\.Authorization/roleDefinitions', roles\.(\w+)\)$`)
	for name, f := range files {
		for _, d := range f.resources() {
			if !strings.HasPrefix(d.typ, "Microsoft.Authorization/roleAssignments@") {
				continue
			}
			where := fmt.Sprintf("%s:%d: %s", name, d.line, d.name)
			if name != "modules/roles.bicep" {
				t.Errorf("%s: role assignments belong in modules/roles.bicep, which holds the role table", where)
				continue
			}
			prop := func(path string) string { return d.body.value(path) }
			m := roleRef.FindStringSubmatch(normalize(prop("properties.roleDefinitionId")))
			if m == nil {
				t.Errorf("%s: roleDefinitionId is %s, want subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.<key>)", where, prop("properties.roleDefinitionId"))
				continue
			}
			i, ok := byKey[m[1]]
			if !ok {
				t.Errorf("%s: unknown role roles.%s", where, m[1])
				continue
			}
			role := builtInRoles[i]
			scope := f.find("resource", prop("scope"))
			if scope == nil || !strings.HasPrefix(scope.typ, role.scopeType+"@") {
				t.Errorf("%s: %s is assigned on %q, want a %s", where, role.name, prop("scope"), role.scopeType)
			}
			principal := prop("properties.principalId")
			if wantName := fmt.Sprintf("guid(%s.id, %s, roles.%s)", prop("scope"), principal, role.key); normalize(prop("name")) != wantName {
				t.Errorf("%s: name is %s, want %s (unique per scope, principal and role, stable across deployments)", where, prop("name"), wantName)
			}
			if principal == "principalId" && prop("properties.principalType") != "'ServicePrincipal'" {
				t.Errorf("%s: principalType of the app's identity is %s, want 'ServicePrincipal' (no directory lookup, no replication race)", where, prop("properties.principalType"))
			}
			got = append(got, assignment{role.key, principal})
		}
	}
	for _, r := range builtInRoles {
		if !slices.Contains(got, assignment{r.key, "principalId"}) {
			t.Errorf("the app's identity (principalId) is not assigned %s", r.name)
		}
	}
}

// ---------------------------------------------------------------------------
// Secrets in parameters.

// secretWord reports whether a parameter name looks like it holds a secret:
// one of its camelCase words is secret, password, key, token or credential.
// "key" followed by "vault" names the service, not a key.
func secretWord(name string) bool {
	words := splitCamel(name)
	for i, w := range words {
		switch w {
		case "secret", "secrets", "password", "passwords", "passwd", "pwd", "token", "tokens", "credential", "credentials", "sas":
			return true
		case "key", "keys":
			if i+1 >= len(words) || words[i+1] != "vault" {
				return true
			}
		}
	}
	return false
}

func splitCamel(s string) []string {
	var words []string
	start := 0
	for i := 1; i <= len(s); i++ {
		if i == len(s) || s[i] == '_' || (s[i] >= 'A' && s[i] <= 'Z' && s[i-1] >= 'a' && s[i-1] <= 'z') {
			if w := strings.Trim(s[start:i], "_"); w != "" {
				words = append(words, strings.ToLower(w))
			}
			start = i
		}
	}
	return words
}

// secretParamProblems returns one line per parameter that looks like a
// secret but is not @secure(), or has a default value.
func secretParamProblems(f *bicepFile) []string {
	var problems []string
	for _, d := range f.decls {
		if d.kind != "param" || !secretWord(d.name) {
			continue
		}
		if !slices.ContainsFunc(d.decorators, func(s string) bool { return normalize(s) == "@secure()" }) {
			problems = append(problems, fmt.Sprintf("line %d: param %s looks like a secret but is not @secure()", d.line, d.name))
		}
		if d.value != "" {
			problems = append(problems, fmt.Sprintf("line %d: param %s looks like a secret but has a default value", d.line, d.name))
		}
	}
	return problems
}

func TestSecretParameters(t *testing.T) {
	t.Parallel()
	t.Run("checker", func(t *testing.T) {
		tests := []struct {
			src  string
			want int // problems
		}{
			{"param clientSecret string\n", 1},
			{"param clientSecret string = 'x'\n", 2},
			{"@secure()\nparam clientSecret string = 'x'\n", 1},
			{"@secure()\n@description('the secret')\nparam clientSecret string\n", 0},
			{"param storageAccountKey string\n", 1},
			{"param refresh_token string\n", 1},
			{"param adminPassword string\n", 1},
			{"param keyVaultName string = 'kv'\n", 0},
			{"param keyVaultUri string\n", 0},
			{"param apiKeys array\n", 1},
			{"param sasToken string\n", 1},
			{"param connections object\n", 0},
			{"var clientSecret = 'not a param'\n", 0},
		}
		for _, tt := range tests {
			f, err := parseBicep("snippet.bicep", tt.src)
			if err != nil {
				t.Fatalf("%q: %v", tt.src, err)
			}
			if got := secretParamProblems(f); len(got) != tt.want {
				t.Errorf("%q: %d problems %q, want %d", tt.src, len(got), got, tt.want)
			}
		}
	})

	for name, f := range loadTemplates(t) {
		for _, p := range secretParamProblems(f) {
			t.Errorf("%s: %s", name, p)
		}
		for _, fn := range []string{"listKeys(", "listSecrets(", "listAccountSas(", "listServiceSas("} {
			if strings.Contains(f.src, fn) {
				t.Errorf("%s: calls %s: a key or SAS would end up in the deployment; use the managed identity", name, strings.TrimSuffix(fn, "("))
			}
		}
	}
	params := loadExampleParameters(t)
	for name := range params {
		if secretWord(name) {
			t.Errorf("main.parameters.json: %s looks like a secret; secrets are loaded into the vault after deployment, never passed as parameters", name)
		}
	}
}

// ---------------------------------------------------------------------------
// App settings against the settings the handler reads.

func TestAppSettingsCoverHandlerSettings(t *testing.T) {
	t.Parallel()
	code := loadHandlerCode(t)
	read := code.settingsRead()
	if len(read) < 10 {
		t.Fatalf("found only %d settings in the handler's code (%v); has LoadSettings moved?", len(read), read)
	}
	for _, name := range read {
		if _, ok := handlerSettingsOnAzure[name]; !ok {
			t.Errorf("the handler reads %s, which handlerSettingsOnAzure does not classify: decide how it is provided on Azure, and set it in modules/functionapp.bicep if the template must", name)
		}
	}
	for name := range handlerSettingsOnAzure {
		if !slices.Contains(read, name) {
			t.Errorf("handlerSettingsOnAzure lists %s, which the handler no longer reads", name)
		}
	}

	settings := appSettingKeys(t, loadTemplates(t)["modules/functionapp.bicep"])
	for name, c := range handlerSettingsOnAzure {
		_, set := settings[name]
		switch c.how {
		case fromTemplate, ifUserAssigned:
			if !set {
				t.Errorf("app settings lack %s (%s; %s)", name, c.how, c.why)
			}
		case byPlatform, offAzure:
			if set {
				t.Errorf("app settings set %s, which is %s (%s)", name, c.how, c.why)
			}
		}
	}
	for name, line := range settings {
		if why, bad := flexForbidden[name]; bad {
			t.Errorf("modules/functionapp.bicep:%d: app setting %s: %s", line, name, why)
			continue
		}
		if _, handler := handlerSettingsOnAzure[name]; !handler && !slices.Contains(hostSettings, name) {
			t.Errorf("modules/functionapp.bicep:%d: app setting %s is read neither by the handler nor by the host (a typo?)", line, name)
		}
	}
	// The user-assigned identity must reach the host, the handler and the
	// telemetry alike, or they would authenticate as different identities.
	ids := identityBranch(t, loadTemplates(t)["modules/functionapp.bicep"], true)
	for _, name := range []string{"AZURE_CLIENT_ID", "AzureWebJobsStorage__clientId", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"} {
		if v, ok := ids[name]; !ok || !strings.Contains(v, "userAssignedIdentityClientId") {
			t.Errorf("with a user-assigned identity, %s is %q, want the identity's client id", name, v)
		}
	}

	// Every tunable setting is documented where operators look for it: the
	// handlerSettings parameter's description and infra/README.md's app
	// settings table. SWEEP_INTERVAL is tied to the timer's schedule and
	// stays at its default (TestTimerScheduleMatchesSweepInterval).
	handlerDesc := strings.Join(loadTemplates(t)["main.bicep"].find("param", "handlerSettings").decorators, " ")
	infraReadme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	handlerRow := tableRow(string(infraReadme), "anything in `handlerSettings`")
	for name, c := range handlerSettingsOnAzure {
		if c.how != tunable || name == "SWEEP_INTERVAL" {
			continue
		}
		if !strings.Contains(handlerDesc, name) {
			t.Errorf("main.bicep: handlerSettings' @description does not name the tunable setting %s", name)
		}
		if !strings.Contains(handlerRow, "`"+name+"`") {
			t.Errorf("infra/README.md: the handlerSettings row of the app settings table does not name %s", name)
		}
	}

	// Operators tune the handler through handlerSettings; the example must
	// only use settings that exist and have defaults.
	var tuning map[string]string
	if err := json.Unmarshal(loadExampleParameters(t)["handlerSettings"], &tuning); err != nil {
		t.Fatalf("main.parameters.json: handlerSettings: %v", err)
	}
	for name := range tuning {
		if c, ok := handlerSettingsOnAzure[name]; !ok || c.how != tunable {
			t.Errorf("main.parameters.json: handlerSettings.%s is not a tunable handler setting", name)
		}
	}
}

// appSettingKeys returns the keys the appsettings resource sets, in both
// identity branches, with their line numbers.
func appSettingKeys(t *testing.T, f *bicepFile) map[string]int {
	t.Helper()
	d := f.find("resource", "settings")
	if d == nil || normalize(d.body.value("name")) != "'appsettings'" {
		t.Fatal("modules/functionapp.bicep: no resource settings named 'appsettings'")
	}
	keys := map[string]int{}
	for _, o := range f.objectsOf(d.body.value("properties")) {
		for _, p := range o.props {
			keys[p.key] = p.line
		}
	}
	if len(keys) == 0 {
		t.Fatal("modules/functionapp.bicep: found no app settings")
	}
	return keys
}

// identityBranch returns the settings of one side of the identitySettings
// ternary.
func identityBranch(t *testing.T, f *bicepFile, userAssigned bool) map[string]string {
	t.Helper()
	d := f.find("var", "identitySettings")
	if d == nil {
		t.Fatal("modules/functionapp.bicep: no var identitySettings")
	}
	cond, yes, no, ok := ternary(d.value)
	if !ok || cond != "useUserAssignedIdentity" {
		t.Fatalf("modules/functionapp.bicep: identitySettings is %s, want useUserAssignedIdentity ? {...} : {...}", d.value)
	}
	branch := no
	if userAssigned {
		branch = yes
	}
	m := map[string]string{}
	for _, o := range objectLiterals(branch) {
		for _, p := range o.props {
			m[p.key] = p.value
		}
	}
	return m
}

func TestLockContainerMatchesHandlerDefault(t *testing.T) {
	t.Parallel()
	files := loadTemplates(t)
	want := loadHandlerCode(t).constString(t, "DefaultLockContainer")

	// The literal in main.bicep.
	v := files["main.bicep"].find("var", "lockContainerName")
	if v == nil {
		t.Fatal("main.bicep: no var lockContainerName")
	}
	if got, _ := stringLit(v.value); got != want {
		t.Errorf("main.bicep:%d: lockContainerName is %s, want '%s' (config.DefaultLockContainer)", v.line, v.value, want)
	}
	// It reaches both the container and the setting.
	tests := []struct {
		module, param string
	}{
		{"modules/storage.bicep", "lockContainerName"},
		{"modules/functionapp.bicep", "lockContainerName"},
	}
	for _, tt := range tests {
		if got := files["main.bicep"].moduleParam(tt.module, tt.param); got != "lockContainerName" {
			t.Errorf("main.bicep: module %s gets %s: %q, want lockContainerName", tt.module, tt.param, got)
		}
	}
	c := files["modules/storage.bicep"].find("resource", "lockContainer")
	if c == nil || !strings.HasPrefix(c.typ, "Microsoft.Storage/storageAccounts/blobServices/containers@") || c.body.value("name") != "lockContainerName" {
		t.Errorf("modules/storage.bicep: want a container resource lockContainer named lockContainerName")
	}
	if got := appSettingValue(t, files["modules/functionapp.bicep"], "LOCK_CONTAINER"); got != "lockContainerName" {
		t.Errorf("modules/functionapp.bicep: LOCK_CONTAINER is %s, want lockContainerName", got)
	}
}

func appSettingValue(t *testing.T, f *bicepFile, key string) string {
	t.Helper()
	for _, o := range f.objectsOf(f.find("resource", "settings").body.value("properties")) {
		if p := o.get(key); p != nil {
			return p.value
		}
	}
	return ""
}

func TestTimerScheduleMatchesSweepInterval(t *testing.T) {
	t.Parallel()
	// SWEEP_INTERVAL is not set on Azure, so the handler takes tokens
	// expiring within 2 x DefaultSweepInterval as due; the timer must come at
	// least that often, or tokens would expire between sweeps.
	want := loadHandlerCode(t).constDuration(t, "DefaultSweepInterval")
	var fn struct {
		Bindings []struct {
			Type     string `json:"type"`
			Schedule string `json:"schedule"`
		} `json:"bindings"`
	}
	readJSON(t, filepath.Join(repoRoot, "functions", "refresh", "function.json"), &fn)
	if len(fn.Bindings) != 1 || fn.Bindings[0].Type != "timerTrigger" {
		t.Fatalf("functions/refresh/function.json: want one timerTrigger binding, have %+v", fn.Bindings)
	}
	m := regexp.MustCompile(`^0 \*/(\d+) \* \* \* \*$`).FindStringSubmatch(fn.Bindings[0].Schedule)
	if m == nil {
		t.Fatalf("functions/refresh/function.json: schedule %q is not of the form \"0 */N * * * *\"; teach this test its period", fn.Bindings[0].Schedule)
	}
	n, _ := strconv.Atoi(m[1])
	if got := time.Duration(n) * time.Minute; got != want {
		t.Errorf("the refresh timer runs every %s, but the handler's DefaultSweepInterval is %s", got, want)
	}
	settings := appSettingKeys(t, loadTemplates(t)["modules/functionapp.bicep"])
	if _, set := settings["SWEEP_INTERVAL"]; set {
		t.Errorf("modules/functionapp.bicep sets SWEEP_INTERVAL; this test assumes the default")
	}
}

// ---------------------------------------------------------------------------
// The alert and the outputs against what the handler logs and serves.

func TestAlertQueryMatchesHandler(t *testing.T) {
	t.Parallel()
	kqlBytes, err := os.ReadFile(filepath.Join("modules", "refresh-failures.kql"))
	if err != nil {
		t.Fatal(err)
	}
	kql := string(kqlBytes)
	code := loadHandlerCode(t)
	routePrefix := hostRoutePrefix(t)
	tokenRoute := functionRoute(t, "token")

	// Every event name the query filters on is one the handler logs.
	events := regexp.MustCompile(`"([a-z]+(?:\.[a-z_]+)+)"`).FindAllStringSubmatch(kql, -1)
	if len(events) == 0 {
		t.Error("modules/refresh-failures.kql filters on no handler log event")
	}
	for _, m := range events {
		if err := code.hasLiteral(m[1], "an event the handler logs"); err != nil {
			t.Errorf("the alert query filters on event %q, but %v", m[1], err)
		}
	}

	tests := []struct {
		inQuery string // a literal the query relies on
		holds   func() error
	}{
		{`": refresh failed: "`, func() error {
			return code.hasLiteralContaining(": refresh failed: ", "the timer sweep's invocation log line for a failed connection")
		}},
		{`name == "token"`, func() error {
			return functionExists(t, "token", "httpTrigger")
		}},
		{`"(?i)/api/token/`, func() error {
			if want := "/" + routePrefix + "/" + strings.TrimSuffix(tokenRoute, "{connection}"); want != "/api/token/" {
				return fmt.Errorf("the token route is %s{connection}, not /api/token/{connection}", want)
			}
			return nil
		}},
		{`operation_Name == "refresh"`, func() error {
			return functionExists(t, "refresh", "timerTrigger")
		}},
		{`"424"`, func() error {
			return code.usesSelector("http", "StatusFailedDependency", "the answer when the provider rejects the credentials")
		}},
		{`"502"`, func() error {
			return code.usesSelector("http", "StatusBadGateway", "the answer when the provider fails after retries")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.inQuery, func(t *testing.T) {
			if !strings.Contains(kql, tt.inQuery) {
				t.Fatalf("modules/refresh-failures.kql no longer contains %s; update this table", tt.inQuery)
			}
			if err := tt.holds(); err != nil {
				t.Errorf("the alert query relies on %s, but %v", tt.inQuery, err)
			}
		})
	}
	// The query yields what the rule measures and splits by.
	rule := loadAlertRules(t)["refreshFailures"]
	if !regexp.MustCompile(`summarize ` + regexp.QuoteMeta(rule.measure) + ` = count\(\) by connection\s*$`).MatchString(kql) {
		t.Errorf("the query must end in \"summarize %s = count() by connection\" (measureColumn and the connection dimension)", rule.measure)
	}
	if !slices.Equal(rule.dimensions, []string{"connection"}) {
		t.Errorf("modules/alerts.bicep: refreshFailures: want one dimension, connection; have %q", rule.dimensions)
	}
}

func TestOutputsMatchRoutes(t *testing.T) {
	t.Parallel()
	main := loadTemplates(t)["main.bicep"]
	prefix := "/" + hostRoutePrefix(t) + "/"
	tests := []struct {
		output, function string
	}{
		{"tokenUrlTemplate", "token"},
		{"statusUrl", "connections"},
		{"consentRedirectUri", "consent-callback"},
	}
	for _, tt := range tests {
		o := main.find("output", tt.output)
		if o == nil {
			t.Errorf("main.bicep: no output %s", tt.output)
			continue
		}
		want := "'https://${functionApp.outputs.defaultHostName}" + prefix + functionRoute(t, tt.function) + "'"
		if o.value != want {
			t.Errorf("main.bicep:%d: output %s is %s, want %s (host.json routePrefix + functions/%s route)", o.line, tt.output, o.value, want, tt.function)
		}
	}
	for _, name := range []string{"functionAppName", "defaultHostName", "keyVaultUri", "principalId"} {
		if main.find("output", name) == nil {
			t.Errorf("main.bicep: no output %s", name)
		}
	}
}

// ---------------------------------------------------------------------------
// The example parameters.

func TestExampleParameters(t *testing.T) {
	t.Parallel()
	main := loadTemplates(t)["main.bicep"]
	params := loadExampleParameters(t)
	for name := range params {
		if main.find("param", name) == nil {
			t.Errorf("main.parameters.json sets %s, which main.bicep does not declare", name)
		}
	}
	for _, d := range main.decls {
		if d.kind == "param" && d.value == "" {
			if _, ok := params[d.name]; !ok {
				t.Errorf("main.parameters.json lacks %s, which has no default", d.name)
			}
		}
	}
	// The connections are the handler's connections file. (Only its shape
	// is checked here: config.ParseConnections is internal to handler/.)
	var conns struct {
		Connections []struct {
			Name string `json:"name"`
		} `json:"connections"`
	}
	if err := json.Unmarshal(params["connections"], &conns); err != nil || len(conns.Connections) == 0 {
		t.Fatalf("main.parameters.json: connections is not {\"connections\": [...]}: %v", err)
	}
	for i, c := range conns.Connections {
		if c.Name == "" {
			t.Errorf("main.parameters.json: connections[%d] has no name", i)
		}
	}
}

// ---------------------------------------------------------------------------
// Syntax, with the tree-sitter Bicep grammar.

func TestBicepSyntax(t *testing.T) {
	t.Parallel()
	// BICEP_TOOLS_DIR (set by make test) says where the grammar is, and
	// makes its absence a failure; without it the test looks in .tools/bicep
	// and skips when nothing is there, except in CI.
	toolsDir, strict := os.LookupEnv("BICEP_TOOLS_DIR")
	if !strict {
		toolsDir = filepath.Join(repoRoot, ".tools", "bicep")
	}
	toolsDir, _ = filepath.Abs(toolsDir)
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(toolsDir, "node_modules", "tree-sitter-bicep", "tree-sitter-bicep.wasm"))
	}
	if err != nil {
		msg := fmt.Sprintf("needs node and the Bicep grammar in %s (%v); from the repository root: "+
			"npm install --no-save --no-package-lock --ignore-scripts --prefix .tools/bicep tree-sitter-bicep@1.1.0 web-tree-sitter@0.24.7", toolsDir, err)
		if strict || os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	run := func(args ...string) (string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, append([]string{filepath.Join("check", "bicep-parse.js")}, args...)...)
		cmd.Env = append(os.Environ(), "BICEP_TOOLS_DIR="+toolsDir)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		code := cmd.ProcessState.ExitCode()
		if err != nil && code < 0 {
			t.Fatalf("node: %v\n%s", err, out.String())
		}
		return out.String(), code
	}

	out, code := run(".")
	if want := fmt.Sprintf("bicep-parse: %d files parse\n", len(loadTemplates(t))); code != 0 || out != want {
		t.Errorf("templates: exit %d, output:\n%s\nwant exit 0 and %q", code, out, want)
	}

	// The check can fail: each broken file is reported where it breaks.
	tests := []struct {
		name, src string
		wantLine  int
	}{
		{"unclosed-resource", "param a string\nresource r 'A/b@2020-01-01' = {\n  name: 'x'\n", 2},
		{"missing-default", "param a string =\n", 1},
		{"stray-bracket", "var o = {\n  a: 1\n  b: ]\n}\n", 3},
		{"unclosed-call", "var x = union(a, b\nvar y = 2\n", 1},
	}
	dir := t.TempDir()
	var paths []string
	for _, tt := range tests {
		p := filepath.Join(dir, tt.name+".bicep")
		if err := os.WriteFile(p, []byte(tt.src), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, code = run(paths...)
	if code != 1 {
		t.Errorf("broken files: exit %d, want 1; output:\n%s", code, out)
	}
	for i, tt := range tests {
		if prefix := fmt.Sprintf("%s:%d:", paths[i], tt.wantLine); !strings.Contains(out, "\n"+prefix) && !strings.HasPrefix(out, prefix) {
			t.Errorf("%s: want a report starting %q; output:\n%s", tt.name, prefix, out)
		}
	}
}

// ---------------------------------------------------------------------------
// The Bicep reader's own tests.

func TestBicepReader(t *testing.T) {
	t.Parallel()
	src := `// a comment with { and '
targetScope = 'resourceGroup'

@description('a } brace and a : colon in a string')
@minLength(2)
param name string = 'x${'nested}'}y'

param plain string

var multi = '''
{ not: an object }
'''

resource acct 'Microsoft.Storage/storageAccounts@2023-05-01' existing = if (!empty(name)) {
  name: name // trailing comment
  properties: {
    'quoted-key': 'a, b'
    inline: { a: 1, b: 'c}' }
    list: [
      'x'
    ]
  }
  resource child 'blobServices' = {
    name: 'default'
  }
}

var pick = cond ? {
  a: 1
} : {
  b: '?:'
}
`
	f, err := parseBicep("snippet.bicep", src)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, d := range f.decls {
		kinds = append(kinds, d.kind+" "+d.name)
	}
	if want := []string{"targetScope ", "param name", "param plain", "var multi", "resource acct", "var pick"}; !slices.Equal(kinds, want) {
		t.Fatalf("declarations %q, want %q", kinds, want)
	}
	name := f.find("param", "name")
	if len(name.decorators) != 2 || name.value != `'x${'nested}'}y'` || name.typ != "string" || name.line != 6 {
		t.Errorf("param name: %+v", name)
	}
	if p := f.find("param", "plain"); p.value != "" || p.typ != "string" {
		t.Errorf("param plain: %+v", p)
	}
	acct := f.find("resource", "acct")
	if !acct.existing || acct.cond != "!empty(name)" || acct.typ != "Microsoft.Storage/storageAccounts@2023-05-01" {
		t.Errorf("resource acct: existing %v, cond %q, typ %q", acct.existing, acct.cond, acct.typ)
	}
	tests := []struct{ path, want string }{
		{"name", "name"},
		{"properties.quoted-key", "'a, b'"},
		{"properties.inline.a", "1"},
		{"properties.inline.b", "'c}'"},
		{"properties.list", "[\n      'x'\n    ]"},
	}
	for _, tt := range tests {
		if got := acct.body.value(tt.path); got != tt.want {
			t.Errorf("acct.%s = %q, want %q", tt.path, got, tt.want)
		}
	}
	if len(acct.body.nested) != 1 || acct.body.nested[0].name != "child" || acct.body.nested[0].body.value("name") != "'default'" {
		t.Errorf("nested resources: %+v", acct.body.nested)
	}
	if s, ok := stringLit(f.find("var", "multi").value); !ok || s != "{ not: an object }\n" {
		t.Errorf("multi-line string: %q %v", s, ok)
	}
	cond, yes, no, ok := ternary(f.find("var", "pick").value)
	if !ok || cond != "cond" || objectLiterals(yes)[0].value("a") != "1" || objectLiterals(no)[0].value("b") != "'?:'" {
		t.Errorf("ternary: %q %q %q %v", cond, yes, no, ok)
	}
	if _, err := parseBicep("bad.bicep", "resource r 'x@1' = {\n  name: 'x'\n"); err == nil {
		t.Error("an unclosed resource parsed without error")
	}
}

// ---------------------------------------------------------------------------
// Loading.

type templates map[string]*bicepFile // by path relative to infra/

func loadTemplates(t *testing.T) templates {
	t.Helper()
	files := templates{}
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".bicep") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parseBicep(path, string(src))
		if err != nil {
			return err
		}
		files[filepath.ToSlash(path)] = f
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"main.bicep", "modules/functionapp.bicep", "modules/storage.bicep", "modules/keyvault.bicep",
		"modules/monitoring.bicep", "modules/roles.bicep", "modules/alerts.bicep", "modules/log-alert.bicep", "modules/workbook.bicep"} {
		if files[want] == nil {
			t.Fatalf("%s is missing", want)
		}
	}
	return files
}

func loadExampleParameters(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	var file struct {
		Parameters map[string]struct {
			Value json.RawMessage `json:"value"`
		} `json:"parameters"`
	}
	readJSON(t, "main.parameters.json", &file)
	params := map[string]json.RawMessage{}
	for name, p := range file.Parameters {
		params[name] = p.Value
	}
	return params
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func hostRoutePrefix(t *testing.T) string {
	t.Helper()
	var host struct {
		Extensions struct {
			HTTP struct {
				RoutePrefix *string `json:"routePrefix"`
			} `json:"http"`
		} `json:"extensions"`
	}
	readJSON(t, filepath.Join(repoRoot, "host.json"), &host)
	if host.Extensions.HTTP.RoutePrefix == nil {
		return "api" // the host's default
	}
	return *host.Extensions.HTTP.RoutePrefix
}

type functionJSON struct {
	Bindings []struct {
		Type  string `json:"type"`
		Route string `json:"route"`
	} `json:"bindings"`
}

func functionRoute(t *testing.T, name string) string {
	t.Helper()
	var fn functionJSON
	readJSON(t, filepath.Join(repoRoot, "functions", name, "function.json"), &fn)
	for _, b := range fn.Bindings {
		if b.Type == "httpTrigger" {
			if b.Route == "" {
				return name
			}
			return b.Route
		}
	}
	t.Fatalf("functions/%s has no httpTrigger", name)
	return ""
}

func functionExists(t *testing.T, name, trigger string) error {
	t.Helper()
	var fn functionJSON
	data, err := os.ReadFile(filepath.Join(repoRoot, "functions", name, "function.json"))
	if err != nil {
		return fmt.Errorf("there is no function %q: %v", name, err)
	}
	if err := json.Unmarshal(data, &fn); err != nil {
		return fmt.Errorf("functions/%s/function.json: %v", name, err)
	}
	if len(fn.Bindings) == 0 || fn.Bindings[0].Type != trigger {
		return fmt.Errorf("function %q is not a %s", name, trigger)
	}
	return nil
}

// ---------------------------------------------------------------------------
// The handler's code, read with go/ast.

// handlerCode is the non-test source of every package linked into the
// handler binary (go list -deps ./handler), so a setting read by a test
// helper or a dev tool does not count.
type handlerCode struct {
	files map[string][]*ast.File // by import path
}

// loadHandlerCode reads the code once per test binary: go list takes a
// noticeable fraction of a second.
func loadHandlerCode(t *testing.T) *handlerCode {
	t.Helper()
	code, err := handlerCodeOnce()
	if err != nil {
		t.Fatal(err)
	}
	return code
}

var handlerCodeOnce = sync.OnceValues(readHandlerCode)

func readHandlerCode() (*handlerCode, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("go is not on PATH: %v", err)
	}
	cmd := exec.Command(gobin, "list", "-deps", "-f", `{{if not .Standard}}{{.ImportPath}}|{{.Dir}}|{{join .GoFiles ","}}{{end}}`, "./handler")
	cmd.Dir = repoRoot
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list -deps ./handler: %v\n%s", err, stderr.String())
	}
	root, _ := filepath.Abs(repoRoot)
	code := &handlerCode{files: map[string][]*ast.File{}}
	fset := token.NewFileSet()
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.Split(line, "|")
		if len(parts) != 3 || !strings.HasPrefix(parts[1], root+string(filepath.Separator)) {
			continue // a dependency outside this module
		}
		for _, name := range strings.Split(parts[2], ",") {
			f, err := parser.ParseFile(fset, filepath.Join(parts[1], name), nil, 0)
			if err != nil {
				return nil, err
			}
			code.files[parts[0]] = append(code.files[parts[0]], f)
		}
	}
	if code.config() == nil {
		return nil, fmt.Errorf("the handler binary no longer links handler/internal/config")
	}
	return code, nil
}

const configPath = "github.com/tokenrefresher/tokenrefresher/handler/internal/config"

func (c *handlerCode) config() []*ast.File { return c.files[configPath] }

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// settingsRead returns, sorted, the environment variables the binary reads:
// the first argument of each loader call in config.LoadSettings
// (l.get("KEY_VAULT_URL"), l.duration("LOCK_WAIT", ...)), and of every
// getenv, os.Getenv and os.LookupEnv call.
func (c *handlerCode) settingsRead() []string {
	seen := map[string]bool{}
	literalArg := func(call *ast.CallExpr) {
		if len(call.Args) == 0 {
			return
		}
		if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
			if s, err := strconv.Unquote(lit.Value); err == nil && envName.MatchString(s) {
				seen[s] = true
			}
		}
	}
	for path, files := range c.files {
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				if fd, ok := n.(*ast.FuncDecl); ok && path == configPath && fd.Name.Name == "LoadSettings" && fd.Recv == nil {
					ast.Inspect(fd.Body, func(n ast.Node) bool {
						if call, ok := n.(*ast.CallExpr); ok {
							if sel, ok := call.Fun.(*ast.SelectorExpr); ok {
								if x, ok := sel.X.(*ast.Ident); ok && x.Name == "l" {
									literalArg(call)
								}
							}
						}
						return true
					})
					return false
				}
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				switch fn := call.Fun.(type) {
				case *ast.Ident:
					if fn.Name == "getenv" {
						literalArg(call)
					}
				case *ast.SelectorExpr:
					if fn.Sel.Name == "Getenv" || fn.Sel.Name == "LookupEnv" || fn.Sel.Name == "getenv" {
						literalArg(call)
					}
				}
				return true
			})
		}
	}
	names := make([]string, 0, len(seen))
	for s := range seen {
		names = append(names, s)
	}
	sort.Strings(names)
	return names
}

// constExpr returns the expression a package-level constant of config is
// declared with.
func (c *handlerCode) constExpr(t *testing.T, name string) ast.Expr {
	t.Helper()
	for _, f := range c.config() {
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, id := range vs.Names {
					if id.Name == name && i < len(vs.Values) {
						return vs.Values[i]
					}
				}
			}
		}
	}
	t.Fatalf("config declares no constant %s", name)
	return nil
}

func (c *handlerCode) constString(t *testing.T, name string) string {
	t.Helper()
	lit, ok := c.constExpr(t, name).(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		t.Fatalf("config.%s is not a string literal", name)
	}
	s, _ := strconv.Unquote(lit.Value)
	return s
}

// constDuration evaluates a constant of the form N * time.Unit.
func (c *handlerCode) constDuration(t *testing.T, name string) time.Duration {
	t.Helper()
	units := map[string]time.Duration{"Millisecond": time.Millisecond, "Second": time.Second, "Minute": time.Minute, "Hour": time.Hour}
	be, ok := c.constExpr(t, name).(*ast.BinaryExpr)
	if ok && be.Op == token.MUL {
		lit, ok1 := be.X.(*ast.BasicLit)
		sel, ok2 := be.Y.(*ast.SelectorExpr)
		if ok1 && ok2 && lit.Kind == token.INT && units[sel.Sel.Name] != 0 {
			n, _ := strconv.Atoi(lit.Value)
			return time.Duration(n) * units[sel.Sel.Name]
		}
	}
	t.Fatalf("config.%s is not of the form N * time.Unit; teach constDuration", name)
	return 0
}

func (c *handlerCode) eachLiteral(fn func(string) bool) bool {
	for _, files := range c.files {
		for _, f := range files {
			found := false
			ast.Inspect(f, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, err := strconv.Unquote(lit.Value); err == nil && fn(s) {
						found = true
					}
				}
				return !found
			})
			if found {
				return true
			}
		}
	}
	return false
}

func (c *handlerCode) hasLiteral(s, what string) error {
	if !c.eachLiteral(func(lit string) bool { return lit == s }) {
		return fmt.Errorf("the handler has no string %q (%s)", s, what)
	}
	return nil
}

func (c *handlerCode) hasLiteralContaining(s, what string) error {
	if !c.eachLiteral(func(lit string) bool { return strings.Contains(lit, s) }) {
		return fmt.Errorf("no string in the handler contains %q (%s)", s, what)
	}
	return nil
}

func (c *handlerCode) usesSelector(pkg, name, what string) error {
	for _, files := range c.files {
		for _, f := range files {
			found := false
			ast.Inspect(f, func(n ast.Node) bool {
				if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == name {
					if x, ok := sel.X.(*ast.Ident); ok && x.Name == pkg {
						found = true
					}
				}
				return !found
			})
			if found {
				return nil
			}
		}
	}
	return fmt.Errorf("the handler never uses %s.%s (%s)", pkg, name, what)
}

// ---------------------------------------------------------------------------
// The reader: the little of Bicep's syntax these tests need.
//
// A file is a list of declarations (param, var, resource, module, output,
// ...) with their decorators. A declaration's value stays text, except that
// an object literal value is also read into properties, recursively. Strings
// (with ${} interpolation, and ''' multi-line strings) and comments are
// skipped wherever brackets are matched, so a brace or a colon inside them
// never confuses the structure. Expressions are not parsed.

type bicepFile struct {
	path  string
	src   string
	decls []*decl
}

type decl struct {
	kind       string // param, var, resource, module, output, targetScope, metadata, ...
	name       string
	typ        string   // param and output: the type; resource: 'type@version' unquoted; module: the path
	decorators []string // as written, e.g. "@secure()"
	existing   bool     // resource ... existing
	cond       string   // the condition of "= if (cond) {...}"
	value      string   // everything after "=" (and the condition); "" for a param without default
	body       *object  // value as an object literal, when it is one
	line       int
}

type object struct {
	props  []*prop
	nested []*decl // resource declarations inside a resource body
}

type prop struct {
	key   string
	value string
	obj   *object // value as an object literal, when it is one
	line  int
}

func parseBicep(path, src string) (*bicepFile, error) {
	f := &bicepFile{path: path, src: src}
	r := &reader{src: src}
	for i := r.skipSpace(0, len(src)); i < len(src); i = r.skipSpace(i, len(src)) {
		d, next, err := r.decl(i, len(src))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		f.decls = append(f.decls, d)
		i = next
	}
	return f, nil
}

type reader struct{ src string }

func (r *reader) line(i int) int { return strings.Count(r.src[:i], "\n") + 1 }

// decl reads the declaration (with its decorators) starting at i.
func (r *reader) decl(i, end int) (*decl, int, error) {
	s := r.src
	var decorators []string
	for i < end && s[i] == '@' {
		j := r.ident(i+1, end)
		if j < end && s[j] == '(' {
			j = r.close(j, end)
		}
		decorators = append(decorators, s[i:j])
		i = r.skipSpace(j, end)
	}
	j := r.ident(i, end)
	if j == i {
		return nil, 0, fmt.Errorf("line %d: unexpected %q", r.line(i), firstLine(s[i:end]))
	}
	d := &decl{kind: s[i:j], decorators: decorators, line: r.line(i)}
	switch d.kind {
	case "param", "var", "output", "resource", "module", "type", "func":
		k := r.skipBlank(j, end)
		j = r.ident(k, end)
		d.name = s[k:j]
	}
	// The header runs to "=" or the end of the line.
	k := j
	for k < end && s[k] != '\n' && s[k] != '=' {
		if s[k] == '\'' {
			k = r.skipString(k)
			continue
		}
		k++
	}
	header := strings.TrimSpace(s[j:k])
	switch d.kind {
	case "resource", "module":
		q := strings.IndexByte(s[j:k], '\'')
		if q < 0 {
			return nil, 0, fmt.Errorf("line %d: %s %s has no type", d.line, d.kind, d.name)
		}
		qe := r.skipString(j + q)
		d.typ, _ = stringLit(s[j+q : qe])
		d.existing = strings.TrimSpace(s[qe:k]) == "existing"
	case "param", "output":
		d.typ = header
	}
	if k >= end || s[k] != '=' {
		return d, k, nil
	}
	v := r.skipBlank(k+1, end)
	if strings.HasPrefix(s[v:end], "if") && r.ident(v, end) == v+2 {
		c := r.skipBlank(v+2, end)
		if c < end && s[c] == '(' {
			ce := r.close(c, end)
			d.cond = strings.TrimSpace(s[c+1 : ce-1])
			v = r.skipBlank(ce, end)
		}
	}
	e := r.valueEnd(v, end, false)
	d.value = strings.TrimSpace(s[v:e])
	if d.value == "" {
		return nil, 0, fmt.Errorf("line %d: %s %s has no value after =", d.line, d.kind, d.name)
	}
	if s[v] == '{' {
		if r.close(v, end) > end || s[r.close(v, end)-1] != '}' {
			return nil, 0, fmt.Errorf("line %d: %s %s: unclosed {", d.line, d.kind, d.name)
		}
		if r.close(v, end) == v+len(d.value) {
			d.body = r.object(v)
		}
	}
	return d, e, nil
}

var nestedResource = regexp.MustCompile(`^resource\s+\w+\s+'`)

// object reads the object literal whose "{" is at open.
func (r *reader) object(open int) *object {
	s := r.src
	end := r.close(open, len(s)) - 1 // the closing brace
	o := &object{}
	for i := open + 1; ; {
		i = r.skipSpace(i, end)
		for i < end && s[i] == ',' {
			i = r.skipSpace(i+1, end)
		}
		if i >= end {
			return o
		}
		if s[i] == '@' || nestedResource.MatchString(s[i:end]) {
			d, next, err := r.decl(i, end)
			if err == nil && d.kind == "resource" {
				o.nested = append(o.nested, d)
			}
			if err != nil || next <= i {
				return o
			}
			i = next
			continue
		}
		var key string
		k := i
		if s[i] == '\'' {
			k = r.skipString(i)
			key, _ = stringLit(s[i:k])
		} else {
			k = r.ident(i, end)
			key = s[i:k]
		}
		c := r.skipBlank(k, end)
		if k == i || c >= end || s[c] != ':' {
			// Not a property (a for-expression body, say): give up on the
			// rest rather than guess.
			return o
		}
		v := r.skipBlank(c+1, end)
		e := r.valueEnd(v, end, true)
		p := &prop{key: key, value: strings.TrimSpace(s[v:e]), line: r.line(i)}
		if v < end && s[v] == '{' && r.close(v, end+1) == v+len(p.value) {
			p.obj = r.object(v)
		}
		o.props = append(o.props, p)
		i = e
	}
}

func (r *reader) ident(i, end int) int {
	for i < end && (isIdentStart(r.src[i]) || (r.src[i] >= '0' && r.src[i] <= '9')) {
		i++
	}
	return i
}

func isIdentStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func (r *reader) skipBlank(i, end int) int {
	for i < end && (r.src[i] == ' ' || r.src[i] == '\t' || r.src[i] == '\r') {
		i++
	}
	return i
}

// skipSpace skips white space, newlines and comments.
func (r *reader) skipSpace(i, end int) int {
	for i < end {
		switch {
		case r.src[i] == ' ' || r.src[i] == '\t' || r.src[i] == '\r' || r.src[i] == '\n':
			i++
		case strings.HasPrefix(r.src[i:end], "//") || strings.HasPrefix(r.src[i:end], "/*"):
			i = r.skipComment(i)
		default:
			return i
		}
	}
	return i
}

func (r *reader) skipComment(i int) int {
	s := r.src
	if strings.HasPrefix(s[i:], "//") {
		if j := strings.IndexByte(s[i:], '\n'); j >= 0 {
			return i + j
		}
		return len(s)
	}
	if j := strings.Index(s[i+2:], "*/"); j >= 0 {
		return i + 2 + j + 2
	}
	return len(s)
}

// skipString returns the index just past the string literal at i.
func (r *reader) skipString(i int) int {
	s := r.src
	if strings.HasPrefix(s[i:], "'''") {
		if j := strings.Index(s[i+3:], "'''"); j >= 0 {
			return i + 3 + j + 3
		}
		return len(s)
	}
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\':
			j++
		case s[j] == '\'':
			return j + 1
		case s[j] == '$' && j+1 < len(s) && s[j+1] == '{':
			j = r.close(j+1, len(s)) - 1
		}
	}
	return len(s)
}

// close returns the index just past the bracket that closes the one at i
// (or end+1 when it is not closed before end).
func (r *reader) close(i, end int) int {
	s := r.src
	depth := 0
	for j := i; j < end; {
		switch c := s[j]; {
		case c == '\'':
			j = r.skipString(j)
			continue
		case strings.HasPrefix(s[j:end], "//") || strings.HasPrefix(s[j:end], "/*"):
			j = r.skipComment(j)
			continue
		case c == '{' || c == '[' || c == '(':
			depth++
		case c == '}' || c == ']' || c == ')':
			depth--
			if depth == 0 {
				return j + 1
			}
		}
		j++
	}
	return end + 1
}

// valueEnd returns where the expression starting at i ends: at a newline, a
// comment, or (in an object) a comma, outside brackets and strings.
func (r *reader) valueEnd(i, end int, comma bool) int {
	s := r.src
	for j := i; j < end; {
		switch c := s[j]; {
		case c == '\'':
			j = r.skipString(j)
			continue
		case c == '{' || c == '[' || c == '(':
			j = min(r.close(j, end), end)
			continue
		case c == '\n' || (c == ',' && comma) || strings.HasPrefix(s[j:end], "//") || strings.HasPrefix(s[j:end], "/*"):
			return j
		}
		j++
	}
	return end
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func (f *bicepFile) find(kind, name string) *decl {
	for _, d := range f.decls {
		if d.kind == kind && d.name == name {
			return d
		}
	}
	return nil
}

// resources returns the file's resources, nested ones included.
func (f *bicepFile) resources() []*decl {
	var all []*decl
	var walk func(ds []*decl)
	walk = func(ds []*decl) {
		for _, d := range ds {
			if d.kind == "resource" {
				all = append(all, d)
				if d.body != nil {
					walk(d.body.nested)
				}
			}
		}
	}
	walk(f.decls)
	return all
}

// moduleParam returns the expression main.bicep passes to param of the
// module declared with path.
func (f *bicepFile) moduleParam(path, param string) string {
	for _, d := range f.decls {
		if d.kind == "module" && d.typ == path && d.body != nil {
			return d.body.value("params." + param)
		}
	}
	return ""
}

// objectsOf returns the object literals an expression evaluates to or
// merges: literals written in it, and those of the vars it names,
// recursively (union(a, {...}, b), cond ? {...} : {...}).
func (f *bicepFile) objectsOf(expr string) []*object {
	objs := objectLiterals(expr)
	for _, id := range identifiers(expr) {
		if v := f.find("var", id); v != nil {
			objs = append(objs, f.objectsOf(v.value)...)
		}
	}
	return objs
}

func (o *object) get(path string) *prop {
	if o == nil {
		return nil
	}
	key, rest, nested := strings.Cut(path, ".")
	for _, p := range o.props {
		if p.key == key {
			if !nested {
				return p
			}
			return p.obj.get(rest)
		}
	}
	return nil
}

// value returns the text of the property at path, or "".
func (o *object) value(path string) string {
	if p := o.get(path); p != nil {
		return p.value
	}
	return ""
}

// objectLiterals returns the outermost object literals in an expression.
func objectLiterals(expr string) []*object {
	r := &reader{src: expr}
	var objs []*object
	for i := 0; i < len(expr); {
		switch expr[i] {
		case '\'':
			i = r.skipString(i)
		case '{':
			objs = append(objs, r.object(i))
			i = r.close(i, len(expr))
		default:
			i++
		}
	}
	return objs
}

// identifiers returns the names an expression refers to, outside strings
// and object literals, without property names (a.b.c yields a).
func identifiers(expr string) []string {
	r := &reader{src: expr}
	var ids []string
	for i := 0; i < len(expr); {
		switch c := expr[i]; {
		case c == '\'':
			i = r.skipString(i)
		case c == '{':
			i = r.close(i, len(expr))
		case isIdentStart(c):
			j := r.ident(i, len(expr))
			if i == 0 || expr[i-1] != '.' {
				ids = append(ids, expr[i:j])
			}
			i = j
		default:
			i++
		}
	}
	return ids
}

// ternary splits "cond ? a : b" at its top level.
func ternary(expr string) (cond, yes, no string, ok bool) {
	r := &reader{src: expr}
	q := -1
	for i := 0; i < len(expr); {
		switch c := expr[i]; {
		case c == '\'':
			i = r.skipString(i)
			continue
		case c == '{' || c == '[' || c == '(':
			i = r.close(i, len(expr))
			continue
		case c == '?' && q < 0 && i+1 < len(expr) && expr[i+1] != '?' && expr[i+1] != '.' && (i == 0 || expr[i-1] != '?'):
			q = i
		case c == ':' && q >= 0:
			return strings.TrimSpace(expr[:q]), strings.TrimSpace(expr[q+1 : i]), strings.TrimSpace(expr[i+1:]), true
		}
		i++
	}
	return "", "", "", false
}

// stringLit returns the value of a string literal without interpolation.
func stringLit(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, "'''") && strings.HasSuffix(v, "'''") && len(v) >= 6 {
		body := v[3 : len(v)-3]
		return strings.TrimPrefix(strings.TrimPrefix(body, "\r"), "\n"), true
	}
	if len(v) < 2 || v[0] != '\'' || v[len(v)-1] != '\'' || strings.Contains(v, "${") {
		return "", false
	}
	r := &reader{src: v}
	if r.skipString(0) != len(v) {
		return "", false
	}
	return strings.NewReplacer(`\'`, `'`, `\\`, `\`, `\n`, "\n", `\t`, "\t", `\$`, `$`).Replace(v[1 : len(v)-1]), true
}

// normalize collapses white space, so expressions compare regardless of
// layout.
func normalize(s string) string { return strings.Join(strings.Fields(s), " ") }
