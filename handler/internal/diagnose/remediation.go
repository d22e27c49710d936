package diagnose

import (
	"net/url"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// Remediation templates name what to fix through placeholders, so that every
// sentence names the connection's own secrets and settings:
//
//	{connection}    the connection's name, quoted
//	{provider}      the provider ("Xero", "Microsoft Entra ID", "the provider")
//	{Provider}      the same, capitalised to start a sentence
//	{client_id}     where the client id lives: a secret, or the connections file
//	{client_secret} the secret holding the client secret
//	{client_credential} the client secret, signing key or federated
//	                credential to check (broker.RenderRemediation)
//	{refresh_token} the secret holding the refresh token
//	{client_auth}   the connection's clientAuth, quoted
//	{grant}         the connection's grant, quoted
//	{connect}       " (run `<Input.ConnectCommand>`)", or nothing
//	{host}          the token URL's host
//	{wait}          how long until the next attempt
const (
	fixReauthorize = "Re-authorize connection {connection}: sign in to {provider} again, consent, " +
		"and write the new refresh token to {refresh_token}{connect}."
	fixInvalidGrant = "{Provider} no longer accepts the refresh token of connection {connection} (it expired, " +
		"was revoked, or was replaced by a newer one): re-authorize, and write the new refresh token to " +
		"{refresh_token}{connect}."
	fixAppOnly = "{Provider} refused the client-credentials grant of connection {connection}: check that the app " +
		"{client_id} names may use this grant at {provider} and has been granted the permissions its scopes ask for."
	fixInvalidClient = "{Provider} does not accept the client credentials of connection {connection}: " +
		"{client_id} must hold the client id and {client_credential}, and clientAuth {client_auth} must be how " +
		"{provider} expects them."
	fixClientNotFound = "{Provider} has no app with the client id of connection {connection}: check that {client_id} " +
		"holds the client id shown where the app is registered."
	fixDeletedClient = "The app of connection {connection} was deleted at {provider}: restore it, or register a new " +
		"one, store its client id in {client_id} and its secret in {client_secret}, and re-authorize."
	fixUnauthorizedClient = "{Provider} does not let the app of connection {connection} use the {grant} grant: " +
		"allow that grant for the app where it is registered, or correct \"grant\" in the connections file."
	fixUnsupportedGrant = "{Provider} does not support the {grant} grant that connection {connection} uses: correct " +
		"\"grant\" in the connections file, or its token URL if that points at the wrong endpoint."
	fixScope = "Correct the scopes of connection {connection} in the connections file: {provider} does not grant " +
		"them to this app, or they are not configured for it where it is registered."
	fixRequest = "Check the token request of connection {connection} against {provider}'s documentation: its token " +
		"URL, grant {grant}, clientAuth {client_auth}, scopes and params in the connections file."
	fixTenant  = "Correct the tenant in the token URL of connection {connection}: {provider} does not know it."
	fixConsent = "Nobody has consented to what connection {connection} asks for: re-authorize, consenting to all " +
		"its scopes, and write the new refresh token to {refresh_token}{connect}; if users may not consent to " +
		"this app, an administrator must grant consent first."
	fixInteraction = "{Provider} requires a person to sign in for connection {connection} (a policy such as " +
		"multi-factor authentication applies): re-authorize interactively and write the new refresh token to " +
		"{refresh_token}{connect}."
	fixRedirect = "The redirect URI used to authorize connection {connection} is not registered for its app at " +
		"{provider}: register it, then authorize again."
	fixCodeUsed = "The authorization code for connection {connection} expired or was already redeemed: start the " +
		"authorization again for a fresh code, and redeem it once."
	fixMalformed = "Nothing to change if this passes: the request is retried. If it persists, check that the token " +
		"URL of connection {connection} points at {provider}'s token endpoint and not at some other page on {host}."
	fixTokenURL = "Correct the token URL of connection {connection} in the connections file: what answers at " +
		"{host} is not {provider}'s token endpoint."
	fixForbidden = "Find out why {host} forbids the token requests of connection {connection} (an IP allow-list " +
		"or firewall at {provider}, or an app that may not use this endpoint), then retry."
	fixThrottled = "Nothing to change if this passes: {provider} is rate-limiting token requests for connection " +
		"{connection}, which resume {wait}. If it persists, look for something else requesting tokens with the " +
		"same client id in a loop."
)

// The generic remediations, as the broker's failure vocabulary words them.
var (
	fixNetwork = genericFix(broker.CategoryTransient)
	fixOutage  = genericFix(broker.CategoryProviderOutage)
)

// genericFix is the broker's remediation template of category c.
func genericFix(c Category) string {
	k, _ := broker.Failure(c)
	return k.Remedy
}

// Advice that depends on nothing but the HTTP status.
var (
	adviceThrottled = advice{category: Throttled, what: "the token endpoint is rate-limiting requests", fix: fixThrottled}
	adviceOutage    = advice{category: ProviderOutage, what: "the token endpoint failed with a server error", fix: fixOutage}
	// An error code this package does not know: permanent, because RFC
	// 6749 §5.2 codes describe the request, which does not change.
	adviceUnknownCode = advice{category: FixConfiguration,
		what: "the token endpoint refused the request with an error this handler does not know", fix: fixRequest}
)

// unnamedProvider stands for a provider without a preset.
const unnamedProvider = "the provider"

// entraName is how summaries and remediations name Microsoft's identity
// platform, whatever preset the connection uses.
const entraName = "Microsoft Entra ID"

// providerNames are the presets' names for people.
var providerNames = map[string]string{
	"google":             "Google",
	"hubspot":            "HubSpot",
	"microsoft":          entraName,
	"salesforce":         "Salesforce",
	"salesforce-sandbox": "Salesforce",
	"xero":               "Xero",
}

func providerName(c *broker.Connection) string {
	if c == nil {
		return unnamedProvider
	}
	if n, ok := providerNames[c.Provider]; ok {
		return n
	}
	return unnamedProvider
}

// summaryName starts a summary: the provider's name, or for a provider
// without one, the token endpoint's host, which says more than "the
// provider".
func summaryName(c *broker.Connection, provider string) string {
	if provider != unnamedProvider {
		return provider
	}
	if c != nil {
		if u, err := url.Parse(c.TokenURL); err == nil && u.Host != "" {
			return u.Host
		}
	}
	return "Token endpoint"
}

// render fills a remediation template for one connection: the broker's
// placeholders (broker.RenderRemediation), with the provider named and
// {connect} and {wait} filled in.
func render(tmpl string, in Input, grant broker.GrantType, provider string) string {
	c := in.Connection
	if c != nil && c.Grant != grant {
		cc := *c
		cc.Grant = grant
		c = &cc
	}
	connect := ""
	if in.ConnectCommand != "" {
		connect = " (run `" + in.ConnectCommand + "`)"
	}
	wait := "after a pause"
	if in.RetryAfter > 0 {
		wait = "after " + in.RetryAfter.Round(time.Second).String()
	}
	return broker.RenderRemediation(tmpl, c,
		"{provider}", provider,
		"{Provider}", capitalize(provider),
		"{connect}", connect,
		"{wait}", wait,
	)
}
