package config

import (
	"slices"
	"strings"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// Preset is what the handler knows about one provider's token endpoint. A
// connection that names a provider starts from its preset; every field the
// connection sets explicitly overrides the preset's.
type Preset struct {
	// Name is the value of a connection's "provider" field.
	Name string
	// Title is the provider's name for people: "QuickBooks Online".
	Title string
	// TokenURL is the token endpoint. It may contain the placeholder
	// {tenant}, replaced by the connection's "tenant" (see NeedsTenant).
	// Empty for "generic": the connection must then give tokenUrl.
	TokenURL string
	// AuthorizationURL is where a person consents to obtain the first
	// refresh token. The handler never calls it; it is documentation. It
	// may contain {tenant} too.
	AuthorizationURL string
	// AuthStyle is how the client authenticates at TokenURL, as the
	// provider documents it. Empty for "generic": the connection must then
	// give clientAuth.
	AuthStyle broker.AuthStyle
	// Grant is the grant a connection uses unless it says otherwise.
	Grant broker.GrantType
	// Rotating reports whether the provider replaces the refresh token on
	// every refresh (see broker.Connection.Rotating). It is also true where
	// the provider does not say: a rotating connection only gives up
	// retrying a refresh whose response was lost, while a wrong false can
	// redeem a dead refresh token and revoke the whole grant.
	Rotating bool
	// ReuseGrace is how long a rotated-out refresh token stays redeemable;
	// zero unless the provider documents a grace period.
	ReuseGrace time.Duration
	// DefaultLifetime is assumed when a token response has no expires_in:
	// the documented access-token lifetime, or an hour (never more) where
	// the provider documents none.
	DefaultLifetime time.Duration
	// RefreshBefore is how long before expiry a token is refreshed.
	RefreshBefore time.Duration
	// IdleExpiry is how long an unused refresh token stays valid; zero
	// when unknown or unlimited.
	IdleExpiry time.Duration
	// Scopes are sent with every token request unless the connection gives
	// its own. Nil for every built-in preset: a refresh keeps the scopes
	// that were consented to.
	Scopes []string
	// NeedsTenant is true when TokenURL contains {tenant}, so a connection
	// must say which directory, account or instance it belongs to.
	NeedsTenant bool
	// TenantHint says what a connection's "tenant" is for this provider;
	// set exactly when NeedsTenant is. Messages about a bad or missing
	// tenant repeat it.
	TenantHint string
	// Summary is the one thing to know about the provider, in a line, for
	// the README's table.
	Summary string
	// Notes are what an operator should know when setting the provider up.
	Notes string
	// Source is where the facts above come from. Notes name any other
	// source a fact comes from.
	Source string
	// SeveralGrants says whether the provider keeps several grants of one
	// user and client active at once, each with its own refresh tokens,
	// as a standby grant needs (broker/standby.go). GrantsUnknown unless
	// SeveralGrantsSource documents it.
	SeveralGrants GrantCount
	// SeveralGrantsSource is where SeveralGrants comes from.
	SeveralGrantsSource string
	// ConsentScopes are asked for at consent, besides the scope that makes
	// the provider issue a refresh token (package consent adds that): the
	// scopes a typical data pipeline needs. Nil where the scopes are the
	// app registration's (the provider takes none at consent) or depend on
	// the API wholly (Google, Microsoft): the connection gives
	// consentScopes then.
	ConsentScopes []string
	// ConsentScopesSource is where ConsentScopes, or their absence, comes
	// from.
	ConsentScopesSource string
	// AssertionAudience is the aud claim of the provider's signed
	// assertions when it is not the token URL; AudienceIsTokenHost makes
	// it the token URL's host name (Docusign).
	AssertionAudience   string
	AudienceIsTokenHost bool
	// ScopeClaim puts the scopes in the assertion (jwt_bearer presets
	// whose provider reads them there); a connection must then give
	// scopes.
	ScopeClaim bool
	// SubjectHint, when set, makes assertionSubject required and says
	// what it is at this provider.
	SubjectHint string
}

// GrantCount is how many active grants a provider keeps per user and
// client.
type GrantCount int

const (
	// GrantsUnknown: the provider does not say.
	GrantsUnknown GrantCount = iota
	// GrantsSeveral: a new consent leaves earlier grants active (up to a
	// limit, past which the oldest goes).
	GrantsSeveral
	// GrantsOne: a new consent revokes the earlier grant.
	GrantsOne
)

// tenantPlaceholder is replaced in a preset's URLs by the connection's
// tenant.
const tenantPlaceholder = "{tenant}"

// genericPreset is the preset of connections that name no provider.
const genericPreset = "generic"

// Defaults that apply when neither the connection nor its preset says.
const (
	defaultRefreshBefore   = 5 * time.Minute
	defaultDefaultLifetime = time.Hour
)

const day = 24 * time.Hour

// presets is kept sorted by name. Every fact in it was checked against the
// Source, or the source its Notes name; where a provider documents nothing,
// Notes say what was assumed and why.
var presets = []Preset{
	{
		Name:             "amazon",
		Title:            "Amazon (Login with Amazon)",
		TokenURL:         "https://api.amazon.com/auth/o2/token", // #nosec G101 -- the public token endpoint, no credential
		AuthorizationURL: "https://www.amazon.com/ap/oa",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		// "allows you to trade in the refresh token for a new access
		// token and a new refresh token."
		Rotating:        true,
		DefaultLifetime: time.Hour,
		RefreshBefore:   defaultRefreshBefore,
		Summary:         "Selling Partner API and Amazon Ads; regional token URLs for Europe and the Far East",
		Notes: "Login with Amazon, the token service of the Selling Partner API and the Amazon Ads API. Access " +
			"tokens last one hour. Amazon says a refresh returns a new refresh token too, so the refresh token is " +
			"treated as rotating; how long an unused one lives is not documented. LWA also answers at " +
			"https://api.amazon.co.uk/auth/o2/token (Europe) and https://api.amazon.co.jp/auth/o2/token (Far East): " +
			"set tokenUrl for an API that wants a regional endpoint. Selling partners consent in Seller Central, " +
			"not at the authorization URL.",
		Source: "https://developer.amazon.com/docs/login-with-amazon/access-token.html",
	},
	{
		Name:             "atlassian",
		Title:            "Atlassian (Jira, Confluence)",
		TokenURL:         "https://auth.atlassian.com/oauth/token", // #nosec G101 -- the public token endpoint, no credential
		AuthorizationURL: "https://auth.atlassian.com/authorize",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		Rotating:         true,
		// "There is a 10-minutes leeway window after the rotating refresh
		// token exchange where old access token and refresh token are
		// still valid." (Atlassian staff, developer community)
		ReuseGrace:      10 * time.Minute,
		DefaultLifetime: time.Hour,
		RefreshBefore:   defaultRefreshBefore,
		IdleExpiry:      90 * day,
		Summary:         "Jira and Confluence Cloud; refresh tokens also expire 365 days after consent",
		Notes: "Atlassian Cloud apps over OAuth 2.0 (3LO); consent must include offline_access. Access tokens last " +
			"one hour. Every refresh returns a new refresh token, and the old one stays valid for 10 minutes " +
			"(https://community.developer.atlassian.com/t/the-old-access-token-will-be-revoked-during-the-refresh-token-exchange/83103). " +
			"Refresh tokens expire after 90 days unused and 365 days after consent whatever their use " +
			"(https://community.developer.atlassian.com/t/refresh-token-expire-after-36000-seconds/60806/2): " +
			"consent again within a year.",
		Source: "https://developer.atlassian.com/cloud/oauth/getting-started/refresh-tokens",
	},
	{
		Name:             "box",
		Title:            "Box",
		TokenURL:         "https://api.box.com/oauth2/token", // #nosec G101 -- the public token endpoint, no credential
		AuthorizationURL: "https://account.box.com/api/oauth2/authorize",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		// "can be used to obtain a new Access Token and Refresh Token only
		// once."
		Rotating:        true,
		DefaultLifetime: time.Hour,
		RefreshBefore:   defaultRefreshBefore,
		IdleExpiry:      60 * day,
		Summary:         "single-use refresh tokens, valid 60 days",
		Notes: "Access tokens last 60 minutes. A refresh token can be redeemed once, within 60 days; every refresh " +
			"returns a new one. Box's Client Credentials Grant issues no refresh token " +
			"(https://developer.box.com/guides/authentication/tokens/access-tokens/): use grant " +
			"client_credentials, with the subject Box's guide asks for in params.",
		Source: "https://developer.box.com/guides/authentication/tokens/refresh",
	},
	{
		Name:             "docusign",
		Title:            "Docusign",
		TokenURL:         "https://account.docusign.com/oauth/token", // #nosec G101 -- the public token endpoint, no credential
		AuthorizationURL: "https://account.docusign.com/oauth/auth",
		AuthStyle:        broker.AuthBasic,
		Grant:            broker.GrantRefreshToken,
		// The endpoint exchanges "a refresh token for an access token and
		// a new refresh token".
		Rotating:        true,
		DefaultLifetime: time.Hour,
		RefreshBefore:   defaultRefreshBefore,
		IdleExpiry:      30 * day,
		Summary:         "production accounts; developer accounts use docusign-demo",
		Notes: "Confidential Authorization Code Grant (JWT Grant is not supported here). Every refresh returns a " +
			"new refresh token. Responses carry expires_in; an hour is assumed without it. Refresh tokens " +
			"are reported to last 30 days, so an unused one is taken to expire then (the Source page does " +
			"not say). Developer (demo) accounts use the docusign-demo provider.",
		Source: "https://developers.docusign.com/platform/auth/reference/obtain-access-token",
	},
	{
		Name:             "docusign-demo",
		Title:            "Docusign developer (demo)",
		TokenURL:         "https://account-d.docusign.com/oauth/token", // #nosec G101 -- the public token endpoint, no credential
		AuthorizationURL: "https://account-d.docusign.com/oauth/auth",
		AuthStyle:        broker.AuthBasic,
		Grant:            broker.GrantRefreshToken,
		Rotating:         true,
		DefaultLifetime:  time.Hour,
		RefreshBefore:    defaultRefreshBefore,
		IdleExpiry:       30 * day,
		Summary:          "Docusign developer accounts (account-d.docusign.com)",
		Notes:            "Docusign developer accounts sign in at account-d.docusign.com; otherwise as the docusign provider.",
		Source:           "https://developers.docusign.com/platform/auth/reference/obtain-access-token",
	},
	{
		Name:      "docusign-jwt",
		Title:     "Docusign (JWT Grant)",
		TokenURL:  "https://account.docusign.com/oauth/token", // #nosec G101 -- the public token endpoint, no credential
		AuthStyle: broker.AuthNone,
		Grant:     broker.GrantJWTBearer,
		// "aud: The URI of the authentication service instance to be
		// used": account-d.docusign.com or account.docusign.com, the
		// host alone.
		AudienceIsTokenHost: true,
		ScopeClaim:          true,
		SubjectHint:         "the id (a GUID) of the user the integration acts for, who has consented to impersonation",
		DefaultLifetime:     time.Hour,
		RefreshBefore:       defaultRefreshBefore,
		Summary:             "no refresh token: a signed assertion (iss integration key, sub user id) per token",
		Notes: "JWT Grant: clientId is the integration key, assertionSubject the user id, scopes for example " +
			"[\"signature\", \"impersonation\"] (they go in the assertion's scope claim), and the RSA key the " +
			"integration registers is the Key Vault key signingKey (handler key prints it). Developer accounts: " +
			"tokenUrl https://account-d.docusign.com/oauth/token (aud follows the token URL's host). The user " +
			"consents once to the impersonation scope.",
		Source: "https://developers.docusign.com/platform/auth/jwt/jwt-get-token/",
	},
	{
		Name:             "dropbox",
		Title:            "Dropbox",
		TokenURL:         "https://api.dropboxapi.com/oauth2/token", // #nosec G101 -- the public token endpoint, no credential
		AuthorizationURL: "https://www.dropbox.com/oauth2/authorize",
		AuthStyle:        broker.AuthBasic,
		Grant:            broker.GrantRefreshToken,
		// The refresh token is long-lived and a refresh returns only an
		// access token.
		Rotating: false,
		// Short-lived access tokens last four hours (expires_in 14400).
		DefaultLifetime: 4 * time.Hour,
		RefreshBefore:   defaultRefreshBefore,
		Summary:         "four-hour access tokens; request token_access_type=offline at consent",
		Notes: "Request token_access_type=offline at consent to get a refresh token. Access tokens last four " +
			"hours. The refresh token is long-lived and a refresh returns only an access token. Dropbox's " +
			"examples send the client credentials as a Basic header.",
		Source: "https://dropbox.tech/developers/using-oauth-2-0-with-offline-access",
	},
	{
		Name:             "exact-online",
		Title:            "Exact Online",
		TokenURL:         "https://start.exactonline." + tenantPlaceholder + "/api/oauth2/token",
		AuthorizationURL: "https://start.exactonline." + tenantPlaceholder + "/api/oauth2/auth",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		Rotating:         true,
		DefaultLifetime:  10 * time.Minute,
		// Exact hands out a new access token only in the last 30 seconds
		// of the old one's life (at most one per 9.5 minutes).
		RefreshBefore: 30 * time.Second,
		IdleExpiry:    30 * day,
		NeedsTenant:   true,
		TenantHint:    "the country domain of the company's Exact Online site, such as nl for start.exactonline.nl or de for start.exactonline.de",
		Summary:       "10-minute access tokens, refreshable only in their last 30 seconds; tenant is the country domain",
		Notes: "Access tokens last 10 minutes, and Exact refuses a new one until the old one has at most 30 seconds " +
			"left, so refreshBefore is 30s and callers must not ask for a minValidity above 30 seconds. Every " +
			"refresh returns a new refresh token and retires the old one. An unused refresh token expires " +
			"after 30 days (Exact has been shortening this from 180). Exact's own developer pages were not " +
			"available to check against; the facts come from the Source (Invantive, an Exact Online " +
			"integrator) and client credentials go in the form body as in the Picqer client " +
			"(https://github.com/picqer/exact-php-client).",
		Source: "https://forums.invantive.com/t/exact-online-error-message-old-refresh-token-used/2903",
	},
	{
		Name:            genericPreset,
		Title:           "Any OAuth 2.0 provider",
		Grant:           broker.GrantRefreshToken,
		DefaultLifetime: defaultDefaultLifetime,
		RefreshBefore:   defaultRefreshBefore,
		Summary:         "tokenUrl and clientAuth required",
		Notes: "Any RFC 6749 token endpoint. tokenUrl and clientAuth are required; set rotating " +
			"(and reuseGrace) if the provider replaces refresh tokens, and idleExpiry if unused " +
			"refresh tokens expire.",
		Source: "https://www.rfc-editor.org/rfc/rfc6749",
	},
	{
		Name:             "gitlab",
		Title:            "GitLab",
		TokenURL:         "https://gitlab.com/oauth/token", // #nosec G101 -- the public token endpoint, no credential
		AuthorizationURL: "https://gitlab.com/oauth/authorize",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		// A refresh "invalidates the existing access_token and
		// refresh_token".
		Rotating: true,
		// Two hours since GitLab 15.0, and some versions leave expires_in
		// out of the response (gitlab-org/gitlab#360729).
		DefaultLifetime: 2 * time.Hour,
		RefreshBefore:   defaultRefreshBefore,
		Summary:         "gitlab.com; self-managed instances set tokenUrl",
		Notes: "Access tokens expire after two hours, assumed when a response leaves expires_in out, as some GitLab " +
			"versions do (https://gitlab.com/gitlab-org/gitlab/-/issues/360729). A refresh invalidates the old " +
			"access token and the old refresh token at once. For a self-managed GitLab set tokenUrl to " +
			"https://<host>/oauth/token.",
		Source: "https://docs.gitlab.com/ee/api/oauth2.html#authorization-code-flow",
	},
	{
		Name:             "google",
		Title:            "Google",
		TokenURL:         "https://oauth2.googleapis.com/token", // #nosec G101 -- the public token endpoint, no credential
		AuthorizationURL: "https://accounts.google.com/o/oauth2/v2/auth",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		DefaultLifetime:  time.Hour,
		RefreshBefore:    defaultRefreshBefore,
		// Google revokes a refresh token that has not been used for six
		// months (https://developers.google.com/identity/protocols/oauth2#expiration).
		IdleExpiry: 180 * day,
		Summary:    "apps in \"Testing\" get refresh tokens that die after 7 days",
		Notes: "Access tokens last one hour; refresh tokens are not rotated. Request access_type=offline " +
			"at consent to get a refresh token. Apps whose OAuth consent screen is in \"Testing\" get " +
			"refresh tokens that expire after 7 days whatever their use.",
		Source: "https://developers.google.com/identity/protocols/oauth2/web-server#offline",
		// "Limits apply to the number of refresh tokens that are issued per
		// client-user combination ... older refresh tokens stop working":
		// several per user and client, up to the limit.
		SeveralGrants:       GrantsSeveral,
		SeveralGrantsSource: "https://developers.google.com/identity/protocols/oauth2#expiration",
	},
	{
		Name:              "google-service-account",
		Title:             "Google service account",
		TokenURL:          "https://oauth2.googleapis.com/token", // #nosec G101 -- the public token endpoint, no credential
		AuthStyle:         broker.AuthNone,
		Grant:             broker.GrantJWTBearer,
		AssertionAudience: "https://oauth2.googleapis.com/token",
		ScopeClaim:        true,
		DefaultLifetime:   time.Hour,
		RefreshBefore:     defaultRefreshBefore,
		Summary:           "no refresh token: a signed assertion (iss the service account's e-mail, scope claim) per token",
		Notes: "clientId is the service account's client_email, scopes the API scopes (they go in the " +
			"assertion's scope claim), assertionSubject a user to impersonate under domain-wide delegation " +
			"(optional). The service account's key is the Key Vault key signingKey; upload its public key " +
			"(handler key -format pem) as the service account's key instead of downloading one from Google.",
		Source: "https://developers.google.com/identity/protocols/oauth2/service-account#authorizingrequests",
	},
	{
		Name:             "hubspot",
		Title:            "HubSpot",
		TokenURL:         "https://api.hubapi.com/oauth/2026-03/token", // #nosec G101 -- the public token endpoint, no credential
		AuthorizationURL: "https://app.hubspot.com/oauth/authorize",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		DefaultLifetime:  30 * time.Minute,
		RefreshBefore:    defaultRefreshBefore,
		Summary:          "date-versioned endpoint; v1 is deprecated on 2027-02-16",
		Notes: "Access tokens last 30 minutes. HubSpot documents the refresh token as a long-term " +
			"credential kept from installation, so it is treated as not rotating; a refresh token the " +
			"endpoint does return is stored all the same. The date-versioned endpoint takes every " +
			"parameter in the body; the v1 endpoint (/oauth/v1/token) is deprecated on 2027-02-16.",
		Source: "https://developers.hubspot.com/docs/api-reference/2026-03/authentication/manage-oauth-tokens",
	},
	{
		Name:             "linkedin",
		Title:            "LinkedIn",
		TokenURL:         "https://www.linkedin.com/oauth/v2/accessToken", // #nosec G101 -- the public token endpoint, no credential
		AuthorizationURL: "https://www.linkedin.com/oauth/v2/authorization",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		// Refreshing keeps the refresh token and its original expiry.
		Rotating: false,
		// Access tokens last 60 days and responses say so; a day is the
		// longest a connection may assume.
		DefaultLifetime: 24 * time.Hour,
		RefreshBefore:   defaultRefreshBefore,
		Summary:         "refresh tokens for approved partners only; they expire 365 days after consent",
		Notes: "Only approved Marketing Developer Platform partners get refresh tokens; other apps get a 60-day " +
			"access token and must repeat consent. Refresh tokens last 365 days from consent and refreshing " +
			"does not extend them: consent again within a year. Access tokens last 60 days and responses " +
			"carry expires_in; a day is assumed without it.",
		Source: "https://learn.microsoft.com/en-us/linkedin/shared/authentication/programmatic-refresh-tokens",
	},
	{
		Name:             "microsoft",
		Title:            "Microsoft Entra ID",
		TokenURL:         "https://login.microsoftonline.com/" + tenantPlaceholder + "/oauth2/v2.0/token",
		AuthorizationURL: "https://login.microsoftonline.com/" + tenantPlaceholder + "/oauth2/v2.0/authorize",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		// Entra issues a new refresh token on every use but does not
		// revoke the old one, so redeeming it again after a lost response
		// succeeds; a day is well inside its own lifetime.
		Rotating:   true,
		ReuseGrace: 24 * time.Hour,
		// Access tokens get a random lifetime of 60-90 minutes and
		// responses carry expires_in; an hour is the safe floor.
		DefaultLifetime: time.Hour,
		RefreshBefore:   defaultRefreshBefore,
		IdleExpiry:      90 * day,
		NeedsTenant:     true,
		TenantHint:      entraTenantHint,
		Summary:         "Graph, Dynamics 365, Business Central, Power BI; tenant is the directory",
		Notes: "Microsoft Entra ID (v2.0 endpoints), for Graph, Dynamics 365, Business Central, Power BI and " +
			"every other API that trusts Entra. Set \"tenant\" to the directory id, a verified " +
			"domain, or organizations/common/consumers. Consent must include offline_access. Refresh " +
			"tokens die after 90 days unused (AADSTS700082). App registration client secrets expire; " +
			"record the expiry on the secret so the sweep can warn.",
		Source: "https://learn.microsoft.com/entra/identity-platform/refresh-tokens",
		// "Refresh tokens are bound to a combination of user and client";
		// each authorization issues its own, and redeeming one does not
		// revoke others.
		SeveralGrants:       GrantsSeveral,
		SeveralGrantsSource: "https://learn.microsoft.com/entra/identity-platform/refresh-tokens",
	},
	{
		Name:             "netsuite",
		Title:            "Oracle NetSuite",
		TokenURL:         "https://" + tenantPlaceholder + ".suitetalk.api.netsuite.com/services/rest/auth/oauth2/v1/token",
		AuthorizationURL: "https://" + tenantPlaceholder + ".app.netsuite.com/app/login/oauth2/authorize.nl",
		AuthStyle:        broker.AuthBasic,
		Grant:            broker.GrantRefreshToken,
		// For confidential clients a refresh returns only an access
		// token.
		Rotating: false,
		// "The access token is valid for 60 minutes."
		DefaultLifetime: time.Hour,
		RefreshBefore:   defaultRefreshBefore,
		NeedsTenant:     true,
		TenantHint:      "the account id as the account's URLs spell it: lower case, with - for _ (1234567, or 1234567-sb1 for a sandbox)",
		Summary:         "refresh tokens expire 7 days after consent whatever their use; tenant is the account id",
		Notes: "REST web services, RESTlets and SuiteAnalytics Connect. Access tokens last 60 minutes. A " +
			"confidential client's refresh returns only an access token, and its refresh token expires 7 days " +
			"after consent whatever its use (reported by integrators, e.g. " +
			"https://prismatic.io/docs/components/netsuite; Oracle's pages cited do not say), so the connection " +
			"needs consent again every week. Public clients instead get a new single-use refresh token, valid " +
			"three hours, on every refresh. NetSuite's machine-to-machine client credentials flow signs a JWT " +
			"assertion, which this handler does not support.",
		Source: "https://docs.oracle.com/en/cloud/saas/netsuite/ns-online-help/section_160855594402.html",
	},
	{
		Name:             "pipedrive",
		Title:            "Pipedrive",
		TokenURL:         "https://oauth.pipedrive.com/oauth/token", // #nosec G101 -- the public token endpoint, no credential
		AuthorizationURL: "https://oauth.pipedrive.com/oauth/authorize",
		AuthStyle:        broker.AuthBasic,
		Grant:            broker.GrantRefreshToken,
		// Not documented either way: the safe assumption.
		Rotating:        true,
		DefaultLifetime: time.Hour,
		RefreshBefore:   defaultRefreshBefore,
		Summary:         "rotation and refresh-token lifetime not documented",
		Notes: "Responses carry expires_in; an hour is assumed without it. Pipedrive's reference says neither " +
			"whether a refresh replaces the refresh token (so it is treated as rotating, and a refresh whose " +
			"response was lost is not retried) nor how long an unused one lives.",
		Source: "https://developers.pipedrive.com/docs/api/v1/Oauth",
	},
	{
		Name:             "quickbooks",
		Title:            "QuickBooks Online (Intuit)",
		TokenURL:         "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer", // #nosec G101 -- the public token endpoint, no credential
		AuthorizationURL: "https://appcenter.intuit.com/connect/oauth2",
		AuthStyle:        broker.AuthBasic,
		Grant:            broker.GrantRefreshToken,
		// The refresh token's value changes about once a day, and the
		// latest one must always be kept.
		Rotating:        true,
		DefaultLifetime: time.Hour,
		RefreshBefore:   defaultRefreshBefore,
		IdleExpiry:      100 * day,
		Summary:         "refresh token changes about daily; 100 days unused, five years at most",
		Notes: "Access tokens last one hour. The refresh token's value changes about every 24 hours and the " +
			"latest one must always be used; one unused for 100 days expires " +
			"(https://github.com/IntuitDeveloper/OAuth2-Dotnet_UsingSDK/blob/master/docs/help/Tokens.md), and " +
			"every refresh token now expires five years after consent at the latest " +
			"(https://github.com/intuit/QuickBooks-V3-Java-SDK/releases/tag/v6.5.4). Client credentials go in " +
			"a Basic header.",
		Source: "https://developer.intuit.com/app/developer/qbo/docs/develop/authentication-and-authorization/faq",
		// The Accounting API scope; QuickBooks issues a refresh token with
		// every authorization code.
		ConsentScopes:       []string{"com.intuit.quickbooks.accounting"},
		ConsentScopesSource: "https://developer.intuit.com/app/developer/qbo/docs/learn/scopes",
	},
	{
		Name:             "sage-accounting",
		Title:            "Sage Business Cloud Accounting",
		TokenURL:         "https://oauth.accounting.sage.com/token", // #nosec G101 -- the public token endpoint, no credential
		AuthorizationURL: "https://www.sageone.com/oauth2/auth/central",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		Rotating:         true,
		DefaultLifetime:  5 * time.Minute,
		// A fifth of the 5-minute lifetime, well under the cap of half.
		RefreshBefore: time.Minute,
		IdleExpiry:    31 * day,
		Summary:       "5-minute access tokens; single-use refresh tokens, valid 31 days",
		Notes: "Sage Business Cloud Accounting, API v3.1 (not Sage Intacct, 50, 200 or X3). Access tokens last " +
			"five minutes; refresh tokens are single-use and expire after 31 days " +
			"(https://truto.one/blog/how-to-create-a-full-technical-integration-guide-for-sage-business-cloud-accounting/). " +
			"Add filter=apiv3.1 to the authorization URL at consent.",
		Source: "https://developer.sage.com/accounting/guides/authenticating/authentication",
	},
	{
		Name:             "salesforce",
		Title:            "Salesforce",
		TokenURL:         "https://login.salesforce.com/services/oauth2/token", // #nosec G101 -- the public token endpoint, no credential
		AuthorizationURL: "https://login.salesforce.com/services/oauth2/authorize",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		// Rotation is an opt-in setting of the connected app. Treating the
		// refresh token as rotating is safe either way: it only gives up
		// retrying a refresh whose response was lost.
		Rotating: true,
		// Salesforce sends no expires_in: an access token lives as long as
		// the org's session timeout (15 minutes to 24 hours, 2 hours by
		// default). An hour is half the default.
		DefaultLifetime: time.Hour,
		RefreshBefore:   defaultRefreshBefore,
		// The refresh token policy is per connected app: valid until
		// revoked by default, and Salesforce recommends a 30-day idle
		// limit. Keeping the token alive on that schedule costs one refresh
		// a month and covers both.
		IdleExpiry: 30 * day,
		Summary:    "no expires_in: set defaultLifetime below the org's session timeout",
		Notes: "Token responses carry no expires_in, so the access token is assumed to live one hour; an " +
			"org whose session timeout is shorter must set defaultLifetime to it. Use tokenUrl " +
			"https://<my-domain>.my.salesforce.com/services/oauth2/token for a My Domain login, or the " +
			"salesforce-sandbox provider for sandboxes. A refresh token policy shorter than 30 days " +
			"unused needs idleExpiry.",
		Source: "https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_refresh_token_flow.htm&type=5",
		// api: the REST and Bulk APIs; refresh_token: without it no
		// refresh token is issued.
		ConsentScopes:       []string{"api", "refresh_token"},
		ConsentScopesSource: "https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_tokens_scopes.htm",
		// "Every connected application permits five distinctive approvals
		// per user. Once a sixth approval is created, the oldest approval is
		// revoked."
		SeveralGrants:       GrantsSeveral,
		SeveralGrantsSource: "https://docs.oracle.com/en/cloud/paas/integration-cloud/sforce-adapter/error-when-connected-app-attempts-access-your-salesforce-data.html",
	},
	{
		Name:      "salesforce-jwt",
		Title:     "Salesforce (JWT bearer flow)",
		TokenURL:  "https://login.salesforce.com/services/oauth2/token", // #nosec G101 -- the public token endpoint, no credential
		AuthStyle: broker.AuthNone,
		Grant:     broker.GrantJWTBearer,
		// "aud: the authorization server's URL": https://login.salesforce.com
		// (https://test.salesforce.com for a sandbox), not the token URL.
		AssertionAudience: "https://login.salesforce.com",
		SubjectHint:       "the Salesforce username of the user the connected app acts for",
		DefaultLifetime:   time.Hour,
		RefreshBefore:     defaultRefreshBefore,
		Summary:           "no refresh token: a signed assertion (iss consumer key, sub username) per token",
		Notes: "OAuth 2.0 JWT bearer flow: clientId is the connected app's consumer key, assertionSubject the " +
			"username, and the certificate uploaded to the connected app holds the public half of the Key Vault " +
			"key signingKey. The assertion expires within three minutes, as Salesforce requires. Sandboxes: " +
			"tokenUrl https://test.salesforce.com/services/oauth2/token and assertionAudience " +
			"https://test.salesforce.com. Responses carry no expires_in: the session timeout applies, as for salesforce.",
		Source: "https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm&type=5",
	},
	{
		Name:             "salesforce-sandbox",
		Title:            "Salesforce sandbox",
		TokenURL:         "https://test.salesforce.com/services/oauth2/token", // #nosec G101 -- the public token endpoint, no credential
		AuthorizationURL: "https://test.salesforce.com/services/oauth2/authorize",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		Rotating:         true,
		DefaultLifetime:  time.Hour,
		RefreshBefore:    defaultRefreshBefore,
		IdleExpiry:       30 * day,
		Summary:          "Salesforce sandboxes (test.salesforce.com)",
		Notes:            "Salesforce sandboxes log in at test.salesforce.com; otherwise as the salesforce provider.",
		Source:           "https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_refresh_token_flow.htm&type=5",
		// As salesforce.
		ConsentScopes:       []string{"api", "refresh_token"},
		ConsentScopesSource: "https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_tokens_scopes.htm",
		// "Every connected application permits five distinctive approvals
		// per user. Once a sixth approval is created, the oldest approval is
		// revoked."
		SeveralGrants:       GrantsSeveral,
		SeveralGrantsSource: "https://docs.oracle.com/en/cloud/paas/integration-cloud/sforce-adapter/error-when-connected-app-attempts-access-your-salesforce-data.html",
	},
	{
		Name:             "servicenow",
		Title:            "ServiceNow",
		TokenURL:         "https://" + tenantPlaceholder + ".service-now.com/oauth_token.do",
		AuthorizationURL: "https://" + tenantPlaceholder + ".service-now.com/oauth_auth.do",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		// Not documented either way: the safe assumption.
		Rotating: true,
		// "By default, an instance issues access tokens with a 30-minute
		// lifespan."
		DefaultLifetime: 30 * time.Minute,
		RefreshBefore:   defaultRefreshBefore,
		NeedsTenant:     true,
		TenantHint:      "the instance name: dev12345 for https://dev12345.service-now.com",
		Summary:         "refresh tokens last 100 days from issue by default; tenant is the instance name",
		Notes: "The instance's OAuth application registry entry sets both lifetimes: by default access tokens " +
			"last 30 minutes and refresh tokens 100 days from issue. ServiceNow does not document whether a " +
			"refresh issues a new refresh token, so it is treated as rotating; if it does not, the lifespan " +
			"counts from consent: raise it in the registry entry, or consent again before it ends.",
		Source: "https://www.servicenow.com/docs/r/zurich/platform-security/authentication/t_ManageTokens.html",
	},
	{
		Name:             "xero",
		Title:            "Xero",
		TokenURL:         "https://identity.xero.com/connect/token", // #nosec G101 -- the public token endpoint, no credential
		AuthorizationURL: "https://login.xero.com/identity/connect/authorize",
		AuthStyle:        broker.AuthBasic,
		Grant:            broker.GrantRefreshToken,
		Rotating:         true,
		// "If you don't receive the response you can retry refreshing your
		// existing refresh token for a grace period of 30 minutes."
		ReuseGrace:      30 * time.Minute,
		DefaultLifetime: 30 * time.Minute,
		RefreshBefore:   defaultRefreshBefore,
		IdleExpiry:      60 * day,
		Summary:         "consent must include offline_access",
		Notes: "Access tokens last 30 minutes; every refresh returns a new refresh token, and the old one " +
			"stays redeemable for 30 minutes. Unused refresh tokens expire after 60 days. Consent must " +
			"include offline_access. Client authentication is HTTP Basic " +
			"(https://developer.xero.com/documentation/oauth2/auth-flow).",
		Source: "https://developer.xero.com/faq/oauth2",
		// The OpenID scopes name the person who consented;
		// accounting.settings.read exists for apps made before and after
		// 2 March 2026, when Xero replaced accounting.transactions with
		// granular scopes (accounting.invoices, ...) for new apps. Give the
		// API scopes a pipeline needs in consentScopes.
		ConsentScopes:       []string{"openid", "profile", "email", "accounting.settings.read"},
		ConsentScopesSource: "https://developer.xero.com/documentation/oauth2/scopes",
	},
	{
		Name:             "zendesk",
		Title:            "Zendesk",
		TokenURL:         "https://" + tenantPlaceholder + ".zendesk.com/oauth/tokens",
		AuthorizationURL: "https://" + tenantPlaceholder + ".zendesk.com/oauth/authorizations/new",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		// A refresh "will also return a refresh token and delete the
		// previous access and refresh tokens".
		Rotating:        true,
		DefaultLifetime: time.Hour,
		RefreshBefore:   defaultRefreshBefore,
		NeedsTenant:     true,
		TenantHint:      "the account's subdomain: mycompany for https://mycompany.zendesk.com",
		Summary:         "rotating since 2025, required from April 2026; tenant is the subdomain",
		Notes: "Zendesk added the refresh token grant in April 2025 and requires it from 30 April 2026 " +
			"(https://support.zendesk.com/hc/en-us/articles/9182123625370). Every refresh returns a new " +
			"access and refresh token and deletes the old pair. The client chooses the lifetimes with the " +
			"expires_in and refresh_token_expires_in parameters (set them in params); a response without " +
			"expires_in is assumed to last an hour.",
		Source: "https://developer.zendesk.com/documentation/api-basics/authentication/refresh-token",
	},
	{
		Name:             "zoho",
		Title:            "Zoho",
		TokenURL:         "https://" + tenantPlaceholder + "/oauth/v2/token",
		AuthorizationURL: "https://" + tenantPlaceholder + "/oauth/v2/auth",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		// A refresh returns an access token and no refresh token.
		Rotating: false,
		// "This token is valid for 1 hour."
		DefaultLifetime: time.Hour,
		RefreshBefore:   defaultRefreshBefore,
		NeedsTenant:     true,
		TenantHint: "the accounts server of the user's Zoho data center: accounts.zoho.com, accounts.zoho.eu, " +
			"accounts.zoho.in, accounts.zoho.com.au, accounts.zoho.jp, accounts.zohocloud.ca, accounts.zoho.sa " +
			"or accounts.zoho.com.cn",
		Summary: "ten access tokens per ten minutes per refresh token; tenant is the data center's accounts server",
		Notes: "Zoho CRM, Books, Analytics and the other Zoho apps. Access tokens last one hour; the refresh token " +
			"is not replaced on refresh. A refresh token mints at most ten access tokens in ten minutes, and " +
			"a user keeps at most 20 refresh tokens, the 21st deleting the oldest " +
			"(https://www.zoho.com/workerly/developer-guide/refresh.html): give each connection its own " +
			"consent and never create refresh tokens in a loop. Request access_type=offline at consent.",
		Source: "https://www.zoho.com/accounts/protocol/oauth/web-apps/access-token-expiry.html",
		// "A user can have a maximum of twenty refresh tokens."
		SeveralGrants:       GrantsSeveral,
		SeveralGrantsSource: "https://www.zoho.com/projects/help/rest-api/faq/oauth.html",
	},
}

// Presets returns every built-in preset, sorted by name. The result is a
// copy: changing it changes nothing else.
func Presets() []Preset {
	out := make([]Preset, len(presets))
	for i, p := range presets {
		out[i] = p.clone()
	}
	return out
}

// LookupPreset returns the preset with the given name. Names are
// lower-case and matched exactly.
func LookupPreset(name string) (Preset, bool) {
	i, ok := slices.BinarySearchFunc(presets, name, func(p Preset, name string) int {
		return strings.Compare(p.Name, name)
	})
	if !ok {
		return Preset{}, false
	}
	return presets[i].clone(), true
}

func (p Preset) clone() Preset {
	p.Scopes = slices.Clone(p.Scopes)
	return p
}

// presetNames lists the preset names, for messages.
func presetNames() []string {
	names := make([]string, len(presets))
	for i, p := range presets {
		names[i] = p.Name
	}
	return names
}

// providerAliases maps names people reach for to the preset they mean, so
// a wrong provider name gets a useful suggestion.
var providerAliases = map[string]string{
	"aad":              "microsoft",
	"azure":            "microsoft",
	"azuread":          "microsoft",
	"businesscentral":  "microsoft",
	"dynamics":         "microsoft",
	"dynamics365":      "microsoft",
	"entra":            "microsoft",
	"entraid":          "microsoft",
	"graph":            "microsoft",
	"msgraph":          "microsoft",
	"microsoft365":     "microsoft",
	"office365":        "microsoft",
	"powerbi":          "microsoft",
	"gmail":            "google",
	"sfdc":             "salesforce",
	"intuit":           "quickbooks",
	"qbo":              "quickbooks",
	"quickbooksonline": "quickbooks",
	"jira":             "atlassian",
	"confluence":       "atlassian",
	"lwa":              "amazon",
	"spapi":            "amazon",
	"sellingpartner":   "amazon",
	"amazonads":        "amazon",
	"exact":            "exact-online",
	"sage":             "sage-accounting",
	"sageone":          "sage-accounting",
	"oraclenetsuite":   "netsuite",
	"docusigndev":      "docusign-demo",
	"docusignsandbox":  "docusign-demo",
	"zohocrm":          "zoho",
	"zohobooks":        "zoho",
	"snow":             "servicenow",
}
