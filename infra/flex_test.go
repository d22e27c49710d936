package infra

// Tests that stand in for the checks ARM and the Bicep compiler would make
// on a real deployment to Flex Consumption: the properties each resource type
// accepts there, every parameter's constraints, the names derived from
// namePrefix, the deployment stopping on an incomplete App Service
// authentication, and the authentication of every route. Each table says
// where its facts come from.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// ---------------------------------------------------------------------------
// The properties each resource type takes.

// resourceSchema lists the property paths a resource type is known to take
// (a path ending in ".*" admits anything below it) and those ARM refuses,
// each with the refusal it answers.
type resourceSchema struct {
	source   string
	accepted []string
	refused  map[string]string
}

// Properties every resource may have, whatever its type.
var commonProperties = []string{"name", "parent", "scope", "location", "tags", "dependsOn"}

// flexResourceSchemas is keyed by resource type without API version; the
// sites/config types also by their name. A property the templates set that
// is not listed fails TestResourceProperties until someone checks it in the
// source given and adds it.
var flexResourceSchemas = map[string]resourceSchema{
	"Microsoft.Web/serverfarms": {
		source: "the Flex Consumption sample Azure-Samples/azure-functions-flex-consumption-samples IaC/bicep/main.bicep @9519a367 " +
			"(shared/reference/azure-functions-and-sdk-facts.md §3.2); https://learn.microsoft.com/azure/templates/microsoft.web/2024-04-01/serverfarms",
		accepted: []string{"kind", "sku.name", "sku.tier", "properties.reserved"},
	},
	"Microsoft.Web/sites": {
		source: "the same Flex sample (§3.2); https://learn.microsoft.com/azure/templates/microsoft.web/2024-04-01/sites (functionAppConfig)",
		accepted: []string{
			"kind", "identity.type", "identity.userAssignedIdentities",
			"properties.serverFarmId", "properties.httpsOnly", "properties.siteConfig.minTlsVersion",
			"properties.functionAppConfig.deployment.storage.type",
			"properties.functionAppConfig.deployment.storage.value",
			"properties.functionAppConfig.deployment.storage.authentication.type",
			"properties.functionAppConfig.deployment.storage.authentication.userAssignedIdentityResourceId",
			"properties.functionAppConfig.scaleAndConcurrency.maximumInstanceCount",
			"properties.functionAppConfig.scaleAndConcurrency.instanceMemoryMB",
			"properties.functionAppConfig.runtime.name",
			"properties.functionAppConfig.runtime.version",
		},
		// ARM error 51021, "The following site configuration property
		// (Site.SiteConfig.<name>) for Flex Consumption sites is invalid".
		refused: map[string]string{
			"properties.siteConfig.ftpsState": "ARM 51021 on Flex Consumption: \"The following list of 4 site configuration properties (Site.SiteConfig.FtpsState, " +
				"Site.SiteConfig.Use32BitWorkerProcess, Site.SiteConfig.NetFrameworkVersion, Site.SiteConfig.FunctionsRuntimeScaleMonitoringEnabled) " +
				"for Flex Consumption sites is invalid\" (microsoft/azure-pipelines-tasks#21032); turn FTP off with " +
				"Microsoft.Web/sites/basicPublishingCredentialsPolicies 'ftp' instead",
			"properties.siteConfig.use32BitWorkerProcess":                  "ARM 51021 on Flex Consumption (microsoft/azure-pipelines-tasks#21032)",
			"properties.siteConfig.netFrameworkVersion":                    "ARM 51021 on Flex Consumption (microsoft/azure-pipelines-tasks#21032)",
			"properties.siteConfig.functionsRuntimeScaleMonitoringEnabled": "ARM 51021 on Flex Consumption (microsoft/azure-pipelines-tasks#21032)",
			"properties.siteConfig.linuxFxVersion": "ARM 51021 on Flex Consumption, \"(Site.SiteConfig.LinuxFxVersion) for Flex Consumption sites is invalid\" " +
				"(Azure/terraform-azurerm-avm-res-web-site#345); the runtime is functionAppConfig.runtime",
			"properties.siteConfig.alwaysOn": "not a Flex Consumption property; refused like the others (Azure/terraform-azurerm-avm-res-web-site#345)",
		},
	},
	"Microsoft.Web/sites/config/appsettings": {
		source:   "app settings are name/value strings; their names are held against the handler by TestAppSettingsCoverHandlerSettings",
		accepted: []string{"properties"},
	},
	"Microsoft.Web/sites/config/authsettingsV2": {
		source: "https://learn.microsoft.com/azure/templates/microsoft.web/sites/config-authsettingsv2; the Flex app of Azure-Samples/mcp-sdk-functions-hosting-python " +
			"infra/app/mcp.bicep (§3.4)",
		accepted: []string{
			"properties.platform.enabled", "properties.platform.runtimeVersion",
			"properties.globalValidation.requireAuthentication", "properties.globalValidation.unauthenticatedClientAction",
			"properties.globalValidation.excludedPaths",
			"properties.httpSettings.requireHttps", "properties.httpSettings.forwardProxy.convention",
			"properties.identityProviders.azureActiveDirectory.enabled",
			"properties.identityProviders.azureActiveDirectory.registration.openIdIssuer",
			"properties.identityProviders.azureActiveDirectory.registration.clientId",
			"properties.identityProviders.azureActiveDirectory.validation.allowedAudiences",
			"properties.identityProviders.azureActiveDirectory.validation.defaultAuthorizationPolicy.allowedPrincipals.identities",
			// "The list of the allowed groups" (config-authsettingsv2, AllowedPrincipals).
			"properties.identityProviders.azureActiveDirectory.validation.defaultAuthorizationPolicy.allowedPrincipals.groups",
			"properties.identityProviders.azureActiveDirectory.validation.defaultAuthorizationPolicy.allowedApplications",
		},
	},
	"Microsoft.Web/sites/basicPublishingCredentialsPolicies": {
		source:   "https://learn.microsoft.com/azure/templates/microsoft.web/2024-04-01/sites/basicpublishingcredentialspolicies-ftp (and -scm): name 'ftp' or 'scm', properties.allow",
		accepted: []string{"properties.allow"},
	},
	"Microsoft.Storage/storageAccounts": {
		source: "https://learn.microsoft.com/azure/templates/microsoft.storage/2023-05-01/storageaccounts",
		accepted: []string{"kind", "sku.name", "properties.allowSharedKeyAccess", "properties.defaultToOAuthAuthentication",
			"properties.allowBlobPublicAccess", "properties.minimumTlsVersion", "properties.supportsHttpsTrafficOnly", "properties.accessTier"},
	},
	"Microsoft.Storage/storageAccounts/blobServices": {
		source: "https://learn.microsoft.com/azure/templates/microsoft.storage/2023-05-01/storageaccounts/blobservices (name 'default')",
	},
	"Microsoft.Storage/storageAccounts/blobServices/containers": {
		source:   "https://learn.microsoft.com/azure/templates/microsoft.storage/2023-05-01/storageaccounts/blobservices/containers",
		accepted: []string{"properties.publicAccess"},
	},
	"Microsoft.KeyVault/vaults": {
		source: "https://learn.microsoft.com/azure/templates/microsoft.keyvault/2023-07-01/vaults",
		accepted: []string{"properties.tenantId", "properties.sku.family", "properties.sku.name", "properties.enableRbacAuthorization",
			"properties.enableSoftDelete", "properties.softDeleteRetentionInDays", "properties.enablePurgeProtection",
			"properties.enabledForDeployment", "properties.enabledForDiskEncryption", "properties.enabledForTemplateDeployment"},
	},
	"Microsoft.KeyVault/vaults/keys": {
		source: "https://learn.microsoft.com/azure/templates/microsoft.keyvault/2023-07-01/vaults/keys (kty EC, EC-HSM, RSA, RSA-HSM; " +
			"keySize for RSA; curveName P-256 and others for EC; keyOps; attributes.enabled, attributes.exportable)",
		accepted: []string{"properties.kty", "properties.keySize", "properties.curveName", "properties.keyOps",
			"properties.attributes.enabled", "properties.attributes.exportable"},
	},
	"Microsoft.OperationalInsights/workspaces": {
		source:   "https://learn.microsoft.com/azure/templates/microsoft.operationalinsights/2023-09-01/workspaces",
		accepted: []string{"properties.sku.name", "properties.retentionInDays"},
	},
	"Microsoft.Insights/components": {
		source: "https://learn.microsoft.com/azure/templates/microsoft.insights/2020-02-02/components",
		accepted: []string{"kind", "properties.Application_Type", "properties.WorkspaceResourceId", "properties.IngestionMode",
			"properties.DisableLocalAuth"},
	},
	"Microsoft.Insights/actionGroups": {
		source:   "https://learn.microsoft.com/azure/templates/microsoft.insights/2023-01-01/actiongroups",
		accepted: []string{"properties.groupShortName", "properties.enabled", "properties.emailReceivers", "properties.webhookReceivers"},
	},
	"Microsoft.Insights/scheduledQueryRules": {
		source: "https://learn.microsoft.com/azure/templates/microsoft.insights/2023-12-01/scheduledqueryrules",
		accepted: []string{"kind", "properties.displayName", "properties.description", "properties.severity", "properties.enabled",
			"properties.scopes", "properties.evaluationFrequency", "properties.windowSize", "properties.criteria.*",
			"properties.autoMitigate", "properties.actions.actionGroups"},
	},
	"Microsoft.Insights/workbooks": {
		source: "https://learn.microsoft.com/azure/templates/microsoft.insights/2023-06-01/workbooks; Azure/bicep-types-az " +
			"generated/applicationinsights/microsoft.insights (WorkbookProperties: category, displayName, serializedData required; sourceId)",
		accepted: []string{"kind", "properties.displayName", "properties.category", "properties.sourceId", "properties.serializedData"},
	},
	"Microsoft.Authorization/roleAssignments": {
		source:   "https://learn.microsoft.com/azure/templates/microsoft.authorization/2022-04-01/roleassignments",
		accepted: []string{"properties.roleDefinitionId", "properties.principalId", "properties.principalType"},
	},
}

// schemaKey is the flexResourceSchemas key of a resource declaration.
func schemaKey(d *decl) string {
	typ, _, _ := strings.Cut(d.typ, "@")
	if typ == "Microsoft.Web/sites/config" {
		name, _ := stringLit(d.body.value("name"))
		return typ + "/" + name
	}
	return typ
}

type propPath struct {
	path string
	line int
}

// propertyPaths returns the paths of an object's leaves: properties whose
// value is not an object literal.
func propertyPaths(o *object, prefix string) []propPath {
	var out []propPath
	for _, p := range o.props {
		path := prefix + p.key
		if p.obj != nil && len(p.obj.props) > 0 {
			out = append(out, propertyPaths(p.obj, path+".")...)
			continue
		}
		out = append(out, propPath{path, p.line})
	}
	return out
}

// schemaProblems returns one line per property of d that its schema refuses
// or does not know.
func schemaProblems(d *decl) []string {
	if d.existing || d.body == nil {
		return nil
	}
	key := schemaKey(d)
	schema, ok := flexResourceSchemas[key]
	if !ok {
		return []string{fmt.Sprintf("line %d: resource %s: type %s has no entry in flexResourceSchemas; list the properties it takes, with their source", d.line, d.name, key)}
	}
	var problems []string
	for _, p := range propertyPaths(d.body, "") {
		if why, bad := schema.refused[p.path]; bad {
			problems = append(problems, fmt.Sprintf("line %d: %s.%s is refused: %s", p.line, d.name, p.path, why))
			continue
		}
		known := slices.Contains(commonProperties, p.path) || slices.ContainsFunc(schema.accepted, func(a string) bool {
			return a == p.path || strings.HasSuffix(a, ".*") && strings.HasPrefix(p.path, strings.TrimSuffix(a, "*"))
		})
		if !known {
			problems = append(problems, fmt.Sprintf("line %d: %s.%s is not a property %s is known to take (%s); check it there and add it to flexResourceSchemas",
				p.line, d.name, p.path, key, schema.source))
		}
	}
	return problems
}

func TestResourceProperties(t *testing.T) {
	t.Parallel()
	t.Run("checker", func(t *testing.T) {
		tests := []struct {
			name, src string
			want      int
		}{
			{"ftpsState on a Flex site", "resource site 'Microsoft.Web/sites@2024-04-01' = {\n  name: 'a'\n  properties: {\n    siteConfig: {\n      minTlsVersion: '1.2'\n      ftpsState: 'Disabled'\n    }\n  }\n}\n", 1},
			{"linuxFxVersion on a Flex site", "resource site 'Microsoft.Web/sites@2024-04-01' = {\n  name: 'a'\n  properties: {\n    siteConfig: {\n      linuxFxVersion: ''\n    }\n  }\n}\n", 1},
			{"a typo", "resource site 'Microsoft.Web/sites@2024-04-01' = {\n  name: 'a'\n  properties: {\n    httpOnly: true\n  }\n}\n", 1},
			{"an unknown type", "resource x 'Microsoft.Foo/bars@2024-01-01' = {\n  name: 'a'\n}\n", 1},
			{"the policy", "resource p 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {\n  parent: site\n  name: 'scm'\n  properties: {\n    allow: false\n  }\n}\n", 0},
			{"existing", "resource s 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {\n  name: 'a'\n}\n", 0},
		}
		for _, tt := range tests {
			f, err := parseBicep(tt.name, tt.src)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range f.resources() {
				got = append(got, schemaProblems(d)...)
			}
			if len(got) != tt.want {
				t.Errorf("%s: %d problems %q, want %d", tt.name, len(got), got, tt.want)
			}
		}
	})

	for name, f := range loadTemplates(t) {
		for _, d := range f.resources() {
			for _, p := range schemaProblems(d) {
				t.Errorf("%s: %s", name, p)
			}
		}
	}
}

func TestPublishingBasicAuthOff(t *testing.T) {
	t.Parallel()
	f := loadTemplates(t)["modules/functionapp.bicep"]
	found := map[string]bool{}
	for _, d := range f.resources() {
		if !strings.HasPrefix(d.typ, "Microsoft.Web/sites/basicPublishingCredentialsPolicies@") {
			continue
		}
		name, _ := stringLit(d.body.value("name"))
		if d.body.value("parent") != "site" || d.cond != "" || d.body.value("properties.allow") != "false" {
			t.Errorf("modules/functionapp.bicep:%d: %s: want parent site, no condition, properties.allow false", d.line, d.name)
			continue
		}
		found[name] = true
	}
	for _, name := range []string{"ftp", "scm"} {
		if !found[name] {
			t.Errorf("modules/functionapp.bicep: no basicPublishingCredentialsPolicies '%s' with allow: false: basic-auth publishing stays on", name)
		}
	}
}

// ---------------------------------------------------------------------------
// Parameters.

type paramRule struct {
	constraints []string // the constraint decorators, normalized
	typ         string
	source      string
}

// mainParams is every parameter of main.bicep with the constraints it must
// carry. A new parameter fails TestParameterConstraints until it is listed.
var mainParams = map[string]paramRule{
	"location":   {nil, "string", ""},
	"namePrefix": {[]string{"@minLength(2)", "@maxLength(10)"}, "string", "the rules of the names built from it: TestDerivedNames"},
	"appName": {[]string{"@minLength(2)", "@maxLength(60)"}, "string",
		"Microsoft.Web sites: 2-60, https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules#microsoftweb"},
	"connections":                    {nil, "object", "the connections file; config.ParseConnections checks it at start"},
	"handlerSettings":                {nil, "stringMap", "app settings are strings"},
	"userAssignedIdentityResourceId": {nil, "string", ""},
	"enablePurgeProtection":          {nil, "bool", ""},
	"softDeleteRetentionInDays": {[]string{"@minValue(7)", "@maxValue(90)"}, "int",
		"Key Vault soft delete: 7-90 days, https://learn.microsoft.com/azure/key-vault/general/soft-delete-overview"},
	"operatorPrincipalId":  {nil, "string", ""},
	"enableAppServiceAuth": {nil, "bool", ""},
	"authClientId":         {nil, "string", "empty is refused by fail() when enableAppServiceAuth: TestAppServiceAuthNeedsItsIds"},
	"authAllowedAudiences": {nil, "array", ""},
	"adfPrincipalId":       {nil, "string", "empty is refused by fail() when enableAppServiceAuth: TestAppServiceAuthNeedsItsIds"},
	"adfApplicationId":     {nil, "string", ""},
	"statusPageGroupId":    {nil, "string", "an Entra group's object id; empty: nobody signs in (TestStatusPageGroupPolicy)"},
	"maximumInstanceCount": {[]string{"@minValue(1)", "@maxValue(1000)"}, "int",
		"\"The lowest maximum scale is currently 1. The highest currently supported value is 1000.\", " +
			"https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan#considerations"},
	"instanceMemoryMB": {[]string{"@allowed([ 512 2048 4096 ])"}, "int",
		"instance sizes 512, 2048 and 4096 MB, https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan#instance-memory"},
	"logRetentionInDays": {[]string{"@minValue(30)", "@maxValue(730)"}, "int",
		"workspace retention 30-730 days, https://learn.microsoft.com/azure/azure-monitor/logs/data-retention-configure"},
	"alertEmailAddresses": {nil, "array", ""},
	"assertionSigners":    {nil, "array", "names and types of Key Vault keys; a key name's rules are checked by the handler's connections validator (signingKey)"},
	"alertActionGroupIds": {nil, "array", ""},
	"alertWebhookUrl":     {nil, "string", "a webhook URL carries its own secret: @secure(), TestAlertWebhookIsSecure"},
	"alertSeverity": {[]string{"@minValue(0)", "@maxValue(4)"}, "int",
		"scheduledQueryRules severity 0-4, https://learn.microsoft.com/azure/templates/microsoft.insights/2023-12-01/scheduledqueryrules"},
	"tags": {nil, "object", ""},
}

var constraintDecorator = regexp.MustCompile(`^@(minValue|maxValue|minLength|maxLength|allowed)\(`)

func constraintsOf(d *decl) []string {
	var out []string
	for _, dec := range d.decorators {
		if constraintDecorator.MatchString(dec) {
			out = append(out, normalize(dec))
		}
	}
	sort.Strings(out)
	return out
}

func TestParameterConstraints(t *testing.T) {
	t.Parallel()
	files := loadTemplates(t)
	main := files["main.bicep"]
	for _, d := range main.decls {
		if d.kind != "param" {
			continue
		}
		rule, ok := mainParams[d.name]
		if !ok {
			t.Errorf("main.bicep:%d: param %s is not in mainParams: list its constraints and their source", d.line, d.name)
			continue
		}
		want := slices.Clone(rule.constraints)
		sort.Strings(want)
		if got := constraintsOf(d); !slices.Equal(got, want) {
			t.Errorf("main.bicep:%d: param %s has constraints %q, want %q (%s)", d.line, d.name, got, want, rule.source)
		}
		if d.typ != rule.typ {
			t.Errorf("main.bicep:%d: param %s is of type %s, want %s", d.line, d.name, d.typ, rule.typ)
		}
	}
	for name := range mainParams {
		if main.find("param", name) == nil {
			t.Errorf("mainParams lists %s, which main.bicep no longer declares", name)
		}
	}

	// A module parameter that main.bicep fills from one of its own has the
	// same type and constraints, so a value main.bicep lets through is never
	// refused one level down.
	for _, m := range main.decls {
		if m.kind != "module" || m.body == nil {
			continue
		}
		mod := files[strings.TrimPrefix(m.typ, "./")]
		params := m.body.get("params")
		if mod == nil || params == nil || params.obj == nil {
			continue
		}
		for _, p := range params.obj.props {
			outer := main.find("param", p.value)
			inner := mod.find("param", p.key)
			if outer == nil || inner == nil {
				continue
			}
			if got, want := constraintsOf(inner), constraintsOf(outer); !slices.Equal(got, want) {
				t.Errorf("%s:%d: param %s has constraints %q, but main.bicep passes %s, which has %q", m.typ, inner.line, inner.name, got, outer.name, want)
			}
			if inner.typ != outer.typ && inner.typ != "object" && inner.typ != "array" {
				t.Errorf("%s:%d: param %s is of type %s, but main.bicep passes %s of type %s", m.typ, inner.line, inner.name, inner.typ, outer.name, outer.typ)
			}
		}
	}

	// Documented ranges: infra/README.md's parameter table states each
	// min-max pair the decorators enforce.
	readme := readText(t, "README.md")
	for name, rule := range mainParams {
		var nums []string
		for _, c := range rule.constraints {
			if m := regexp.MustCompile(`^@(?:minValue|maxValue)\((\d+)\)$`).FindStringSubmatch(c); m != nil {
				nums = append(nums, m[1])
			}
		}
		if len(nums) == 0 {
			continue
		}
		row := tableRow(readme, "`"+name+"`")
		if row == "" {
			t.Errorf("infra/README.md: the parameter table has no row for %s", name)
			continue
		}
		for _, n := range nums {
			if !regexp.MustCompile(`(^|[^\d])` + n + `([^\d]|$)`).MatchString(strings.SplitN(row, "|", 4)[3]) {
				t.Errorf("infra/README.md: the row of %s does not give its bound %s: %s", name, n, row)
			}
		}
	}
}

// stringMapType is the user-defined type of an object whose every property is
// a string (https://learn.microsoft.com/azure/azure-resource-manager/bicep/user-defined-data-types,
// "*" for additional properties).
const stringMapType = "{ *: string }"

// appSettingTypeProblems reports a handlerSettings param whose type admits
// anything but strings.
func appSettingTypeProblems(f *bicepFile) []string {
	p := f.find("param", "handlerSettings")
	if p == nil {
		return []string{"no param handlerSettings"}
	}
	typ := f.find("type", p.typ)
	if typ == nil || normalize(typ.value) != stringMapType {
		return []string{fmt.Sprintf("line %d: param handlerSettings is of type %s; app settings are strings: declare type %s = %s and use it", p.line, p.typ, p.typ, stringMapType)}
	}
	return nil
}

func TestHandlerSettingsAreStrings(t *testing.T) {
	t.Parallel()
	t.Run("checker", func(t *testing.T) {
		for src, want := range map[string]int{
			"param handlerSettings object = {}\n":                                        1,
			"type m = { *: int }\nparam handlerSettings m = {}\n":                        1,
			"type stringMap = { *: string }\nparam handlerSettings stringMap = {}\n":     0,
			"type settings = {\n  *: string\n}\nparam handlerSettings settings = {}\n":   0,
			"type settings = { *: string | int }\nparam handlerSettings settings = {}\n": 1,
		} {
			f, err := parseBicep("snippet.bicep", src)
			if err != nil {
				t.Fatal(err)
			}
			if got := appSettingTypeProblems(f); len(got) != want {
				t.Errorf("%q: problems %q, want %d", src, got, want)
			}
		}
	})
	files := loadTemplates(t)
	for _, name := range []string{"main.bicep", "modules/functionapp.bicep"} {
		for _, p := range appSettingTypeProblems(files[name]) {
			t.Errorf("%s: %s", name, p)
		}
	}
	// The example parameters: every value a JSON string.
	var tuning map[string]any
	if err := json.Unmarshal(loadExampleParameters(t)["handlerSettings"], &tuning); err != nil {
		t.Fatal(err)
	}
	for k, v := range tuning {
		if _, ok := v.(string); !ok {
			t.Errorf("main.parameters.json: handlerSettings.%s is %T, want a string", k, v)
		}
	}
}

// ---------------------------------------------------------------------------
// App Service authentication without its ids.

func TestAppServiceAuthNeedsItsIds(t *testing.T) {
	t.Parallel()
	main := loadTemplates(t)["main.bicep"]
	guard := regexp.MustCompile(`^enableAppServiceAuth && empty\((\w+)\) \? fail\('([^']*(?:\\'[^']*)*)'\) : (\w+)$`)
	for _, param := range []string{"authClientId", "adfPrincipalId"} {
		passed := main.moduleParam("modules/functionapp.bicep", param)
		v := main.find("var", passed)
		if v == nil {
			t.Errorf("main.bicep passes %s to the function app as %q, unchecked: with enableAppServiceAuth and an empty %s every call gets 401 or 403; "+
				"pass a var that is `enableAppServiceAuth && empty(%s) ? fail('%s ...') : %s`", param, passed, param, param, param, param)
			continue
		}
		m := guard.FindStringSubmatch(normalize(v.value))
		if m == nil || m[1] != param || m[3] != param {
			t.Errorf("main.bicep:%d: var %s is %s, want enableAppServiceAuth && empty(%s) ? fail('...') : %s", v.line, v.name, v.value, param, param)
			continue
		}
		if !strings.HasPrefix(m[2], param+" ") {
			t.Errorf("main.bicep:%d: the fail() message of %s does not start with the parameter's name: %q", v.line, v.name, m[2])
		}
	}
	// The outputs say whether the token route is behind it, and what is not.
	for _, name := range []string{"appServiceAuthEnabled", "authExcludedPaths"} {
		if main.find("output", name) == nil {
			t.Errorf("main.bicep: no output %s", name)
		}
	}
}

// ---------------------------------------------------------------------------
// Names derived from namePrefix.

// nameRule is a resource type's naming rule, from
// https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules
// (MicrosoftDocs/azure-docs articles/azure-resource-manager/management/resource-name-rules.md).
type nameRule struct {
	what     string
	min, max int
	valid    func(string) error
}

func charsIn(allowed func(rune) bool, desc string) func(string) error {
	return func(s string) error {
		for _, r := range s {
			if !allowed(r) {
				return fmt.Errorf("%q is not %s", r, desc)
			}
		}
		return nil
	}
}

func isLowerAlnum(r rune) bool { return r >= 'a' && r <= 'z' || r >= '0' && r <= '9' }
func isAlnum(r rune) bool      { return isLowerAlnum(r) || r >= 'A' && r <= 'Z' }
func isAlnumHyphen(r rune) bool {
	return isAlnum(r) || r == '-'
}

func all(checks ...func(string) error) func(string) error {
	return func(s string) error {
		for _, c := range checks {
			if err := c(s); err != nil {
				return err
			}
		}
		return nil
	}
}

func startsWith(ok func(rune) bool, desc string) func(string) error {
	return func(s string) error {
		if s == "" || !ok(rune(s[0])) {
			return fmt.Errorf("does not start with %s", desc)
		}
		return nil
	}
}

func endsWith(ok func(rune) bool, desc string) func(string) error {
	return func(s string) error {
		if s == "" || !ok(rune(s[len(s)-1])) {
			return fmt.Errorf("does not end with %s", desc)
		}
		return nil
	}
}

func noneOf(chars string) func(string) error {
	return func(s string) error {
		for _, r := range s {
			if strings.ContainsRune(chars, r) || unicode.IsControl(r) {
				return fmt.Errorf("contains %q", r)
			}
		}
		if strings.HasSuffix(s, " ") || strings.HasSuffix(s, ".") {
			return fmt.Errorf("ends with a space or a period")
		}
		return nil
	}
}

func isLetter(r rune) bool { return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' }

var (
	storageRule = nameRule{"Microsoft.Storage storageAccounts", 3, 24, charsIn(isLowerAlnum, "a lower-case letter or a number")}
	vaultRule   = nameRule{"Microsoft.KeyVault vaults", 3, 24, all(charsIn(isAlnumHyphen, "alphanumeric or a hyphen"),
		startsWith(isLetter, "a letter"), endsWith(isAlnum, "a letter or number"),
		func(s string) error {
			if strings.Contains(s, "--") {
				return fmt.Errorf("contains consecutive hyphens")
			}
			return nil
		})}
	siteRule = nameRule{"Microsoft.Web sites", 2, 60, all(charsIn(isAlnumHyphen, "alphanumeric or a hyphen"),
		startsWith(isAlnum, "an alphanumeric"), endsWith(isAlnum, "an alphanumeric"))}
	planRule      = nameRule{"Microsoft.Web serverfarms", 1, 60, charsIn(isAlnumHyphen, "alphanumeric or a hyphen")}
	workspaceRule = nameRule{"Microsoft.OperationalInsights workspaces", 4, 63, all(charsIn(isAlnumHyphen, "alphanumeric or a hyphen"),
		startsWith(isAlnum, "an alphanumeric"), endsWith(isAlnum, "an alphanumeric"))}
	componentRule   = nameRule{"Microsoft.Insights components", 1, 260, noneOf(`%&\?/`)}
	queryRuleRule   = nameRule{"Microsoft.Insights scheduledQueryRules", 1, 260, noneOf(`*<>%{}&:\?/#|`)}
	actionGroupRule = nameRule{"Microsoft.Insights actionGroups", 1, 260, noneOf(`:<>+/&%\?|`)}
)

func (r nameRule) check(name string) error {
	if n := len(name); n < r.min || n > r.max {
		return fmt.Errorf("%s: %q is %d characters, want %d-%d", r.what, name, n, r.min, r.max)
	}
	if err := r.valid(name); err != nil {
		return fmt.Errorf("%s: %q %v", r.what, name, err)
	}
	return nil
}

// derivedNames lists each resource whose name main.bicep builds, by the
// module that declares it.
var derivedNames = []struct {
	module, resource string
	rule             nameRule
}{
	{"modules/storage.bicep", "account", storageRule},
	{"modules/keyvault.bicep", "vault", vaultRule},
	{"modules/functionapp.bicep", "site", siteRule},
	{"modules/functionapp.bicep", "plan", planRule},
	{"modules/monitoring.bicep", "workspace", workspaceRule},
	{"modules/monitoring.bicep", "appInsights", componentRule},
	{"modules/alerts.bicep", "group", actionGroupRule},
}

// derivedModuleNames lists the names main.bicep builds that a module passes
// on to a module of its own, by the module declaration and its parameter:
// each log-alert.bicep rule of alerts.bicep is named by its name parameter.
var derivedModuleNames = []struct {
	module, submodule, param string
	rule                     nameRule
}{
	{"modules/alerts.bicep", "log-alert.bicep", "name", queryRuleRule},
}

// nameEnv evaluates the small part of Bicep's expression language that the
// name expressions use: string literals with interpolation, identifiers
// (parameters, variables, module parameters), integers, and take, toLower,
// replace and uniqueString.
type nameEnv struct {
	file  *bicepFile
	bound map[string]string // values given by the test
	args  map[string]string // module parameters: expressions in outer
	outer *nameEnv          // where args are evaluated
	seen  map[string]bool   // cycle guard
}

func (e *nameEnv) lookup(id string) (string, error) {
	if v, ok := e.bound[id]; ok {
		return v, nil
	}
	if e.seen[id] {
		return "", fmt.Errorf("%s refers to itself", id)
	}
	e.seen[id] = true
	defer delete(e.seen, id)
	if expr, ok := e.args[id]; ok {
		return e.outer.eval(expr)
	}
	if v := e.file.find("var", id); v != nil {
		return e.eval(v.value)
	}
	if p := e.file.find("param", id); p != nil && p.value != "" {
		return e.eval(p.value)
	}
	return "", fmt.Errorf("%s: cannot evaluate %s", e.file.path, id)
}

// splitArgs splits a call's argument list at its top-level commas.
func splitArgs(s string) []string {
	r := &reader{src: s}
	var args []string
	start := 0
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == '\'':
			i = r.skipString(i)
			continue
		case c == '(' || c == '[' || c == '{':
			i = r.close(i, len(s))
			continue
		case c == ',':
			args = append(args, strings.TrimSpace(s[start:i]))
			start = i + 1
		}
		i++
	}
	if rest := strings.TrimSpace(s[start:]); rest != "" || len(args) > 0 {
		args = append(args, rest)
	}
	return args
}

func (e *nameEnv) eval(expr string) (string, error) {
	expr = strings.TrimSpace(expr)
	r := &reader{src: expr}
	switch {
	case expr == "":
		return "", fmt.Errorf("empty expression")
	case expr[0] == '\'':
		if r.skipString(0) != len(expr) {
			return "", fmt.Errorf("not a single string: %s", expr)
		}
		var b strings.Builder
		for i := 1; i < len(expr)-1; i++ {
			switch {
			case expr[i] == '\\' && i+1 < len(expr)-1:
				b.WriteByte(expr[i+1])
				i++
			case expr[i] == '$' && expr[i+1] == '{':
				end := r.close(i+1, len(expr))
				v, err := e.eval(expr[i+2 : end-1])
				if err != nil {
					return "", err
				}
				b.WriteString(v)
				i = end - 1
			default:
				b.WriteByte(expr[i])
			}
		}
		return b.String(), nil
	case expr[0] >= '0' && expr[0] <= '9':
		if _, err := strconv.Atoi(expr); err != nil {
			return "", err
		}
		return expr, nil
	}
	j := r.ident(0, len(expr))
	if j == 0 {
		return "", fmt.Errorf("cannot evaluate %s", expr)
	}
	id := expr[:j]
	if j == len(expr) {
		return e.lookup(id)
	}
	if expr[j] != '(' || r.close(j, len(expr)) != len(expr) {
		return "", fmt.Errorf("cannot evaluate %s", expr)
	}
	raw := splitArgs(expr[j+1 : len(expr)-1])
	if id == "uniqueString" {
		return e.lookup("uniqueString")
	}
	args := make([]string, len(raw))
	for i, a := range raw {
		v, err := e.eval(a)
		if err != nil {
			return "", err
		}
		args[i] = v
	}
	switch {
	case id == "toLower" && len(args) == 1:
		return strings.ToLower(args[0]), nil
	case id == "replace" && len(args) == 3:
		return strings.ReplaceAll(args[0], args[1], args[2]), nil
	case id == "take" && len(args) == 2:
		n, err := strconv.Atoi(args[1])
		if err != nil {
			return "", err
		}
		return args[0][:min(n, len(args[0]))], nil
	}
	return "", fmt.Errorf("cannot evaluate %s", expr)
}

// moduleEnv is the environment of the module main.bicep declares with path.
func moduleEnv(files templates, main *nameEnv, path string) (*nameEnv, error) {
	for _, d := range files["main.bicep"].decls {
		if d.kind == "module" && d.typ == path && d.body != nil {
			args := map[string]string{}
			if p := d.body.get("params"); p != nil && p.obj != nil {
				for _, a := range p.obj.props {
					args[a.key] = a.value
				}
			}
			return &nameEnv{file: files[path], args: args, outer: main, seen: map[string]bool{}}, nil
		}
	}
	return nil, fmt.Errorf("main.bicep declares no module %s", path)
}

// prefixAllowed is the Go model of main.bicep's validNamePrefix: the length
// decorators and the allowed characters.
func prefixAllowed(p string, minLen, maxLen int, chars string) bool {
	if len(p) < minLen || len(p) > maxLen {
		return false
	}
	for _, r := range p {
		if !strings.ContainsRune(chars, r) {
			return false
		}
	}
	return true
}

func decoratorInt(t *testing.T, d *decl, name string) int {
	t.Helper()
	re := regexp.MustCompile(`^@` + name + `\((\d+)\)$`)
	for _, dec := range d.decorators {
		if m := re.FindStringSubmatch(normalize(dec)); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	t.Fatalf("param %s has no @%s", d.name, name)
	return 0
}

func TestDerivedNames(t *testing.T) {
	t.Parallel()
	files := loadTemplates(t)
	main := files["main.bicep"]
	prefix := main.find("param", "namePrefix")
	minLen, maxLen := decoratorInt(t, prefix, "minLength"), decoratorInt(t, prefix, "maxLength")

	// The guard: validNamePrefix fails on any character outside
	// namePrefixAllowedChars, and every name uses validNamePrefix.
	charsVar := main.find("var", "namePrefixAllowedChars")
	if charsVar == nil {
		t.Fatal("main.bicep: no var namePrefixAllowedChars: nothing refuses a namePrefix with characters a storage account name cannot hold")
	}
	chars, _ := stringLit(charsVar.value)
	if bad := main.find("var", "namePrefixBadChars"); bad == nil || !strings.Contains(bad.value, "namePrefixAllowedChars") || !strings.Contains(bad.value, "namePrefix") {
		t.Error("main.bicep: var namePrefixBadChars must list the characters of namePrefix outside namePrefixAllowedChars")
	}
	valid := main.find("var", "validNamePrefix")
	if valid == nil || !regexp.MustCompile(`^empty\(namePrefixBadChars\) \? namePrefix : fail\('namePrefix `).MatchString(normalize(valid.value)) {
		t.Fatal("main.bicep: want var validNamePrefix = empty(namePrefixBadChars) ? namePrefix : fail('namePrefix ...')")
	}
	if d := main.find("param", "namePrefix"); !strings.Contains(strings.Join(d.decorators, " "), fmt.Sprintf("%d-%d characters", minLen, maxLen)) {
		t.Errorf("main.bicep: namePrefix's @description does not state its rule (%d-%d characters, ...)", minLen, maxLen)
	}
	for _, d := range main.decls {
		if d.kind == "param" && d.name == "appName" {
			continue // a parameter's default cannot refer to a variable
		}
		src := d.value
		if regexp.MustCompile(`\$\{namePrefix\}`).MatchString(src) {
			t.Errorf("main.bicep:%d: %s %s builds a name from namePrefix; use validNamePrefix, so that the check runs", d.line, d.kind, d.name)
		}
	}

	repeat := func(s string, n int) string { return strings.Repeat(s, n/len(s)+1)[:n] }
	prefixes := map[string]string{
		"shortest":               repeat("a", minLen),
		"shortest, digits only":  repeat("0", minLen),
		"longest":                repeat("z", maxLen),
		"longest, digits only":   repeat("9", maxLen),
		"every allowed char (1)": repeat(chars, maxLen),
		"every allowed char (2)": repeat(chars[maxLen:], maxLen),
		"every allowed char (3)": repeat(chars[len(chars)-maxLen:], maxLen),
		"the default":            func() string { s, _ := stringLit(prefix.value); return s }(),
	}
	for name, p := range prefixes {
		if !prefixAllowed(p, minLen, maxLen, chars) {
			t.Fatalf("test prefix %s (%q) is not allowed", name, p)
		}
	}
	for _, p := range []string{repeat("a", minLen-1), repeat("a", maxLen+1), "Tokref", "tok-ref", "tokref-", "tok_ref", "tök", "tok ref"} {
		if prefixAllowed(p, minLen, maxLen, chars) {
			t.Errorf("namePrefix %q is allowed, but it should be refused", p)
		}
	}

	// uniqueString yields 13 lower-case letters and digits; the first may be
	// either.
	hashes := []string{"abcdefghijklm", "0123456789abc"}
	for name, p := range prefixes {
		for _, hash := range hashes {
			t.Run(name+"/"+hash, func(t *testing.T) {
				env := &nameEnv{file: main, bound: map[string]string{"namePrefix": p, "validNamePrefix": p, "uniqueString": hash}, seen: map[string]bool{}}
				for _, dn := range derivedNames {
					mod, err := moduleEnv(files, env, dn.module)
					if err != nil {
						t.Fatal(err)
					}
					mod.bound = map[string]string{"uniqueString": hash}
					res := files[dn.module].find("resource", dn.resource)
					if res == nil {
						t.Fatalf("%s: no resource %s", dn.module, dn.resource)
					}
					got, err := mod.eval(res.body.value("name"))
					if err != nil {
						t.Errorf("%s: the name of %s: %v", dn.module, dn.resource, err)
						continue
					}
					if err := dn.rule.check(got); err != nil {
						t.Errorf("namePrefix %q: %s: %v", p, dn.resource, err)
					}
				}
				for _, dm := range derivedModuleNames {
					mod, err := moduleEnv(files, env, dm.module)
					if err != nil {
						t.Fatal(err)
					}
					mod.bound = map[string]string{"uniqueString": hash}
					n := 0
					for _, d := range files[dm.module].decls {
						if d.kind != "module" || d.typ != dm.submodule {
							continue
						}
						n++
						got, err := mod.eval(d.body.value("params." + dm.param))
						if err != nil {
							t.Errorf("%s: the %s of module %s: %v", dm.module, dm.param, d.name, err)
							continue
						}
						if err := dm.rule.check(got); err != nil {
							t.Errorf("namePrefix %q: %s: %v", p, d.name, err)
						}
					}
					if n == 0 {
						t.Errorf("%s: no module %s", dm.module, dm.submodule)
					}
				}
			})
		}
	}
}

// ---------------------------------------------------------------------------
// The authentication of every route.

// routeAuth is how a route is guarded: the key its authLevel asks for, and
// whether App Service authentication (when on) wants an Entra token.
type routeAuth struct {
	authLevel  string // function, admin, anonymous
	entraToken bool
}

func (a routeAuth) String() string {
	key := a.authLevel + " key"
	if a.authLevel == "anonymous" {
		key = "no key"
	}
	if a.entraToken {
		return key + ", Entra token required"
	}
	return key + ", no Entra token"
}

// excludedPathMatches models globalValidation.excludedPaths: an exact path,
// or "<prefix>/*" for every path below prefix (configure-authentication-file-based.md,
// "Configuration file reference": "/path1", "/path3/subpath/*"). Whether the
// platform compares without regard to case is not documented; the paths
// excluded are the operator routes, so a case mismatch only turns a request
// away.
func excludedPathMatches(pattern, path string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "/*"); ok {
		return strings.HasPrefix(path, prefix+"/")
	}
	return pattern == path
}

// readmeRouteAuth parses the "authentication" cell of README.md's HTTP
// surface table.
func readmeRouteAuth(cell string) (routeAuth, error) {
	var a routeAuth
	switch {
	case strings.HasPrefix(cell, "function key"):
		a.authLevel = "function"
	case strings.HasPrefix(cell, "admin key"):
		a.authLevel = "admin"
	case strings.HasPrefix(cell, "no key"):
		a.authLevel = "anonymous"
	default:
		return a, fmt.Errorf("starts with neither \"function key\", \"admin key\" nor \"no key\": %q", cell)
	}
	switch {
	case strings.Contains(cell, "Entra token required"):
		a.entraToken = true
	case strings.Contains(cell, "no Entra token"):
	default:
		return a, fmt.Errorf("says neither \"Entra token required\" nor \"no Entra token\": %q", cell)
	}
	return a, nil
}

func TestRouteAuthentication(t *testing.T) {
	t.Parallel()
	f := loadTemplates(t)["modules/functionapp.bicep"]
	auth := f.find("resource", "auth")
	if auth == nil || auth.cond != "enableAppServiceAuth" {
		t.Fatal("modules/functionapp.bicep: want resource auth = if (enableAppServiceAuth)")
	}
	gv := func(k string) string { return normalize(auth.body.value("properties.globalValidation." + k)) }
	if gv("requireAuthentication") != "true" || gv("unauthenticatedClientAction") != "'Return401'" {
		t.Errorf("authsettingsV2: requireAuthentication %s, unauthenticatedClientAction %s; this test and the README assume true and 'Return401'",
			gv("requireAuthentication"), gv("unauthenticatedClientAction"))
	}
	var excluded []string
	if expr := gv("excludedPaths"); expr != "" {
		list := expr
		if v := f.find("var", expr); v != nil {
			list = v.value
		}
		for _, m := range regexp.MustCompile(`'([^']*)'`).FindAllStringSubmatch(list, -1) {
			excluded = append(excluded, m[1])
		}
	}

	// README.md's table: route -> authentication.
	readme := readText(t, filepath.Join(repoRoot, "README.md"))
	section := readme[strings.Index(readme, "## HTTP surface"):]
	section = section[:strings.Index(section[3:], "\n## ")+3]
	header := tableRow(section, "| route |")
	cols := splitRow(header)
	authCol := slices.Index(cols, "authentication")
	if authCol < 0 {
		t.Fatalf("README.md: the HTTP surface table has no \"authentication\" column (header %q)", header)
	}
	documented := map[string]string{}
	pathInCell := regexp.MustCompile("(/api/[^`\\s]*)")
	for _, line := range strings.Split(section, "\n") {
		cells := splitRow(line)
		if len(cells) <= authCol {
			continue
		}
		if m := pathInCell.FindStringSubmatch(cells[0]); m != nil {
			documented[m[1]] = cells[authCol]
		}
	}

	prefix := "/" + hostRoutePrefix(t) + "/"
	dirs, err := filepath.Glob(filepath.Join(repoRoot, "functions", "*", "function.json"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no functions/*/function.json: %v", err)
	}
	seen := map[string]bool{}
	for _, path := range dirs {
		var fn struct {
			Bindings []struct {
				Type      string `json:"type"`
				Route     string `json:"route"`
				AuthLevel string `json:"authLevel"`
			} `json:"bindings"`
		}
		readJSON(t, path, &fn)
		name := filepath.Base(filepath.Dir(path))
		for _, b := range fn.Bindings {
			if b.Type != "httpTrigger" {
				continue
			}
			route := b.Route
			if route == "" {
				route = name
			}
			full := prefix + route
			seen[full] = true
			// A concrete path the provider or a caller would use.
			concrete := strings.NewReplacer("{connection}", "xero").Replace(full)
			bicep := routeAuth{authLevel: strings.ToLower(b.AuthLevel), entraToken: !slices.ContainsFunc(excluded, func(p string) bool { return excludedPathMatches(p, concrete) })}
			if bicep.authLevel == "" {
				bicep.authLevel = "function" // the host's default
			}
			cell, ok := documented[full]
			if !ok {
				t.Errorf("README.md: the HTTP surface table has no row for %s (function %s)", full, name)
				continue
			}
			doc, err := readmeRouteAuth(cell)
			if err != nil {
				t.Errorf("README.md: the authentication of %s %v", full, err)
				continue
			}
			if doc != bicep {
				t.Errorf("%s (function %s): README.md says %q, the deployment gives %q (function.json authLevel %q; excludedPaths %q)",
					full, name, doc, bicep, b.AuthLevel, excluded)
			}
		}
	}
	for route := range documented {
		if !seen[route] {
			t.Errorf("README.md: the HTTP surface table lists %s, which no function routes", route)
		}
	}
	// Routes nobody can present a token on must be excluded.
	for _, must := range []string{prefix + "consent/callback", prefix + "consent/xero"} {
		if !slices.ContainsFunc(excluded, func(p string) bool { return excludedPathMatches(p, must) }) {
			t.Errorf("%s is not in excludedPaths: App Service authentication answers it 401, though a browser can carry no token there", must)
		}
	}
	// And the one route whose caller holds a token stays behind it.
	if tok := prefix + "token/xero"; slices.ContainsFunc(excluded, func(p string) bool { return excludedPathMatches(p, tok) }) {
		t.Errorf("%s is excluded from App Service authentication", tok)
	}
}

func TestExcludedPathMatches(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{"/api/connections", "/api/connections", true},
		{"/api/connections", "/api/connections/xero", false},
		{"/api/connections/*", "/api/connections/xero", true},
		{"/api/connections/*", "/api/connections/xero/refresh", true},
		{"/api/connections/*", "/api/connections", false},
		{"/api/consent/*", "/api/consentx/a", false},
		{"/api/consent/*", "/api/token/xero", false},
	}
	for _, tt := range tests {
		if got := excludedPathMatches(tt.pattern, tt.path); got != tt.want {
			t.Errorf("excludedPathMatches(%q, %q) = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}

// ---------------------------------------------------------------------------
// Helpers.

func readText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tableRow returns the first Markdown table line that starts with "| "+key
// (or with key, when key starts with "|").
func tableRow(doc, key string) string {
	if !strings.HasPrefix(key, "|") {
		key = "| " + key
	}
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, key) {
			return line
		}
	}
	return ""
}

// splitRow returns a Markdown table line's cells, trimmed.
func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	if !strings.HasPrefix(line, "|") {
		return nil
	}
	parts := strings.Split(strings.Trim(line, "|"), "|")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}
