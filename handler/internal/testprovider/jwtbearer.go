package testprovider

import (
	"net/http"
	"net/url"
	"strings"
	"time"
)

// GrantJWTBearer is the grant_type of the JWT-bearer authorization grant
// (RFC 7523 §2.1).
const GrantJWTBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer" // #nosec G101 -- a grant type URN, no credential

// JWTBearer is a JWT-bearer grant the provider accepts (RFC 7523 §2.1):
// the assertion form parameter carries a JWT signed by one of Keys whose
// claims are exactly these. A failed check is answered 400 invalid_grant
// (RFC 7523 §3.1) with an error_description naming the check. The response
// has an access token and never a refresh token. Client authentication is
// optional for this grant (RFC 7523 §3.1) and none of the three providers
// below uses it; if a request carries some, it is checked as for any grant.
//
// Use the constructors for the providers the presets name; they encode
// each provider's documented rules.
type JWTBearer struct {
	// Keys verify the assertion's signature.
	Keys JWKS
	// Algs are the accepted signature algorithms; RS256 when empty.
	Algs []string
	// Issuer is the required iss.
	Issuer string
	// Subject is the required sub; empty means sub is not checked.
	Subject string
	// Audience is the required aud (one of the values of an array aud).
	Audience string
	// Scope, when not nil, must be exactly the scope claim's
	// space-separated values (order ignored).
	Scope []string
	// MaxAhead bounds exp - now; zero means no bound.
	MaxAhead time.Duration
	// MaxLifetime bounds exp - iat and makes iat required; zero means no
	// bound.
	MaxLifetime time.Duration
}

// SalesforceJWTBearer is Salesforce's OAuth 2.0 JWT bearer flow
// (https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm):
// RS256 only; iss is the connected app's consumer key, sub the user's
// username, aud the login URL (https://login.salesforce.com,
// https://test.salesforce.com or an Experience Cloud site URL, not the
// token URL), and exp "within 3 minutes". Salesforce's answer has no
// expires_in: set Config.OmitExpiresIn to match it.
func SalesforceJWTBearer(keys JWKS, consumerKey, username, loginURL string) *JWTBearer {
	return &JWTBearer{Keys: keys, Algs: []string{"RS256"}, Issuer: consumerKey, Subject: username,
		Audience: loginURL, MaxAhead: 3 * time.Minute}
}

// DocusignJWTBearer is Docusign's JWT Grant
// (https://developers.docusign.com/platform/auth/jwt/jwt-get-token/):
// RS256; iss is the integration key, sub the impersonated user's id (a
// GUID), aud the bare authentication host (account-d.docusign.com or
// account.docusign.com, no scheme), iat and exp required with exp at most
// an hour after iat, and the scope claim (for eSignature "signature
// impersonation").
func DocusignJWTBearer(keys JWKS, integrationKey, userID, authHost string, scope ...string) *JWTBearer {
	return &JWTBearer{Keys: keys, Algs: []string{"RS256"}, Issuer: integrationKey, Subject: userID,
		Audience: authHost, Scope: scope, MaxLifetime: time.Hour}
}

// GoogleServiceAccountJWTBearer is Google's OAuth 2.0 for service accounts
// (https://developers.google.com/identity/protocols/oauth2/service-account#authorizingrequests):
// RS256; iss is the service account's client_email, the scope claim the
// space-delimited scopes, aud the token URL
// (https://oauth2.googleapis.com/token), iat and exp required with exp at
// most an hour after iat. sub, when subject is not empty, is the user of
// domain-wide delegation.
func GoogleServiceAccountJWTBearer(keys JWKS, clientEmail, tokenURL, subject string, scope ...string) *JWTBearer {
	return &JWTBearer{Keys: keys, Algs: []string{"RS256"}, Issuer: clientEmail, Subject: subject,
		Audience: tokenURL, Scope: scope, MaxLifetime: time.Hour}
}

// FederatedCredential is a federated identity credential the way Entra ID
// trusts one (https://learn.microsoft.com/entra/workload-id/workload-identity-federation):
// a client assertion issued by Issuer for Subject with Audience in aud,
// signed by one of Keys (RS256), authenticates the client. Unlike a
// private_key_jwt assertion, the same assertion may be sent again until it
// expires (a managed identity's token is cached), and its lifetime is
// whatever its issuer chose.
type FederatedCredential struct {
	Issuer, Subject, Audience string
	Keys                      JWKS
}

// AzureADTokenExchange is the audience Entra ID expects in a managed
// identity's token used as a federated credential.
const AzureADTokenExchange = "api://AzureADTokenExchange" // #nosec G101 -- an audience name, no credential

func (p *Provider) skew() time.Duration {
	if p.cfg.AssertionSkew > 0 {
		return p.cfg.AssertionSkew
	}
	return DefaultAssertionSkew
}

// redeemAssertionLocked answers the JWT-bearer grant.
func (p *Provider) redeemAssertionLocked(form url.Values) response {
	jb := p.cfg.JWTBearer
	if jb == nil {
		return oauthError(http.StatusBadRequest, "unsupported_grant_type", "grant_type "+GrantJWTBearer+" is not supported")
	}
	a := form.Get("assertion")
	if a == "" {
		return oauthError(http.StatusBadRequest, "invalid_request", "assertion is missing")
	}
	algs := jb.Algs
	if len(algs) == 0 {
		algs = []string{"RS256"}
	}
	r := assertionRules{what: "assertion", keys: jb.Keys, algs: algs, issuer: jb.Issuer, subject: jb.Subject,
		audiences: []string{jb.Audience}, maxAhead: jb.MaxAhead, maxLifetime: jb.MaxLifetime,
		refuseReplay: true, scope: jb.Scope, skew: p.skew()}
	c, err := verifyAssertion(a, r, p.cfg.Now(), p.seenJTI)
	p.lastClaims = c.All
	if err != nil {
		// RFC 7523 §3.1: an invalid assertion is invalid_grant.
		return oauthError(http.StatusBadRequest, "invalid_grant", err.Error())
	}
	return p.issueLocked(form, "")
}

// authenticateAssertionLocked checks a client assertion (RFC 7523 §2.2,
// §3.1): a private_key_jwt one (iss = sub = the client id, aud this token
// endpoint, at most ClientAssertionMaxLifetime ahead, a jti never seen
// before) or one from a FederatedCredential whose issuer it names.
func (p *Provider) authenticateAssertionLocked(r *http.Request, form url.Values) (response, bool) {
	fail := func(desc string) (response, bool) {
		return oauthError(http.StatusUnauthorized, "invalid_client", desc), false
	}
	if t := form.Get("client_assertion_type"); t != ClientAssertionType {
		return fail("client_assertion_type must be " + ClientAssertionType)
	}
	a := form.Get("client_assertion")
	if a == "" {
		return fail("client_assertion is missing")
	}
	if cid := form.Get("client_id"); cid != "" && cid != p.cfg.ClientID {
		return fail("client_id does not match the client assertion's client")
	}
	now := p.cfg.Now()
	var iss struct {
		Iss string `json:"iss"`
	}
	// The issuer picks the rules; the signature is checked by them.
	if parts := splitJWS(a); parts != nil {
		_ = decodeSegment(parts[1], &iss)
	}
	for _, fc := range p.cfg.FederatedCredentials {
		if iss.Iss != fc.Issuer {
			continue
		}
		if form.Get("client_id") == "" {
			// The assertion names the identity, not the client.
			return fail("client_id is required with a federated credential")
		}
		rules := assertionRules{what: "client assertion", keys: fc.Keys, algs: []string{"RS256"},
			issuer: fc.Issuer, subject: fc.Subject, audiences: []string{fc.Audience}, skew: p.skew()}
		c, err := verifyAssertion(a, rules, now, nil)
		p.lastClaims = c.All
		if err != nil {
			return fail(err.Error())
		}
		return response{}, true
	}
	if len(p.cfg.ClientAssertionKeys.Keys) == 0 {
		return fail("client assertions are not accepted; client authentication must use " + string(p.cfg.AuthStyle))
	}
	auds := p.cfg.ClientAssertionAudiences
	if len(auds) == 0 {
		auds = []string{tokenEndpointURL(r)}
	}
	maxAhead := p.cfg.ClientAssertionMaxLifetime
	if maxAhead <= 0 {
		maxAhead = DefaultClientAssertionLifetime
	}
	rules := assertionRules{what: "client assertion", keys: p.cfg.ClientAssertionKeys,
		algs: []string{"RS256", "PS256", "ES256"}, issuer: p.cfg.ClientID, subject: p.cfg.ClientID,
		audiences: auds, maxAhead: maxAhead, requireJTI: true, refuseReplay: true, skew: p.skew()}
	c, err := verifyAssertion(a, rules, now, p.seenJTI)
	p.lastClaims = c.All
	if err != nil {
		return fail(err.Error())
	}
	return response{}, true
}

// tokenEndpointURL is this token endpoint's URL as the client addressed
// it, the aud a private_key_jwt assertion names (RFC 7523 §3 point 3).
func tokenEndpointURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + r.URL.Path
}

func splitJWS(s string) []string {
	if parts := strings.Split(s, "."); len(parts) == 3 {
		return parts
	}
	return nil
}
