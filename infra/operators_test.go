package infra

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestStatusPageGroupPolicy: App Service authentication admits the
// operators' group only when statusPageGroupId is set, beside Data
// Factory's identity, and then drops allowedApplications (it checks an
// access token's appid/azp, which a browser sign-in is not:
// configure-authentication-provider-aad, "Use a built-in authorization
// policy"); the handler is told the group and the token route's one
// caller (STATUS_PAGE_GROUP, TOKEN_CALLERS) exactly then; the signed-in
// page is behind the sign-in (not excluded) and anonymous at the host.
func TestStatusPageGroupPolicy(t *testing.T) {
	t.Parallel()
	templates := loadTemplates(t)
	f := templates["modules/functionapp.bicep"]
	auth := f.find("resource", "auth")
	if auth == nil {
		t.Fatal("modules/functionapp.bicep: no resource auth")
	}
	const policy = "properties.identityProviders.azureActiveDirectory.validation.defaultAuthorizationPolicy."
	if ids := normalize(auth.body.value(policy + "allowedPrincipals.identities")); ids != "[ adfPrincipalId ]" {
		t.Errorf("allowedPrincipals.identities is %q; want Data Factory's identity alone", ids)
	}
	if groups := normalize(auth.body.value(policy + "allowedPrincipals.groups")); groups != "empty(statusPageGroupId) ? null : [ statusPageGroupId ]" {
		t.Errorf("allowedPrincipals.groups is %q; want the group only when statusPageGroupId is set", groups)
	}
	branch := func(expr string) map[string]string {
		m := map[string]string{}
		for _, o := range objectLiterals(expr) {
			for _, p := range o.props {
				m[p.key] = normalize(p.value)
			}
		}
		return m
	}
	if apps := normalize(auth.body.value(policy + "allowedApplications")); !strings.HasPrefix(apps, "empty(adfApplicationId) || !empty(statusPageGroupId) ? null :") {
		t.Errorf("allowedApplications is %q; with a group it must be null (a sign-in is no access token)", apps)
	}

	settings := f.find("var", "operatorSettings")
	if settings == nil {
		t.Fatal("modules/functionapp.bicep: no var operatorSettings")
	}
	cond, yes, no, ok := ternary(settings.value)
	if !ok || cond != "enableAppServiceAuth && !empty(statusPageGroupId)" || normalize(no) != "{}" {
		t.Fatalf("operatorSettings is %q; want enableAppServiceAuth && !empty(statusPageGroupId) ? {...} : {}", settings.value)
	}
	if b := branch(yes); b["STATUS_PAGE_GROUP"] != "statusPageGroupId" || b["TOKEN_CALLERS"] != "adfPrincipalId" {
		t.Errorf("operatorSettings sets %v; want STATUS_PAGE_GROUP statusPageGroupId and TOKEN_CALLERS adfPrincipalId", b)
	}
	if !strings.Contains(normalize(f.find("var", "appSettings").value), "operatorSettings") {
		t.Error("appSettings does not include operatorSettings")
	}
	if got := templates["main.bicep"].moduleParam("modules/functionapp.bicep", "statusPageGroupId"); got != "statusPageGroupId" {
		t.Errorf("main.bicep passes statusPageGroupId as %q", got)
	}

	// The signed-in page: behind the sign-in, no key at the host.
	excluded := strings.Fields(strings.NewReplacer("[", " ", "]", " ", "'", " ").Replace(f.find("var", "authExcludedPaths").value))
	for fn, path := range map[string]string{"operator-status": "/api/operator/status", "operator-status-action": "/api/operator/status/xero/refresh"} {
		if slices.ContainsFunc(excluded, func(p string) bool { return excludedPathMatches(p, path) }) {
			t.Errorf("%s is in excludedPaths %v: nothing would sign the operator in", path, excluded)
		}
		var def struct {
			Bindings []struct{ AuthLevel string } `json:"bindings"`
		}
		readJSON(t, filepath.Join(repoRoot, "functions", fn, "function.json"), &def)
		if len(def.Bindings) == 0 || def.Bindings[0].AuthLevel != "anonymous" {
			t.Errorf("functions/%s: authLevel %v, want anonymous (App Service authentication guards it)", fn, def.Bindings)
		}
	}
}
