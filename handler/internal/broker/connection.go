package broker

import (
	"net/netip"
	"slices"
	"strings"
	"time"
)

// GrantType names the OAuth2 grant a connection uses to obtain access tokens.
type GrantType string

const (
	// GrantRefreshToken redeems a stored refresh token (RFC 6749 §6).
	GrantRefreshToken GrantType = "refresh_token"
	// GrantClientCredentials authenticates as the client itself (RFC 6749 §4.4).
	GrantClientCredentials GrantType = "client_credentials"
	// GrantJWTBearer presents an assertion signed with the connection's
	// Key Vault key as the grant (RFC 7523 §2.1): no refresh token exists.
	GrantJWTBearer GrantType = "jwt_bearer"
)

// AuthStyle says how the client authenticates to the token endpoint. It is
// always explicit: probing (golang.org/x/oauth2's AuthStyleAutoDetect) would
// redeem a rotating refresh token twice when the first attempt fails.
type AuthStyle string

const (
	// AuthBasic sends client_id and client_secret in an HTTP Basic
	// Authorization header (RFC 6749 §2.3.1).
	AuthBasic AuthStyle = "basic"
	// AuthBody sends client_id and client_secret as form fields.
	AuthBody AuthStyle = "body"
	// AuthPrivateKeyJWT sends a client assertion signed with the
	// connection's Key Vault key (RFC 7523 §2.2, OpenID Connect Core §9
	// private_key_jwt); no client secret exists.
	AuthPrivateKeyJWT AuthStyle = "private_key_jwt"
	// AuthManagedIdentity sends, as the client assertion, a token the
	// app's managed identity obtained for api://AzureADTokenExchange
	// (Entra workload identity federation); no client secret exists.
	AuthManagedIdentity AuthStyle = "managedIdentity"
	// AuthNone sends no client authentication: the grant's assertion
	// alone identifies the client (GrantJWTBearer at Salesforce, Docusign
	// and Google).
	AuthNone AuthStyle = "none"
)

// UsesClientSecret reports whether a token request of the connection
// carries a client secret, so that one is read from the store.
func (c *Connection) UsesClientSecret() bool {
	return c.AuthStyle == AuthBasic || c.AuthStyle == AuthBody
}

// Assertion says how a connection's signed assertions are made: the client
// assertion of AuthPrivateKeyJWT and the grant of GrantJWTBearer.
type Assertion struct {
	// Key is the name of the Key Vault key that signs (its current
	// version); the private key never leaves the vault.
	Key string
	// Algorithm is the JWS algorithm (RS256, PS256 or ES256); empty
	// means RS256 for an RSA key and ES256 for an EC P-256 key.
	Algorithm string
	// Audience is the aud claim; empty means the token URL.
	Audience string
	// Subject is the sub claim of a GrantJWTBearer assertion (Salesforce:
	// the user name; Docusign: the user id; Google: the user to
	// impersonate, or empty). A client assertion's sub is the client id.
	Subject string
	// ScopeClaim puts the scopes in the assertion's scope claim (Google,
	// Docusign) instead of the request's scope parameter.
	ScopeClaim bool
	// CertificateThumbprint, when set, is the x5t#S256 header of the
	// assertion: the base64url SHA-256 of the DER certificate whose key
	// signs, which Entra's certificate credentials select the key by
	// (learn.microsoft.com/entra/identity-platform/certificate-credentials,
	// "Header").
	CertificateThumbprint string
}

// SecretNames are the names under which a connection's secrets live in the
// SecretStore. The defaults (<name>-client-id, …) are the layout ADF
// pipelines that refresh tokens themselves already keep in Key Vault.
type SecretNames struct {
	ClientID     string
	ClientSecret string
	RefreshToken string
	AccessToken  string
	// StandbyRefreshToken holds the standby grant's refresh token; set
	// when Connection.Standby is (DefaultStandbySecretName unless named).
	// Its value is empty after the standby was promoted, until a person
	// consents to a new one (standby.go).
	StandbyRefreshToken string
}

// DefaultSecretNames returns the conventional secret names for a connection.
func DefaultSecretNames(connection string) SecretNames {
	return SecretNames{
		ClientID:     connection + "-client-id",
		ClientSecret: connection + "-client-secret",
		RefreshToken: connection + "-refresh-token",
		AccessToken:  connection + "-access-token",
	}
}

// RequiredSecrets names the secrets the store must hold before the
// connection can obtain a token, in this order: the client id (unless the
// connection gives it literally), the client secret (when UsesClientSecret), and for the
// refresh_token grant the refresh token. The access token is not one: the
// broker writes it.
func (c *Connection) RequiredSecrets() []string {
	names := make([]string, 0, 3)
	if c.ClientID == "" {
		names = append(names, c.Secrets.ClientID)
	}
	if c.UsesClientSecret() {
		// An assertion-authenticated connection has none (issue 17).
		names = append(names, c.Secrets.ClientSecret)
	}
	if c.Grant == GrantRefreshToken {
		names = append(names, c.Secrets.RefreshToken)
	}
	return names
}

// DefaultStandbySecretName is the secret that holds a connection's standby
// refresh token (Connection.Standby) unless the connections file names
// another.
func DefaultStandbySecretName(connection string) string {
	return connection + "-standby-refresh-token"
}

// Connection is one configured credential at one provider: everything the
// broker needs to decide when to refresh and how to call the token endpoint.
// It holds no secret values, only the names under which they are stored.
type Connection struct {
	// Name identifies the connection in URLs, secret names and lock names.
	Name string
	// Provider is the preset the connection was built from ("generic" when
	// none), kept for messages.
	Provider string
	Grant    GrantType

	TokenURL  string
	AuthStyle AuthStyle
	Scopes    []string
	// Params are extra form fields sent with every token request
	// (audience, resource, …).
	Params map[string]string

	// ClientID is the literal client id; empty means it is read from the
	// store under Secrets.ClientID.
	ClientID string
	Secrets  SecretNames
	// ClientSecrets, when set, names several client secrets tried in this
	// order on invalid_client, for a rotation without downtime
	// (clientsecrets.go); Secrets.ClientSecret is then the first of them.
	ClientSecrets []string
	// Assertion is set when AuthStyle is AuthPrivateKeyJWT or Grant is
	// GrantJWTBearer.
	Assertion Assertion

	// Rotating is true when the provider issues a new refresh token on every
	// refresh and invalidates the old one. A rotating refresh token is only
	// ever redeemed under the connection's lock.
	Rotating bool
	// ReuseGrace is how long the provider keeps accepting a refresh token
	// after it has been rotated (Xero: 30 minutes). Zero means a reused
	// refresh token is rejected, and may revoke the whole chain (RFC 9700
	// §4.14.2), so a refresh whose response was lost is not retried.
	ReuseGrace time.Duration

	// RefreshBefore is how long before expiry a token is refreshed rather
	// than served. It is capped at half the token's lifetime, so a provider
	// issuing short tokens is not asked for a new one on every call.
	RefreshBefore time.Duration
	// DefaultLifetime is assumed when the provider omits expires_in.
	DefaultLifetime time.Duration
	// IdleExpiry is how long the provider keeps an unused refresh token
	// alive (Xero 60 days, Entra 90); zero when unknown or unlimited. The
	// sweep redeems a refresh token idle for half of it.
	IdleExpiry time.Duration
	// KeepWarm makes the sweep refresh the access token before it expires,
	// so that callers never wait for a refresh and a dead grant shows in
	// status hours before a pipeline needs it. Off, the sweep only keeps
	// the refresh token alive, and callers refresh on demand.
	KeepWarm bool

	// Standby makes the connection hold a second, independent grant of the
	// same user and client (a second consent), kept alive by the sweep and
	// never used for callers, which replaces the first when the provider
	// revokes it (standby.go).
	Standby bool

	// AllowedCallers lists the object ids that may fetch this connection's
	// token; empty allows every caller the platform let through.
	AllowedCallers []string

	// AuthorizationURL is where a person consents (package consent): the
	// connection's authorizationUrl, else empty and the preset's is used.
	AuthorizationURL string
	// AuthParams are extra query parameters of the consent page's address
	// (prompt, audience, …); never one the authorization request sets.
	AuthParams map[string]string
	// ConsentScopes are asked for at consent besides Scopes: the
	// connection's consentScopes, else its preset's.
	ConsentScopes []string
}

// Token is what a token endpoint issued.
type Token struct {
	AccessToken Secret
	TokenType   string
	// RefreshToken is empty when the provider did not issue a new one; the
	// refresh token that was redeemed then stays current.
	RefreshToken Secret
	// Expiry is when the access token stops being valid. The grant fills it
	// from expires_in, or from the connection's DefaultLifetime.
	Expiry time.Time
	// IssuedAt is when the response arrived.
	IssuedAt time.Time
}

// Credentials are the secrets a grant needs for one token request.
type Credentials struct {
	ClientID     string
	ClientSecret Secret
	// RefreshToken is set for GrantRefreshToken.
	RefreshToken Secret
}

// reservedParams are the form fields a token request's grant and client
// authentication send themselves (RFC 6749 §4.1.3, §4.4.2, §6, §2.3.1;
// RFC 7636 §4.5; RFC 7521 §4.2 for the assertions; §4.3 for the password
// grant's): a connection's Params must not replace them.
var reservedParams = []string{
	"assertion", "client_assertion", "client_assertion_type", "client_id", "client_secret", "code",
	"code_verifier", "grant_type", "password", "redirect_uri", "refresh_token", "scope", "username",
}

// ReservedParam reports whether name, in any case, is a form field that a
// token request sets itself, so that a connection's Params may not carry
// it. The connections file refuses such a connection, and the token client
// refuses to send it.
func ReservedParam(name string) bool {
	return slices.Contains(reservedParams, strings.ToLower(name))
}

// reservedAuthParams are the parameters of the authorization request
// itself (RFC 6749 §4.1.1, RFC 7636 §4.3).
var reservedAuthParams = []string{"client_id", "code_challenge", "code_challenge_method", "redirect_uri", "response_type", "scope", "state"}

// ReservedAuthParam reports whether name, in any case, is a parameter the
// consent's authorization request sets itself, so that a connection's
// AuthParams may not carry it. The connections file refuses such a
// connection, and the consent flow refuses to send it.
func ReservedAuthParam(name string) bool {
	return slices.Contains(reservedAuthParams, strings.ToLower(name))
}

// LoopbackHost reports whether host (a host name or an IP literal, without
// a port or brackets) names this machine: localhost in any case, an
// address in 127.0.0.0/8 or ::1, or an IPv4-mapped loopback address. A
// zoned address is refused: a zone names an interface, not this host. It
// is the one rule for where plain http may carry a connection's requests
// (token URL, authorization URL, redirect URI) and where a listener
// serves this machine alone.
func LoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}
