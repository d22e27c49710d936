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
	// TokenURL is the token endpoint. It may contain the placeholder
	// {tenant}, replaced by the connection's "tenant" (see NeedsTenant).
	// Empty for "generic": the connection must then give tokenUrl.
	TokenURL string
	// AuthorizationURL is where a person consents to obtain the first
	// refresh token. The handler never calls it; it is documentation.
	AuthorizationURL string
	// AuthStyle is how the client authenticates at TokenURL. Empty for
	// "generic": the connection must then give clientAuth.
	AuthStyle broker.AuthStyle
	// Grant is the grant a connection uses unless it says otherwise.
	Grant broker.GrantType
	// Rotating reports whether the provider replaces the refresh token on
	// every refresh (see broker.Connection.Rotating).
	Rotating bool
	// ReuseGrace is how long a rotated-out refresh token stays redeemable.
	ReuseGrace time.Duration
	// DefaultLifetime is assumed when a token response has no expires_in.
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
	// must say which directory it belongs to.
	NeedsTenant bool
	// Notes are what an operator should know when setting the provider up.
	Notes string
	// Source is where the facts above come from.
	Source string
}

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

// presets is kept sorted by name. Every number in it was checked against
// the provider's documentation (Source); where the provider documents
// nothing, Notes say what was assumed and why.
var presets = []Preset{
	{
		Name:            genericPreset,
		Grant:           broker.GrantRefreshToken,
		DefaultLifetime: defaultDefaultLifetime,
		RefreshBefore:   defaultRefreshBefore,
		Notes: "Any RFC 6749 token endpoint. tokenUrl and clientAuth are required; set rotating " +
			"(and reuseGrace) if the provider replaces refresh tokens, and idleExpiry if unused " +
			"refresh tokens expire.",
		Source: "https://www.rfc-editor.org/rfc/rfc6749",
	},
	{
		Name:             "google",
		TokenURL:         "https://oauth2.googleapis.com/token",
		AuthorizationURL: "https://accounts.google.com/o/oauth2/v2/auth",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		DefaultLifetime:  time.Hour,
		RefreshBefore:    defaultRefreshBefore,
		// Google revokes a refresh token that has not been used for six
		// months (https://developers.google.com/identity/protocols/oauth2#expiration).
		IdleExpiry: 180 * day,
		Notes: "Access tokens last one hour; refresh tokens are not rotated. Request access_type=offline " +
			"at consent to get a refresh token. Apps whose OAuth consent screen is in \"Testing\" get " +
			"refresh tokens that expire after 7 days whatever their use.",
		Source: "https://developers.google.com/identity/protocols/oauth2/web-server#offline",
	},
	{
		Name:             "hubspot",
		TokenURL:         "https://api.hubapi.com/oauth/2026-03/token",
		AuthorizationURL: "https://app.hubspot.com/oauth/authorize",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		DefaultLifetime:  30 * time.Minute,
		RefreshBefore:    defaultRefreshBefore,
		Notes: "Access tokens last 30 minutes. HubSpot documents the refresh token as a long-term " +
			"credential kept from installation, so it is treated as not rotating; a refresh token the " +
			"endpoint does return is stored all the same. The date-versioned endpoint takes every " +
			"parameter in the body; the v1 endpoint (/oauth/v1/token) is deprecated on 2027-02-16.",
		Source: "https://developers.hubspot.com/docs/api-reference/2026-03/authentication/manage-oauth-tokens",
	},
	{
		Name:             "microsoft",
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
		Notes: "Microsoft Entra ID (v2.0 endpoints). Set \"tenant\" to the directory id, a verified " +
			"domain, or organizations/common/consumers. Consent must include offline_access. Refresh " +
			"tokens die after 90 days unused (AADSTS700082). App registration client secrets expire; " +
			"record the expiry on the secret so the sweep can warn.",
		Source: "https://learn.microsoft.com/entra/identity-platform/refresh-tokens",
	},
	{
		Name:             "salesforce",
		TokenURL:         "https://login.salesforce.com/services/oauth2/token",
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
		Notes: "Token responses carry no expires_in, so the access token is assumed to live one hour; an " +
			"org whose session timeout is shorter must set defaultLifetime to it. Use tokenUrl " +
			"https://<my-domain>.my.salesforce.com/services/oauth2/token for a My Domain login, or the " +
			"salesforce-sandbox provider for sandboxes. A refresh token policy shorter than 30 days " +
			"unused needs idleExpiry.",
		Source: "https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_refresh_token_flow.htm&type=5",
	},
	{
		Name:             "salesforce-sandbox",
		TokenURL:         "https://test.salesforce.com/services/oauth2/token",
		AuthorizationURL: "https://test.salesforce.com/services/oauth2/authorize",
		AuthStyle:        broker.AuthBody,
		Grant:            broker.GrantRefreshToken,
		Rotating:         true,
		DefaultLifetime:  time.Hour,
		RefreshBefore:    defaultRefreshBefore,
		IdleExpiry:       30 * day,
		Notes:            "Salesforce sandboxes log in at test.salesforce.com; otherwise as the salesforce provider.",
		Source:           "https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_refresh_token_flow.htm&type=5",
	},
	{
		Name:             "xero",
		TokenURL:         "https://identity.xero.com/connect/token",
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
		Notes: "Access tokens last 30 minutes; every refresh returns a new refresh token, and the old one " +
			"stays redeemable for 30 minutes. Unused refresh tokens expire after 60 days. Consent must " +
			"include offline_access. Client authentication is HTTP Basic " +
			"(https://developer.xero.com/documentation/oauth2/auth-flow).",
		Source: "https://developer.xero.com/faq/oauth2",
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
	"aad":          "microsoft",
	"azure":        "microsoft",
	"azuread":      "microsoft",
	"entra":        "microsoft",
	"entraid":      "microsoft",
	"graph":        "microsoft",
	"msgraph":      "microsoft",
	"microsoft365": "microsoft",
	"office365":    "microsoft",
	"gmail":        "google",
	"sfdc":         "salesforce",
}
