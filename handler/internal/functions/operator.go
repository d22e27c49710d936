package functions

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// The signed-in status page: the status page and its buttons for an
// operator who signed in with Entra through App Service authentication
// (Easy Auth), where the admin key is not handed out:
//
//	GET  /api/operator/status                           (function operator-status)
//	POST /api/operator/status/{connection}/{action}     (function operator-status-action)
//
// Both functions are anonymous at the host (authLevel "anonymous"), and
// they are NOT in the Bicep's excludedPaths: App Service authentication
// guards them, and only it. An operator opens
// /.auth/login/aad?post_login_redirect_uri=/api/operator/status; with
// unauthenticatedClientAction Return401, which is one setting for the whole
// app (globalValidation) and must stay 401 for Data Factory's calls, the
// page itself sends no browser to a login page (globalValidation has one
// unauthenticatedClientAction, "The action to take when an unauthenticated
// client attempts to access the app", beside excludedPaths:
// https://learn.microsoft.com/azure/templates/microsoft.web/sites/config-authsettingsv2).
//
// Platform facts this relies on (checked in Microsoft's docs):
//   - The built-in authorization policy (identityProviders.azureActiveDirectory
//     .validation.defaultAuthorizationPolicy) is an AND of allowedApplications
//     and allowedPrincipals, and allowedPrincipals an OR of its properties;
//     allowedApplications evaluates the appid or azp claim of an access
//     token; failing requests get 403
//     (https://learn.microsoft.com/azure/app-service/configure-authentication-provider-aad,
//     "Use a built-in authorization policy"). The Bicep admits the
//     operators' group (allowedPrincipals.groups, "The list of the allowed
//     groups" in the ARM schema, https://learn.microsoft.com/azure/templates/microsoft.web/sites/config-authsettingsv2)
//     beside Data Factory's object id (identities).
//   - X-MS-CLIENT-PRINCIPAL is the base64 of a JSON object
//     {"auth_typ","claims":[{"typ","val"}],"name_typ","role_typ"}, and
//     "External requests aren't allowed to set these headers, so they're
//     present only if set by App Service"
//     (https://learn.microsoft.com/azure/app-service/configure-authentication-user-identities,
//     "Access user claims in app code", "Decode the client principal header").
//     That holds only with App Service authentication on: without it
//     nothing strips a client's copy, so every check below first requires
//     Options.AuthEnabled (WEBSITE_AUTH_ENABLED, which the platform sets
//     when authentication is on: AzureAD/microsoft-identity-web
//     src/Microsoft.Identity.Web/AppServicesAuth/AppServicesAuthenticationInformation.cs,
//     AppServicesAuthEnabledEnvironmentVariable, and behind the Functions
//     host: config.Settings.PrincipalHeadersTrusted).
//   - Entra puts the group's object id in the token's groups claim only if
//     the app registration asks for it (groupMembershipClaims), and past a
//     limit sends an overage indication instead of the list
//     (https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference,
//     "groups" and "Groups overage claim"). The handler reads the claim
//     as typ "groups" (not documented for X-MS-CLIENT-PRINCIPAL: the
//     user-identities page, "Decode the client principal header", notes
//     that its claims pass a default claims mapping,
//     so some names may differ from the token's; /.auth/me shows them);
//     a principal without the group there is refused,
//     saying what to fix (infra/README.md, "Operators sign in").
//
// A person the policy admits reaches every route it does not exclude, the
// token route among them (function key still required there). So, with a
// group configured, the token route serves only Options.TokenCallers
// (tokenCallersOnly): a signed-in operator takes no token, whatever a
// connection's allowedCallers say.

// clientPrincipalHeader carries the caller's claims (base64 JSON) when App
// Service authentication is on.
const clientPrincipalHeader = "X-MS-CLIENT-PRINCIPAL"

// maxClientPrincipal bounds the header decoded: a token with 200 groups
// is about 10 KB of claims.
const maxClientPrincipal = 64 << 10

// operatorLogin is where an operator signs in: Easy Auth's login endpoint
// for Entra, sent back to the page afterwards
// (https://learn.microsoft.com/azure/app-service/configure-authentication-customize-sign-in-out,
// "post_login_redirect_uri").
const operatorLogin = "/.auth/login/aad?post_login_redirect_uri=/api/operator/status"

// clientPrincipal is X-MS-CLIENT-PRINCIPAL decoded.
type clientPrincipal struct {
	AuthType string `json:"auth_typ"`
	Claims   []struct {
		Type  string `json:"typ"`
		Value string `json:"val"`
	} `json:"claims"`
}

// signedInOperator refuses a request that does not come from a member of
// Options.StatusPageGroup signed in through App Service authentication.
func signedInOperator(r *http.Request, o Options) *broker.Error {
	refuse := func(msg, remedy string) *broker.Error {
		return &broker.Error{Code: broker.CodeForbidden, Message: msg, Remediation: remedy}
	}
	const adminPage = " The admin-key page, GET /api/status?code=<admin key>, works without it."
	if o.StatusPageGroup == "" {
		return refuse("the signed-in status page is off: no operators' group is configured (STATUS_PAGE_GROUP)",
			"Deploy with statusPageGroupId set to the object id of the operators' Entra group (infra/README.md)."+adminPage)
	}
	if !o.AuthEnabled {
		return refuse("the signed-in status page needs App Service authentication in front of the Functions host (WEBSITE_AUTH_ENABLED), which strips sign-in headers a client sends; without it a sign-in cannot be told from a forged header",
			"Deploy with enableAppServiceAuth and statusPageGroupId (infra/README.md)."+adminPage)
	}
	values := r.Header.Values(clientPrincipalHeader)
	if len(values) == 0 {
		return refuse("the request carries no sign-in", "Sign in at "+operatorLogin+".")
	}
	if len(values) > 1 || len(values[0]) > maxClientPrincipal {
		return refuse("the request's "+clientPrincipalHeader+" is repeated or too large, so the caller cannot be identified",
			"Open the page through the function app's own endpoint; nothing in between may add "+clientPrincipalHeader+".")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(values[0]))
	var p clientPrincipal
	if err == nil {
		err = json.Unmarshal(raw, &p)
	}
	if err != nil {
		return refuse("the request's "+clientPrincipalHeader+" is not base64 JSON, so the caller cannot be identified",
			"Sign in again at "+operatorLogin+".")
	}
	overage := false
	for _, c := range p.Claims {
		switch c.Type {
		case "groups":
			if strings.EqualFold(strings.TrimSpace(c.Value), o.StatusPageGroup) {
				return nil
			}
		case "hasgroups", "_claim_names":
			overage = true
		}
	}
	if overage {
		return refuse("your sign-in carries no list of groups (Entra sent a groups overage indication instead), so membership of the operators' group cannot be read",
			"In the app registration, emit only groups assigned to the application (groupMembershipClaims \"ApplicationGroup\") and assign the operators' group to its enterprise application, then sign in again at "+operatorLogin+".")
	}
	return refuse("you are signed in, but your sign-in does not show membership of the operators' group "+o.StatusPageGroup,
		"Ask to be added to that group; if you are in it, the app registration must emit group claims (groupMembershipClaims, infra/README.md): /.auth/me shows the claims of your sign-in. Then sign in again at "+operatorLogin+".")
}

// signedIn serves h to signed-in operators only.
func signedIn(o Options, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := signedInOperator(r, o); err != nil {
			encodeError(w, err)
			return
		}
		h(w, r)
	}
}

// tokenCallersOnly keeps signed-in people off the token route: once
// StatusPageGroup lets a group through App Service authentication, the
// route serves only the principals in TokenCallers (Data Factory's managed
// identity), as App Service authentication did alone before. Without a
// group, or without App Service authentication, h is returned as it is, so
// the token route's hit path does no more work. With one, the gate is
// itself handed the connection's name by the router (paramHandler), as the
// route is, so that a caller let through keeps the hit path: no path-value
// table, no request deadline before Peek.
func tokenCallersOnly(o Options, h paramHandler) paramHandler {
	if o.StatusPageGroup == "" || !o.AuthEnabled {
		return h
	}
	return &tokenCallersGate{callers: o.TokenCallers, next: h}
}

// tokenCallersGate serves next to the principals in callers only.
type tokenCallersGate struct {
	callers []string
	next    paramHandler
}

func (g *tokenCallersGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !g.refuse(w, r) {
		g.next.ServeHTTP(w, r)
	}
}

func (g *tokenCallersGate) serveParam(w http.ResponseWriter, r *http.Request, value string) {
	if !g.refuse(w, r) {
		g.next.serveParam(w, r, value)
	}
}

// refuse answers a caller not in callers with a 403 and reports whether
// it did.
func (g *tokenCallersGate) refuse(w http.ResponseWriter, r *http.Request) bool {
	if ids := r.Header[principalKey]; len(ids) == 1 {
		caller := strings.TrimSpace(ids[0])
		if slices.ContainsFunc(g.callers, func(id string) bool { return strings.EqualFold(id, caller) }) {
			return false
		}
	}
	encodeError(w, &broker.Error{Code: broker.CodeForbidden,
		Message:     "the token route serves only the callers in TOKEN_CALLERS while operators may sign in (STATUS_PAGE_GROUP); this caller is not one",
		Remediation: "Call with Data Factory's managed identity. Operators use the status page (/api/operator/status), which serves no token."})
	return true
}
