package broker

// The failure vocabulary: one table says, for each kind of failure, whether
// repeating can help, what the caller is answered (ErrorCode, and through
// it the HTTP status), how long a caller is told to wait, and what to do
// about it. A second table says which category each provider error code
// (RFC 6749, OpenID Connect, providers' own) falls in. Everything else
// looks them up: the broker's answers and status, the token client's
// retry policy (package oauth), the diagnosis (package diagnose, which adds
// provider-specific remediation), the HTTP surface's statuses and the
// README's troubleshooting table (TestREADMETroubleshootingTable).

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Category names a kind of failure by what has to happen before the
// connection works again. The values are stable: they go into logs,
// metrics, the status and the lock blob's metadata.
type Category string

// The categories of a token request the provider refused or failed.
const (
	// CategoryReauthorize: the grant is gone (the refresh token expired,
	// was revoked or replaced, or consent is missing). A person must
	// consent again and the new refresh token be stored.
	CategoryReauthorize Category = "reauthorize"
	// CategoryRotateClientSecret: the provider does not accept the client
	// credentials (an expired, deleted or mistyped secret).
	CategoryRotateClientSecret Category = "rotate_client_secret"
	// CategoryFixConfiguration: something in the connection, or in the
	// app's registration at the provider, is wrong: client id, tenant,
	// token URL, grant, scopes, permissions.
	CategoryFixConfiguration Category = "fix_configuration"
	// CategoryAccountLocked: the account behind the grant is locked,
	// disabled or has an expired password.
	CategoryAccountLocked Category = "account_locked"
	// CategoryUserInteractionRequired: a policy (multi-factor
	// authentication, Conditional Access) demands a person signing in.
	CategoryUserInteractionRequired Category = "user_interaction_required"
	// CategoryThrottled: the provider is rate-limiting.
	CategoryThrottled Category = "throttled"
	// CategoryTransient: the request failed on the way (a timeout, a
	// refused or reset connection, a garbled answer).
	CategoryTransient Category = "transient"
	// CategoryProviderOutage: the provider failed on its side.
	CategoryProviderOutage Category = "provider_outage"
)

// The categories of the broker's own trouble: the lock and the store.
const (
	// CategoryLockBusy: another instance held the refresh lock for the
	// whole wait.
	CategoryLockBusy Category = "lock_busy"
	// CategoryLockUnavailable: the lock storage could not be reached, so
	// no refresh token was redeemed.
	CategoryLockUnavailable Category = "lock_unavailable"
	// CategoryLockLost: the lock was lost before the provider was called;
	// nothing was redeemed.
	CategoryLockLost Category = "lock_lost"
	// CategoryStoreUnavailable: the secret store could not be read or
	// written.
	CategoryStoreUnavailable Category = "store_unavailable"
)

// FailureKind is one row of the failure vocabulary.
type FailureKind struct {
	Category Category
	// Permanent is true when repeating the request cannot succeed until
	// someone acts.
	Permanent bool
	// Code is what a caller is answered; ErrorCode.HTTPStatus gives the
	// HTTP status.
	Code ErrorCode
	// RetryAfter is the least wait a caller is told (Retry-After) when
	// the failure is not permanent.
	RetryAfter time.Duration
	// Means says what happened, as a phrase (the README's "it means").
	Means string
	// Remedy is the generic remediation template, for when nothing more
	// specific is known (RenderRemediation fills it in).
	Remedy string
}

// failureKinds is the vocabulary, most urgent first.
var failureKinds = []FailureKind{
	{Category: CategoryReauthorize, Permanent: true, Code: CodeRejected,
		Means: "the refresh token expired, was revoked or already used, or consent is missing",
		Remedy: "Re-authorize connection {connection}: sign in to {provider} again, consent, and store the new refresh " +
			"token in {refresh_token} (handler connect, or the consent link); it is used at once, with no restart."},
	{Category: CategoryRotateClientSecret, Permanent: true, Code: CodeRejected,
		Means: "the provider does not accept the client id or secret (expired, regenerated, mistyped), or the client authentication style",
		Remedy: "Check the client credentials of connection {connection}: {client_id} must hold the client id and " +
			"{client_credential}, and clientAuth {client_auth} must be how {provider} expects them."},
	{Category: CategoryFixConfiguration, Permanent: true, Code: CodeRejected,
		Means: "the connection or the app's registration is wrong: token URL, tenant, grant, scopes, permissions",
		Remedy: "Fix the configuration of connection {connection} (its token URL, grant {grant}, scopes and params in " +
			"the connections file, or the app's registration at {provider}) to match what {provider} expects."},
	{Category: CategoryAccountLocked, Permanent: true, Code: CodeRejected,
		Means: "the account behind the grant is locked, disabled or its password expired",
		Remedy: "The account that authorized connection {connection} is locked or disabled: its owner or an " +
			"administrator must unlock it; then re-authorize if {provider} asks, and store the new refresh token in " +
			"{refresh_token}."},
	{Category: CategoryUserInteractionRequired, Permanent: true, Code: CodeRejected,
		Means: "a policy (multi-factor authentication, Conditional Access) requires a person to sign in",
		Remedy: "{Provider} requires a person to sign in for connection {connection}: re-authorize interactively and " +
			"store the new refresh token in {refresh_token}."},
	{Category: CategoryThrottled, Code: CodeProviderFailed, RetryAfter: 30 * time.Second,
		Means: "the provider is rate-limiting token requests",
		Remedy: "Nothing to change if this passes: {provider} is rate-limiting token requests of connection " +
			"{connection} and the request is retried after Retry-After. If it persists, look for something else " +
			"requesting tokens with the same client id in a loop."},
	{Category: CategoryTransient, Code: CodeProviderFailed, RetryAfter: 30 * time.Second,
		Means: "the request failed on the way: a timeout, a refused or reset connection, an answer that was not a token response",
		Remedy: "Nothing to change if this passes: the request is retried. If it persists, check that the function " +
			"app can reach {host} (DNS, firewall, outbound rules) and that the token URL of connection {connection} " +
			"points at {provider}'s token endpoint."},
	{Category: CategoryProviderOutage, Code: CodeProviderFailed, RetryAfter: 30 * time.Second,
		Means: "the provider failed on its side (a 5xx status, or it said so)",
		Remedy: "Nothing to change in connection {connection}: {provider} failed on its side and the request is " +
			"retried. If it lasts, check {provider}'s service status."},
	{Category: CategoryLockBusy, Code: CodeUnavailable, RetryAfter: 10 * time.Second,
		Means: "another instance held the refresh lock for all of LOCK_WAIT",
		Remedy: "Retry in a few seconds; if this repeats, the provider is slow or an instance is stuck (see the " +
			"logs for lock.timeout)."},
	{Category: CategoryLockUnavailable, Code: CodeUnavailable, RetryAfter: 15 * time.Second,
		Means: "the lock storage is unreachable; a rotating refresh token is never redeemed without the lock " +
			"(client-credentials connections go on without it)",
		Remedy: "Check that the lock storage (AzureWebJobsStorage, or the local state directory) is reachable; " +
			"retry afterwards."},
	{Category: CategoryLockLost, Code: CodeUnavailable, RetryAfter: 5 * time.Second,
		Means:  "the refresh lock was lost before the provider was called; nothing was redeemed",
		Remedy: "Retry; if this repeats, the lock storage is slow or unreachable."},
	{Category: CategoryStoreUnavailable, Code: CodeUnavailable, RetryAfter: 10 * time.Second,
		Means: "the secret store could not be read or written (the remediation names the Key Vault role, " +
			"firewall rule or deleted secret when Key Vault said which)",
		Remedy: "Check that the store (Key Vault, or the local state directory) is reachable and that this app " +
			"may read and write its secrets; retry afterwards."},
}

// FailureKinds returns the vocabulary, most urgent first.
func FailureKinds() []FailureKind {
	return append([]FailureKind(nil), failureKinds...)
}

// Failure returns the row of category c, and false for a category the
// vocabulary does not have.
func Failure(c Category) (FailureKind, bool) {
	for _, k := range failureKinds {
		if k.Category == c {
			return k, true
		}
	}
	return FailureKind{}, false
}

// Permanent reports whether a failure of category c cannot succeed when
// repeated until someone acts. An unknown category is not permanent.
func (c Category) Permanent() bool {
	k, _ := Failure(c)
	return k.Permanent
}

// Remediation renders the generic remediation of k for connection c.
func (k FailureKind) Remediation(c *Connection) string {
	return RenderRemediation(k.Remedy, c)
}

// providerCodes are the error codes a token endpoint answers with, by
// category: RFC 6749 §5.2 (https://www.rfc-editor.org/rfc/rfc6749#section-5.2),
// §4.1.2.1's access_denied, OpenID Connect Core §3.1.2.6
// (https://openid.net/specs/openid-connect-core-1_0.html#AuthError), and
// providers' own (package diagnose says where each was seen).
var providerCodes = map[string]Category{
	"invalid_request":         CategoryFixConfiguration,
	"invalid_client":          CategoryRotateClientSecret,
	"invalid_grant":           CategoryReauthorize,
	"unauthorized_client":     CategoryFixConfiguration,
	"unsupported_grant_type":  CategoryFixConfiguration,
	"invalid_scope":           CategoryFixConfiguration,
	"access_denied":           CategoryReauthorize,
	"temporarily_unavailable": CategoryProviderOutage,
	"server_error":            CategoryProviderOutage,
	"interaction_required":    CategoryUserInteractionRequired,
	"login_required":          CategoryUserInteractionRequired,
	"consent_required":        CategoryReauthorize,
	"invalid_tenant":          CategoryFixConfiguration, // Microsoft Entra
	"deleted_client":          CategoryFixConfiguration, // Google
	"invalid_client_id":       CategoryFixConfiguration, // Salesforce
}

// CodeCategory returns the category of a provider's error code
// ("invalid_grant"), and false for a code the vocabulary does not know.
func CodeCategory(code string) (Category, bool) {
	c, ok := providerCodes[strings.ToLower(strings.TrimSpace(code))]
	return c, ok
}

// ProviderCodes returns every error code CodeCategory knows.
func ProviderCodes() []string {
	out := make([]string, 0, len(providerCodes))
	for code := range providerCodes {
		out = append(out, code)
	}
	return out
}

// answer is what an ErrorCode means on the wire.
type answer struct {
	status int
	// retryable: the same request may succeed later without anyone acting.
	retryable bool
}

// answers maps each ErrorCode to its HTTP status (DESIGN.md). A code not
// here is answered 500.
var answers = map[ErrorCode]answer{
	CodeBadRequest:      {status: http.StatusBadRequest},
	CodeForbidden:       {status: http.StatusForbidden},
	CodeNotFound:        {status: http.StatusNotFound},
	CodeRejected:        {status: http.StatusFailedDependency},
	CodeNotConfigured:   {status: http.StatusFailedDependency},
	CodeProviderFailed:  {status: http.StatusBadGateway, retryable: true},
	CodeUnavailable:     {status: http.StatusServiceUnavailable, retryable: true},
	CodeTooManyRequests: {status: http.StatusTooManyRequests, retryable: true},
	CodeInternal:        {status: http.StatusInternalServerError, retryable: true},
}

// HTTPStatus is the HTTP status a failure with code c is answered with.
func (c ErrorCode) HTTPStatus() int {
	if a, ok := answers[c]; ok {
		return a.status
	}
	return http.StatusInternalServerError
}

// RenderRemediation fills a remediation template for connection c (nil for
// none). The placeholders:
//
//	{connection}    the connection's name, quoted
//	{provider}      "the provider" ({Provider} capitalised)
//	{client_id}     where the client id lives: a secret, or the connections file
//	{client_secret} the secret holding the client secret
//	{client_credential} what must hold, or be registered as, the client's
//	                current credential: the client secret, or for a client
//	                that authenticates with an assertion the signing key or
//	                the federated credential (clientCredentialCheck)
//	{refresh_token} the secret holding the refresh token
//	{client_auth}   the connection's clientAuth, quoted
//	{grant}         the connection's grant, quoted
//	{host}          the token URL's host
//
// extra are further old, new pairs, replaced first: package diagnose names
// the provider and adds its own placeholders.
func RenderRemediation(tmpl string, c *Connection, extra ...string) string {
	if c == nil {
		c = &Connection{}
	}
	name := c.Name
	if name == "" {
		name = "(unnamed)"
	}
	secrets := c.Secrets
	if secrets == (SecretNames{}) && c.Name != "" {
		secrets = DefaultSecretNames(c.Name)
	}
	clientID := secretRef(secrets.ClientID, "client id")
	if c.ClientID != "" {
		clientID = "the clientId in the connections file"
	}
	host := "the token endpoint's host"
	if u, err := url.Parse(c.TokenURL); err == nil && u.Host != "" {
		host = u.Host
	}
	grant := c.Grant
	if grant == "" {
		grant = GrantRefreshToken
	}
	// The clause has placeholders of its own ({provider}), which one pass
	// of the replacer below fills.
	tmpl = strings.ReplaceAll(tmpl, "{client_credential}", clientCredentialCheck(c, secrets))
	pairs := append(extra[:len(extra):len(extra)],
		"{connection}", strconv.Quote(name),
		"{provider}", "the provider",
		"{Provider}", "The provider",
		"{client_id}", clientID,
		"{client_secret}", secretRef(secrets.ClientSecret, "client secret"),
		"{refresh_token}", secretRef(secrets.RefreshToken, "refresh token"),
		"{client_auth}", quoteOr(string(c.AuthStyle), "(unset)"),
		"{grant}", quoteOr(string(grant), "(unset)"),
		"{host}", host,
	)
	return strings.NewReplacer(pairs...).Replace(tmpl)
}

// clientCredentialCheck is the {client_credential} clause: what to check
// when the provider does not accept the client's authentication. A client
// that sends an assertion has no client secret to check (its secret is
// never read, consent.ClientCredentials): what matters is the Key Vault
// key that signs it and that key's registration at the provider
// (private_key_jwt, the jwt_bearer grant), or the app's federated
// credential that trusts the managed identity (managedIdentity).
func clientCredentialCheck(c *Connection, secrets SecretNames) string {
	switch {
	case c.AuthStyle == AuthManagedIdentity:
		return "the app's registration at {provider} must have a federated credential that trusts the function " +
			"app's managed identity (its issuer, the identity's object id as subject, audience " +
			"api://AzureADTokenExchange); no client secret is sent"
	case c.AuthStyle == AuthPrivateKeyJWT || c.Grant == GrantJWTBearer:
		return "the public key of its signing key " + quoteOr(c.Assertion.Key, "(signingKey unset)") +
			" in Key Vault must be registered for the app at {provider} (print it with `handler key " + c.Name +
			"`; after the key is rotated, register the new version); no client secret is sent"
	}
	return secretRef(secrets.ClientSecret, "client secret") + " the current client secret (if it expired, " +
		"create a new one at {provider} and store it with its expiry date)"
}

func secretRef(name, what string) string {
	if name == "" {
		return "the connection's " + what
	}
	return "secret " + strconv.Quote(name)
}

func quoteOr(s, empty string) string {
	if s == "" {
		return empty
	}
	return strconv.Quote(s)
}

// failureError is the caller's Error for a failure of category cat: its
// code, retry hint and generic remediation from the vocabulary.
func failureError(cat Category, c *Connection, message string, err error) *Error {
	k, _ := Failure(cat)
	e := &Error{Code: k.Code, Connection: c.Name, Message: message, Category: string(cat),
		Remediation: k.Remediation(c), Err: err}
	if !k.Permanent {
		e.RetryAfter = k.RetryAfter
	}
	return e
}
