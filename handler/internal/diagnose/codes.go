package diagnose

import (
	"slices"
	"strings"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// Salesforce-specific remediation.
const (
	fixSalesforceClientID = "{Provider} does not know the client id of connection {connection}: check that " +
		"{client_id} holds the connected app's Consumer Key, and that the token URL points at the org " +
		"(production, sandbox or My Domain) where the app lives; a new connected app can take several minutes " +
		"to become usable."
	fixSalesforceInactiveUser = "The Salesforce user who authorized connection {connection} is deactivated: " +
		"reactivate the user, or re-authorize with an active user and write the new refresh token to " +
		"{refresh_token}{connect}."
	fixSalesforceRunAsInactive = "The run-as user of the connected app of connection {connection} is " +
		"deactivated: reactivate it, or choose an active run-as user for the client credentials flow."
	fixSalesforceAuthFailure = "Salesforce refused to authenticate connection {connection}: check the connected " +
		"app's OAuth settings (the flows it allows, IP relaxation); if they are right, re-authorize and write a " +
		"new refresh token to {refresh_token}{connect}."
	fixSalesforceAuthFailureApp = "Salesforce refused to authenticate connection {connection}: check that the " +
		"connected app enables the client credentials flow with a run-as user, its IP relaxation, and that " +
		"{client_id} and {client_secret} hold its Consumer Key and Consumer Secret."
)

// Google- and HubSpot-specific remediation.
const (
	fixGoogleExpired = fixInvalidGrant + " If this happens every 7 days, the app's OAuth consent screen is in " +
		"Testing: publish it to production."
	fixHubSpotBadHub = "The HubSpot account that connection {connection} was authorized for was deleted or has " +
		"uninstalled the app: install the app in the account again and write the new refresh token to " +
		"{refresh_token}{connect}."
)

// errorCodes are the RFC 6749 §5.2 codes
// (https://www.rfc-editor.org/rfc/rfc6749#section-5.2), the §4.1.2.1 codes
// some token endpoints also use, the OpenID Connect Core §3.1.2.6 ones, and
// other providers' codes seen at token endpoints.
var errorCodes = withCategories(map[string]advice{
	"invalid_grant": {deadRT: true,
		what: "the refresh token is no longer valid", fix: fixInvalidGrant,
		appOnly: &advice{category: FixConfiguration, what: "the grant was refused", fix: fixAppOnly}},
	"invalid_client": {
		what: "the client credentials were not accepted", fix: fixInvalidClient},
	"unauthorized_client": {
		what: "the app may not use this grant", fix: fixUnauthorizedClient},
	"unsupported_grant_type": {
		what: "the grant type is not supported", fix: fixUnsupportedGrant},
	"invalid_scope": {
		what: "the requested scopes are invalid", fix: fixScope},
	"invalid_request": {
		what: "the request is malformed or lacks a parameter", fix: fixRequest},
	// RFC 6749 §4.1.2.1; at a token endpoint, HubSpot uses it for a grant
	// whose account is gone.
	"access_denied": {deadRT: true,
		what: "access was denied", fix: fixReauthorize},
	"temporarily_unavailable": {
		what: "the provider is temporarily unavailable", fix: fixOutage},
	"server_error": {
		what: "the provider failed with a server error", fix: fixOutage},
	// https://openid.net/specs/openid-connect-core-1_0.html#AuthError
	"interaction_required": {deadRT: true,
		what: "a person must sign in again", fix: fixInteraction},
	"login_required": {deadRT: true,
		what: "a person must sign in again", fix: fixInteraction},
	"consent_required": {deadRT: true,
		what: "consent is missing", fix: fixConsent},
	// Microsoft Entra, with AADSTS90002.
	"invalid_tenant": {
		what: "the tenant does not exist", fix: fixTenant},
	// Google: {"error":"deleted_client","error_description":"The OAuth
	// client was deleted."} (github.com/websightgmbh/l5-google-cloud-storage/issues/6).
	"deleted_client": {
		what: "the app was deleted", fix: fixDeletedClient},
	// Salesforce: {"error":"invalid_client_id","error_description":"client
	// identifier invalid"} (github.com/omniphx/forrest/issues/184).
	"invalid_client_id": {
		what: "the client id is unknown", fix: fixSalesforceClientID},
})

// withCategories gives each error code's advice its category from the
// broker's vocabulary (broker.CodeCategory), the one place a code's
// category is decided; every code here must be there.
func withCategories(codes map[string]advice) map[string]advice {
	for code, a := range codes {
		c, ok := broker.CodeCategory(code)
		if !ok {
			panic("diagnose: error code " + code + " is not in the broker's failure vocabulary")
		}
		a.category = c
		codes[code] = a
	}
	return codes
}

// hubspotStatuses are the "status" values of HubSpot's token endpoint.
// BAD_REFRESH_TOKEN is documented
// (https://developers.hubspot.com/docs/api-reference/legacy/authentication/manage-oauth-tokens);
// the others are known from integrations (github.com/NangoHQ/nango/issues/7664,
// github.com/PostHog/posthog posthog/models/test/integration/test_oauth.py).
var hubspotStatuses = map[string]advice{
	"BAD_REFRESH_TOKEN": {category: Reauthorize, deadRT: true,
		what: "the refresh token is no longer valid", fix: fixInvalidGrant},
	"BAD_HUB": {category: Reauthorize, deadRT: true,
		what: "the account the grant belongs to is gone or has uninstalled the app", fix: fixHubSpotBadHub},
	"BAD_CLIENT_ID": {category: FixConfiguration,
		what: "the client id is unknown", fix: fixClientNotFound},
	"BAD_CLIENT_SECRET": {category: RotateClientSecret,
		what: "the client secret is wrong", fix: fixInvalidClient},
	"BAD_GRANT_TYPE": {category: FixConfiguration,
		what: "the grant type is not supported", fix: fixUnsupportedGrant},
	"BAD_SCOPES": {category: FixConfiguration,
		what: "the requested scopes are invalid", fix: fixScope},
	"BAD_AUTH_CODE": {category: Reauthorize,
		what: "the authorization code expired or was already used", fix: fixCodeUsed},
	"BAD_REDIRECT_URI": {category: FixConfiguration,
		what: "the redirect URI is not registered", fix: fixRedirect},
}

// descriptionRule refines an error code by a phrase of its description, for
// providers whose codes say less than their words.
type descriptionRule struct {
	code string
	// phrase is matched case-insensitively.
	phrase string
	// providers limits the rule to these presets; nil means any.
	providers []string
	advice
}

func (r descriptionRule) matches(c *broker.Connection, code, description string) bool {
	if code != r.code || !strings.Contains(strings.ToLower(description), r.phrase) {
		return false
	}
	return r.providers == nil || (c != nil && slices.Contains(r.providers, c.Provider))
}

var descriptionRules = []descriptionRule{
	// Salesforce: "invalid_grant: expired access/refresh token"
	// (github.com/restforce/restforce/issues/81,
	// github.com/forcedotcom/SalesforceMobileSDK-iOS/issues/1250).
	{code: "invalid_grant", phrase: "expired access/refresh token", advice: advice{
		category: Reauthorize, deadRT: true, what: "the refresh token expired or was revoked", fix: fixInvalidGrant}},
	// Salesforce: "invalid_grant: inactive user"
	// (github.com/restforce/restforce/issues/303).
	{code: "invalid_grant", phrase: "inactive user", advice: advice{
		category: AccountLocked, what: "the user behind the grant is deactivated", fix: fixSalesforceInactiveUser,
		appOnly: &advice{category: FixConfiguration, what: "the run-as user is deactivated",
			fix: fixSalesforceRunAsInactive}}},
	// Salesforce: {"error":"invalid_grant","error_description":"authentication
	// failure"} (github.com/boldare/salesforce-client/issues/84), answered
	// for a flow the connected app does not allow as well as for bad
	// credentials (github.com/simple-salesforce/simple-salesforce/issues/753).
	{code: "invalid_grant", phrase: "authentication failure", advice: advice{
		category: FixConfiguration, what: "the request could not be authenticated", fix: fixSalesforceAuthFailure,
		appOnly: &advice{category: FixConfiguration, what: "the request could not be authenticated",
			fix: fixSalesforceAuthFailureApp}}},
	// Google: "Token has been expired or revoked." Refresh tokens of an app
	// whose consent screen is in Testing expire after 7 days
	// (https://developers.google.com/identity/protocols/oauth2#expiration).
	{code: "invalid_grant", phrase: "token has been expired or revoked", providers: []string{"google"}, advice: advice{
		category: Reauthorize, deadRT: true, what: "the refresh token expired or was revoked", fix: fixGoogleExpired}},
	// Google: {"error":"invalid_client","error_description":"The OAuth client
	// was not found."} (github.com/simonrob/email-oauth2-proxy/issues/362).
	{code: "invalid_client", phrase: "the oauth client was not found", advice: advice{
		category: FixConfiguration, what: "there is no app with this client id", fix: fixClientNotFound}},
}
