package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// Signed assertions (issue 17): the client assertion of private_key_jwt
// (RFC 7523 §2.2 and §3, OpenID Connect Core §9), the managed identity's
// token as a federated client assertion (Entra workload identity
// federation), and the JWT-bearer grant (RFC 7523 §2.1). Every assertion is
// made anew for each attempt: its jti is unique, and a provider refuses a
// jti it has seen (RFC 7523 §3 item 7).

// The form values of RFC 7523 §2.1 and §2.2.
const (
	// ClientAssertionType is client_assertion_type's value (RFC 7523 §2.2).
	ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// JWTBearerGrantType is grant_type's value of the JWT-bearer grant
	// (RFC 7523 §2.1).
	JWTBearerGrantType = "urn:ietf:params:oauth:grant-type:jwt-bearer" // #nosec G101 -- a grant type URN, no credential
)

// FederationScope is what the managed identity's token is requested for:
// a token whose audience is api://AzureADTokenExchange, which a federated
// identity credential on the app registration trusts
// (https://learn.microsoft.com/graph/api/resources/federatedidentitycredential:
// "audiences ... should be set to api://AzureADTokenExchange for Microsoft
// Entra ID").
const FederationScope = "api://AzureADTokenExchange/.default"

// assertionLifetime is how long a signed assertion is valid: short, as
// RFC 7523 §3 item 4 asks, and within every preset provider's limit (the
// strictest, Salesforce, takes at most three minutes).
const assertionLifetime = 2 * time.Minute

// federationMargin is how long before its expiry a cached managed-identity
// token is replaced: a token sent as an assertion must still be valid when
// Entra reads it.
const federationMargin = 5 * time.Minute

// keyCacheFor is how long a signing key's current version is kept before
// it is asked for again: a key rotated in Key Vault is used within that.
const keyCacheFor = 10 * time.Minute

// ErrAssertion is wrapped by the *broker.ProviderError of a token request
// whose assertion could not be made (Key Vault refused to sign, the
// managed identity had no token): nothing was sent to the provider.
var ErrAssertion = errors.New("oauth: the assertion could not be made")

// SigningKey is the current version of a Key Vault key.
type SigningKey struct {
	// Name and Version address the key version in the vault.
	Name, Version string
	// KeyType is "RSA" or "EC" (Key Vault's kty, without -HSM).
	KeyType string
	// Curve is an EC key's curve ("P-256"); empty for RSA.
	Curve string
}

// KID is the JWS kid of the key version: its version, the value the
// handler's "key" command prints in the JWK the provider registers.
func (k SigningKey) KID() string { return k.Version }

// Signer signs with keys that never leave the vault (Key Vault's keys API
// through azkeys: get key, sign).
type Signer interface {
	// CurrentKey returns the current version of the key named name.
	CurrentKey(ctx context.Context, name string) (SigningKey, error)
	// Sign returns the signature of digest, a SHA-256 hash, by key with
	// alg (RS256, PS256 or ES256). An ES256 signature is R||S, 64 bytes,
	// as JWS wants it (RFC 7518 §3.4).
	Sign(ctx context.Context, key SigningKey, alg string, digest []byte) ([]byte, error)
}

// FederatedToken obtains the managed identity's token for
// FederationScope, with its expiry.
type FederatedToken func(ctx context.Context) (string, time.Time, error)

// assertions makes a Client's assertions and keeps what may be reused: the
// managed identity's token until shortly before it expires, and each key's
// current version for keyCacheFor.
type assertions struct {
	signer    Signer
	federated FederatedToken
	now       func() time.Time

	mu       sync.Mutex
	fedToken string
	fedUntil time.Time
	keys     map[string]cachedKey
}

type cachedKey struct {
	key   SigningKey
	until time.Time
}

// Algorithm returns the JWS algorithm a connection signs with: the one it
// names, else RS256 for an RSA key and ES256 for an EC P-256 key.
func Algorithm(a broker.Assertion, k SigningKey) (string, error) {
	if a.Algorithm != "" {
		return a.Algorithm, nil
	}
	switch {
	case strings.HasPrefix(k.KeyType, "RSA"):
		return "RS256", nil
	case strings.HasPrefix(k.KeyType, "EC") && k.Curve == "P-256":
		return "ES256", nil
	}
	return "", fmt.Errorf("key %q is %s %s; the handler signs with RSA keys (RS256, PS256) and EC P-256 keys (ES256)", k.Name, k.KeyType, k.Curve)
}

// usesAssertion reports whether a request of conn carries an assertion.
func usesAssertion(conn *broker.Connection) bool {
	return conn.Grant == broker.GrantJWTBearer || conn.AuthStyle == broker.AuthPrivateKeyJWT || conn.AuthStyle == broker.AuthManagedIdentity
}

// withAssertion returns cfg with the assertions conn's request carries,
// made for this attempt, and the assertions, which the request's redactor
// must know.
func (a *assertions) withAssertion(ctx context.Context, cfg *clientcredentials.Config, conn *broker.Connection, clientID string) (*clientcredentials.Config, []string, error) {
	if !usesAssertion(conn) {
		return cfg, nil, nil
	}
	out := *cfg
	out.EndpointParams = url.Values{}
	for k, v := range cfg.EndpointParams {
		out.EndpointParams[k] = v
	}
	var made []string
	switch conn.AuthStyle {
	case broker.AuthPrivateKeyJWT:
		// RFC 7523 §3, OpenID Connect Core §9: iss and sub are the client
		// id, aud the token endpoint (or what the provider documents).
		jwt, err := a.sign(ctx, conn, map[string]any{"iss": clientID, "sub": clientID}, true)
		if err != nil {
			return nil, nil, err
		}
		out.EndpointParams.Set("client_assertion_type", ClientAssertionType)
		out.EndpointParams.Set("client_assertion", jwt)
		made = append(made, jwt)
	case broker.AuthManagedIdentity:
		tok, err := a.federatedToken(ctx)
		if err != nil {
			return nil, nil, err
		}
		out.EndpointParams.Set("client_assertion_type", ClientAssertionType)
		out.EndpointParams.Set("client_assertion", tok)
		made = append(made, tok)
	}
	if conn.Grant == broker.GrantJWTBearer {
		// RFC 7523 §2.1 and §3: iss is the client (Salesforce's consumer
		// key, Docusign's integration key, Google's service account
		// e-mail), sub the user the token acts for.
		claims := map[string]any{"iss": clientID}
		if conn.Assertion.Subject != "" {
			claims["sub"] = conn.Assertion.Subject
		}
		if conn.Assertion.ScopeClaim && len(conn.Scopes) > 0 {
			claims["scope"] = strings.Join(conn.Scopes, " ")
		}
		jwt, err := a.sign(ctx, conn, claims, false)
		if err != nil {
			return nil, nil, err
		}
		out.EndpointParams.Set("grant_type", JWTBearerGrantType)
		out.EndpointParams.Set("assertion", jwt)
		made = append(made, jwt)
	}
	return &out, made, nil
}

// sign makes a JWT with claims and the registered claims every assertion
// has (aud, iat, exp, jti; nbf for a client assertion, which Entra's
// certificate credentials list), signed by the connection's key.
func (a *assertions) sign(ctx context.Context, conn *broker.Connection, claims map[string]any, clientAssertion bool) (string, error) {
	if a.signer == nil {
		return "", assertionError("connection %q signs with Key Vault key %q, but the handler has no Key Vault (set KEY_VAULT_URL)", conn.Name, conn.Assertion.Key)
	}
	key, err := a.currentKey(ctx, conn.Assertion.Key)
	if err != nil {
		return "", assertionError("Key Vault key %q of connection %q: %v", conn.Assertion.Key, conn.Name, err)
	}
	alg, err := Algorithm(conn.Assertion, key)
	if err != nil {
		return "", assertionError("%v", err)
	}
	now := a.now()
	claims["aud"] = conn.Assertion.Audience
	if conn.Assertion.Audience == "" {
		claims["aud"] = conn.TokenURL
	}
	claims["iat"] = now.Unix()
	claims["exp"] = now.Add(assertionLifetime).Unix()
	claims["jti"] = rand.Text()
	if clientAssertion {
		claims["nbf"] = now.Unix()
	}
	h := map[string]string{"alg": alg, "typ": "JWT", "kid": key.KID()}
	if t := conn.Assertion.CertificateThumbprint; t != "" {
		// A certificate credential is named by its SHA-256 thumbprint, the
		// header Entra documents with alg and typ
		// (learn.microsoft.com/entra/identity-platform/
		// certificate-credentials, "Header"), in place of the key
		// version: the provider holds the certificate, not a JWKS.
		delete(h, "kid")
		h["x5t#S256"] = t
	}
	header, _ := json.Marshal(h)
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", assertionError("claims: %v", err)
	}
	input := b64(header) + "." + b64(payload)
	digest := sha256.Sum256([]byte(input))
	sig, err := a.signer.Sign(ctx, key, alg, digest[:])
	if err != nil {
		a.forgetKey(conn.Assertion.Key)
		return "", assertionError("Key Vault did not sign with key %q of connection %q: %v", conn.Assertion.Key, conn.Name, err)
	}
	return input + "." + b64(sig), nil
}

func (a *assertions) currentKey(ctx context.Context, name string) (SigningKey, error) {
	a.mu.Lock()
	ck, ok := a.keys[name]
	a.mu.Unlock()
	if ok && a.now().Before(ck.until) {
		return ck.key, nil
	}
	k, err := a.signer.CurrentKey(ctx, name)
	if err != nil {
		return SigningKey{}, err
	}
	a.mu.Lock()
	if a.keys == nil {
		a.keys = map[string]cachedKey{}
	}
	a.keys[name] = cachedKey{key: k, until: a.now().Add(keyCacheFor)}
	a.mu.Unlock()
	return k, nil
}

func (a *assertions) forgetKey(name string) {
	a.mu.Lock()
	delete(a.keys, name)
	a.mu.Unlock()
}

// federatedToken returns the managed identity's token for FederationScope,
// cached until federationMargin before it expires.
func (a *assertions) federatedToken(ctx context.Context) (string, error) {
	if a.federated == nil {
		return "", assertionError("clientAuth %q needs the app's managed identity, which the handler does not have here", broker.AuthManagedIdentity)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fedToken != "" && a.now().Before(a.fedUntil) {
		return a.fedToken, nil
	}
	tok, exp, err := a.federated(ctx)
	if err != nil {
		return "", assertionError("the managed identity has no token for %s: %v", FederationScope, err)
	}
	a.fedToken, a.fedUntil = tok, exp.Add(-federationMargin)
	return tok, nil
}

func assertionError(format string, args ...any) error {
	return &broker.ProviderError{Description: fmt.Sprintf(format, args...), Err: ErrAssertion}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
