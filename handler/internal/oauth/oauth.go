// Package oauth requests access tokens from OAuth2 token endpoints for the
// broker. It implements broker.Grant on golang.org/x/oauth2, adding what that
// library leaves to its caller: a bounded retry policy, a size limit on
// responses, a classification of every failure as a *broker.ProviderError,
// and a normalised broker.Token.
//
// Both grants go through clientcredentials.Config: the refresh_token grant
// overrides grant_type (which that package explicitly allows) and adds
// refresh_token, so that a refresh carries the connection's scope and extra
// parameters too (oauth2.Config's refresh sends neither, and Entra needs the
// scope). Client authentication is always explicit, never auto-detected:
// probing sends the grant twice when the first style fails.
//
// # Failures
//
// Every failure is a *broker.ProviderError. It is Permanent when the provider
// answered 400, 401 or 403 (or 200, as some do) with one of the RFC 6749
// §5.2 codes invalid_request, invalid_client, invalid_grant,
// unauthorized_client, unsupported_grant_type or invalid_scope; when it
// answered another 4xx (but 408 and 429) with a failure package diagnose
// recognises as needing a person (an AADSTS code such as 700082, OIDC's
// interaction_required, access_denied, a HubSpot status); and when the
// connection itself is unusable (ErrInvalidConnection). Every failure
// carries diagnose's Category and Remediation. 429, 408, 5xx, the
// codes temporarily_unavailable and server_error, network failures, timeouts
// and malformed success bodies (ErrMalformedResponse, ErrResponseTooLarge)
// are transient. Anything else (a redirect, a 404, a 400 with another code)
// is neither: it is not retried, yet not reported as a rejection of the
// credentials either.
//
// # Retries
//
// A Token call makes at most Options.MaxAttempts requests within
// Options.Timeout, waiting with jittered exponential backoff, or for the
// provider's Retry-After when that is longer. A Retry-After that does not fit
// in the remaining budget ends the call with the error, which carries it.
// Permanent failures (the provider rejected the client or the grant) are never
// retried, nor are answers that a repeat cannot change (redirects, 404s).
//
// A refresh of a rotating refresh token (Connection.Rotating with
// ReuseGrace zero) is retried only when the provider certainly did not act on
// it: a 429 answer, or a connection that could not be opened at all. After a
// 5xx, a timeout, a malformed answer or a lost response the provider may well
// have rotated the token; sending it again would be reuse, which RFC 9700
// §4.14.2 lets the provider answer by revoking the whole grant. Such a
// failure is returned at once, and the broker decides what to do with the
// refresh token it still holds. Connections with a reuse grace, non-rotating
// refresh tokens and client_credentials retry every transient failure.
//
// # Secrets
//
// Secret values leave this package only in the HTTP request. Errors and log
// records carry an allow-list of the provider's answer, never a response
// body: the error code when it has RFC 6749's shape and quotes no secret,
// the description with every secret of the request (client secret, refresh
// token, code, verifier, Basic credential) and every token the answer
// carried redacted in any encoding (package redact), error_uri, and Entra's
// trace and correlation ids when id-shaped.
//
// # Tokens accepted
//
// Every token this package returns, from a refresh, client credentials or
// an authorization code (Exchange), passes one check (acceptToken).
package oauth

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/diagnose"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/redact"
)

// Defaults for the zero fields of Options.
const (
	DefaultTimeout          = 20 * time.Second
	DefaultAttemptTimeout   = 10 * time.Second
	DefaultMaxResponseBytes = 1 << 20
	DefaultMaxAttempts      = 3
	DefaultBackoff          = 500 * time.Millisecond
)

// maxBackoff caps the exponential backoff between attempts.
const maxBackoff = 5 * time.Second

// fallbackLifetime is assumed when the provider sends no expires_in and the
// connection has no DefaultLifetime.
const fallbackLifetime = time.Hour

// maxLifetime bounds a believable expires_in; anything longer is more likely a
// timestamp or milliseconds than a lifetime.
const maxLifetime = 365 * 24 * time.Hour

// Errors wrapped by the Err field of the *broker.ProviderError that Token
// returns.
var (
	// ErrInvalidConnection: the connection cannot be used for a token request
	// (an insecure token URL, a missing client id, an unknown AuthStyle…).
	// No request was sent.
	ErrInvalidConnection = errors.New("oauth: connection cannot be used for a token request")
	// ErrMalformedResponse: the token endpoint answered success with
	// something that is not a usable token response.
	ErrMalformedResponse = errors.New("oauth: malformed token response")
	// ErrResponseTooLarge: the response body exceeded Options.MaxResponseBytes.
	ErrResponseTooLarge = errors.New("oauth: token response too large")
)

// Options configure a Client. The zero value is usable.
type Options struct {
	// Timeout is the whole budget of one Token call, retries and waits
	// included (DefaultTimeout when zero).
	Timeout time.Duration
	// AttemptTimeout bounds each HTTP request, reading the response
	// included (DefaultAttemptTimeout when zero).
	AttemptTimeout time.Duration
	// MaxResponseBytes is the largest response body accepted
	// (DefaultMaxResponseBytes when zero). It cannot exceed 1 MiB: that is
	// all golang.org/x/oauth2 reads.
	MaxResponseBytes int64
	// MaxAttempts bounds the requests of one Token call
	// (DefaultMaxAttempts when zero).
	MaxAttempts int
	// Backoff is the wait before the first retry; it doubles for each
	// further one, up to 5s, with jitter (DefaultBackoff when zero).
	Backoff time.Duration
	// Transport sends the requests (a clone of http.DefaultTransport when
	// nil).
	Transport http.RoundTripper
	// Now is the clock for IssuedAt, Expiry and Retry-After dates (time.Now
	// when nil).
	Now func() time.Time
	// Logger receives one record per attempt; nil discards them.
	Logger *slog.Logger
	// Signer signs the assertions of private_key_jwt connections and of
	// the jwt_bearer grant with Key Vault keys; nil when the handler has
	// no Key Vault (such a connection's requests then fail unsent).
	Signer Signer
	// Federated obtains the managed identity's token that managedIdentity
	// connections send as their client assertion; nil without one.
	Federated FederatedToken
}

// Client performs token requests. It implements broker.Grant and is safe for
// concurrent use.
type Client struct {
	timeout        time.Duration
	attemptTimeout time.Duration
	maxBytes       int64
	maxAttempts    int
	backoff        time.Duration
	transport      http.RoundTripper
	now            func() time.Time
	log            *slog.Logger
	assert         *assertions
}

var _ broker.Grant = (*Client)(nil)

// New returns a Client configured by o.
func New(o Options) *Client {
	c := &Client{
		timeout:        o.Timeout,
		attemptTimeout: o.AttemptTimeout,
		maxBytes:       o.MaxResponseBytes,
		maxAttempts:    o.MaxAttempts,
		backoff:        o.Backoff,
		transport:      o.Transport,
		now:            o.Now,
		log:            o.Logger,
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.attemptTimeout <= 0 {
		c.attemptTimeout = DefaultAttemptTimeout
	}
	if c.maxBytes <= 0 || c.maxBytes > DefaultMaxResponseBytes {
		c.maxBytes = DefaultMaxResponseBytes
	}
	if c.maxAttempts <= 0 {
		c.maxAttempts = DefaultMaxAttempts
	}
	if c.backoff <= 0 {
		c.backoff = DefaultBackoff
	}
	if c.transport == nil {
		c.transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.assert = &assertions{signer: o.Signer, federated: o.Federated, now: c.now}
	return c
}

// Token requests a token for conn with cred, retrying as the package
// documentation describes. Every failure is a *broker.ProviderError.
func (c *Client) Token(ctx context.Context, conn *broker.Connection, cred broker.Credentials) (*broker.Token, error) {
	cfg, err := requestConfig(conn, cred, nil)
	if err != nil {
		return nil, err
	}
	// Only a rotating refresh token without grace is burnt by a repeat.
	strict := conn.Grant == broker.GrantRefreshToken && conn.Rotating && conn.ReuseGrace == 0
	return c.run(ctx, conn, cred, cfg, strict)
}

// Exchange redeems an authorization code (RFC 6749 §4.1.3) with its PKCE
// verifier (RFC 7636 §4.5) for conn, authenticated by cred's client id and
// secret. It is a token request like Token's, with the same limits, failure
// classification, redaction and check of what the provider issued; a code
// is single-use, so it is repeated only when the provider certainly did not
// receive it. Every failure is a *broker.ProviderError.
//
// The provider's description is shown to the person at the browser or the
// terminal, so besides the by-value redaction of every token request it
// passes diagnose.Sanitize, which redacts by look anything token-shaped
// that the request did not carry.
func (c *Client) Exchange(ctx context.Context, conn *broker.Connection, cred broker.Credentials, code, verifier, redirectURL string) (*broker.Token, error) {
	cred.RefreshToken = ""
	cfg, err := requestConfig(conn, cred, exchangeParams(code, verifier, redirectURL))
	if err != nil {
		return nil, err
	}
	tok, err := c.run(ctx, conn, cred, cfg, true)
	var pe *broker.ProviderError
	if errors.As(err, &pe) {
		pe.Description = diagnose.Sanitize(pe.Description)
	}
	return tok, err
}

// CheckExchange reports why an authorization code for conn could not be
// redeemed with cred's client id (a *broker.ProviderError wrapping
// ErrInvalidConnection), without sending anything: the consent flow asks
// before it sends a person to the provider's consent page.
func CheckExchange(conn *broker.Connection, cred broker.Credentials) error {
	cred.RefreshToken = ""
	_, err := requestConfig(conn, cred, exchangeParams("", "", ""))
	return err
}

// exchangeParams are the form fields of an authorization code's redemption
// (RFC 6749 §4.1.3, RFC 7636 §4.5).
func exchangeParams(code, verifier, redirectURL string) url.Values {
	return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {redirectURL}}
}

// run makes the token request cfg describes, retrying as the package
// documentation describes; strict allows a repeat only of a request the
// provider certainly did not process.
func (c *Client) run(ctx context.Context, conn *broker.Connection, cred broker.Credentials, cfg *clientcredentials.Config, strict bool) (*broker.Token, error) {
	secrets := requestSecrets(cfg.ClientID, cred)
	grant := string(conn.Grant)
	if cfg.EndpointParams.Get("code") != "" {
		// A provider may quote the code or the verifier back as well.
		secrets = append(secrets, cfg.EndpointParams.Get("code"), cfg.EndpointParams.Get("code_verifier"))
		grant = "authorization_code"
	}
	log := c.log.With(slog.String("connection", conn.Name), slog.String("grant", grant))

	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// issued is a refresh token seen in an earlier, unusable answer. Once
	// there is one, the redeemed token may be dead: no more attempts with
	// it, and the new one goes back to the broker whatever comes next.
	var issued broker.Secret
	for attempt := 1; ; attempt++ {
		began := time.Now()
		tok, f := c.attempt(ctx, cfg, conn, cred, secrets)
		if f != nil && !f.err.IssuedRefreshToken.IsZero() {
			issued = f.err.IssuedRefreshToken
		} else if f != nil && !issued.IsZero() {
			f.err.IssuedRefreshToken = issued
		}
		elapsed := time.Since(began)
		if f == nil {
			// The event names the line for the workbook's token-endpoint
			// percentiles (infra/modules/workbook/token-endpoint-percentiles.kql),
			// which read elapsed (nanoseconds in the JSON line).
			log.LogAttrs(ctx, slog.LevelInfo, "token issued", slog.String("event", "token_endpoint.issued"),
				slog.Int("attempt", attempt), slog.Duration("elapsed", elapsed),
				slog.Duration("lifetime", tok.Expiry.Sub(tok.IssuedAt)),
				slog.Bool("new_refresh_token", !tok.RefreshToken.IsZero()))
			return tok, nil
		}

		var delay time.Duration
		reason := ""
		switch {
		case !f.retryable:
			reason = "not retryable"
		case strict && !f.unprocessed:
			reason = "rotating refresh token may have been redeemed"
		case !issued.IsZero():
			reason = "the provider issued a new refresh token in an unusable answer"
		case attempt >= c.maxAttempts:
			reason = "attempts exhausted"
		case ctx.Err() != nil:
			reason = "out of time"
		default:
			delay = max(c.backoffFor(attempt), f.err.RetryAfter)
			if dl, _ := ctx.Deadline(); time.Until(dl) < delay {
				reason = "retry would exceed the time budget"
			}
		}
		attrs := []slog.Attr{
			slog.Int("attempt", attempt), slog.Duration("elapsed", elapsed),
			slog.Int("status", f.err.StatusCode), slog.String("code", f.err.Code),
			slog.Bool("permanent", f.err.Permanent), slog.String("error", f.err.Error()),
		}
		if f.err.RetryAfter > 0 {
			attrs = append(attrs, slog.Duration("retry_after", f.err.RetryAfter))
		}
		if reason != "" {
			log.LogAttrs(ctx, slog.LevelWarn, "token request failed", append(attrs, slog.String("gave_up", reason))...)
			return nil, f.err
		}
		log.LogAttrs(ctx, slog.LevelWarn, "token request failed, retrying", append(attrs, slog.Duration("retry_in", delay))...)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, f.err
		}
	}
}

// backoffFor returns the wait after the attempt-th failure: exponential, with
// "equal jitter" so that instances failing together do not retry together.
func (c *Client) backoffFor(attempt int) time.Duration {
	d := c.backoff
	for i := 1; i < attempt && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	return d/2 + rand.N(d/2+1) // #nosec G404 -- jitter that spreads retries; nothing depends on it being unpredictable
}

// attempt makes one request. A nil failure means tok is usable.
func (c *Client) attempt(ctx context.Context, cfg *clientcredentials.Config, conn *broker.Connection, cred broker.Credentials, secrets []string) (*broker.Token, *failure) {
	ex := &exchange{limit: c.maxBytes}
	hc := &http.Client{
		Transport: &recorder{next: c.transport, ex: ex},
		// A token endpoint that redirects is misconfigured; following it
		// would re-send the credentials to wherever it points.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	actx, cancel := context.WithTimeout(ctx, c.attemptTimeout)
	defer cancel()
	// An assertion is made for each attempt: a repeat with the same jti
	// would be refused as a replay (RFC 7523 §3 item 7).
	cfg, assertions, aerr := c.assert.withAssertion(actx, cfg, conn, cmp.Or(cred.ClientID, conn.ClientID))
	if aerr != nil {
		var pe *broker.ProviderError
		errors.As(aerr, &pe)
		return nil, &failure{retryable: true, unprocessed: true, err: pe}
	}
	secrets = append(slices.Clip(secrets), assertions...)
	ot, err := cfg.Token(context.WithValue(actx, oauth2.HTTPClient, hc))
	if err != nil {
		f := c.classify(ctx, err, ex, secrets)
		diagnoseFailure(conn, f, ex, err)
		// Whatever the path, the provider's words (a description, a
		// Content-Type) pass the request's redactor once more.
		redact.RedactProviderError(f.err, redactorFor(append(slices.Clip(secrets), issuedTokens(ex.body)...)))
		return nil, f
	}
	tok, terr := acceptToken(ot, conn, cred.RefreshToken, c.now())
	if terr != nil {
		pe := &broker.ProviderError{
			StatusCode:  ex.status,
			Description: "token endpoint answered with an unusable token: " + terr.Error(),
			Err:         ErrMalformedResponse,
		}
		if rt := ot.RefreshToken; rt != cred.RefreshToken.Reveal() && isVSCHAR(rt) {
			pe.IssuedRefreshToken = broker.Secret(rt)
		}
		f := &failure{retryable: true, err: pe}
		diagnoseFailure(conn, f, ex, pe.Err)
		return nil, f
	}
	return tok, nil
}

// maxTokenType bounds a token_type: "Bearer", "DPoP", "N_A" (Entra) or a
// URI (RFC 6749 §7.1).
const maxTokenType = 256

// acceptToken is the one check of every token this package accepts,
// whichever grant obtained it (refresh_token, client_credentials, the
// authorization code): an access token, refresh token and token type made
// of RFC 6749's VSCHAR (appendix A.12, A.17; a CR or LF would split the
// caller's Authorization header, or the form of the next refresh), and a
// lifetime from expires_in of at least a second and at most maxLifetime
// (an access token "expiring in 2094" is a misread timestamp, not a
// lifetime). sent is the refresh token of the request: x/oauth2 puts it
// back in ot when the answer has none, and then no new one was issued.
func acceptToken(ot *oauth2.Token, conn *broker.Connection, sent broker.Secret, now time.Time) (*broker.Token, error) {
	life, err := lifetime(ot.Extra("expires_in"), conn.DefaultLifetime)
	switch {
	case err != nil:
		return nil, err
	case ot.AccessToken == "":
		return nil, errors.New("access_token is empty")
	case !isVSCHAR(ot.AccessToken):
		// Invalid UTF-8 was decoded to U+FFFD, and control characters
		// would break the caller's Authorization header: either way it is
		// not the token the provider meant.
		return nil, errors.New("access_token has characters outside printable ASCII (RFC 6749 A.12)")
	case !isVSCHAR(ot.RefreshToken):
		return nil, errors.New("refresh_token has characters outside printable ASCII (RFC 6749 A.17)")
	case !isVSCHAR(ot.TokenType) || len(ot.TokenType) > maxTokenType:
		return nil, errors.New("token_type has characters outside printable ASCII or is too long")
	}
	tok := &broker.Token{
		AccessToken: broker.Secret(ot.AccessToken),
		TokenType:   ot.TokenType,
		Expiry:      now.Add(life),
		IssuedAt:    now,
	}
	if tok.TokenType == "" {
		tok.TokenType = "Bearer"
	}
	// x/oauth2 puts the redeemed refresh token back when the response has
	// none; the broker wants to know whether a new one was issued.
	if ot.RefreshToken != sent.Reveal() {
		tok.RefreshToken = broker.Secret(ot.RefreshToken)
	}
	return tok, nil
}

// isVSCHAR reports whether s is made of RFC 6749's VSCHAR (%x20-7E), the
// characters of an access token.
func isVSCHAR(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r > 0x7e })
}

// requestConfig checks conn and cred and builds the request, before anything
// is sent: the connection's grant, or, when grantParams is not nil, the
// grant they describe (the authorization code's).
func requestConfig(conn *broker.Connection, cred broker.Credentials, grantParams url.Values) (*clientcredentials.Config, error) {
	invalid := func(format string, a ...any) error {
		return &broker.ProviderError{Permanent: true, Description: fmt.Sprintf(format, a...), Err: ErrInvalidConnection}
	}
	if conn == nil {
		return nil, invalid("no connection given")
	}
	if err := CheckTokenURL(conn.TokenURL); err != nil {
		return nil, invalid("%s", err)
	}
	var style oauth2.AuthStyle
	switch conn.AuthStyle {
	case broker.AuthBasic:
		style = oauth2.AuthStyleInHeader
	case broker.AuthBody, broker.AuthPrivateKeyJWT, broker.AuthManagedIdentity:
		// An assertion-authenticated client sends client_id as a form
		// field beside its client_assertion, and no secret (x/oauth2
		// sends client_secret only when it is not empty).
		style = oauth2.AuthStyleInParams
	case broker.AuthNone:
		if conn.Grant != broker.GrantJWTBearer {
			return nil, invalid("client authentication %q is only for grant %q", broker.AuthNone, broker.GrantJWTBearer)
		}
		style = oauth2.AuthStyleInParams
	default:
		return nil, invalid("client authentication style %q is not %q, %q, %q or %q", conn.AuthStyle, broker.AuthBasic, broker.AuthBody, broker.AuthPrivateKeyJWT, broker.AuthManagedIdentity)
	}
	if (conn.AuthStyle == broker.AuthPrivateKeyJWT || conn.Grant == broker.GrantJWTBearer) && conn.Assertion.Key == "" {
		return nil, invalid("no Key Vault key to sign the assertion with")
	}
	clientID := cred.ClientID
	if clientID == "" {
		clientID = conn.ClientID
	}
	if clientID == "" && conn.AuthStyle != broker.AuthNone {
		return nil, invalid("no client id")
	}
	params := url.Values{}
	for k, v := range conn.Params {
		if broker.ReservedParam(k) {
			return nil, invalid("parameter %q is set by the grant and cannot be overridden in params", k)
		}
		params.Set(k, v)
	}
	switch {
	case grantParams != nil:
		for k, v := range grantParams {
			params[k] = v
		}
	case conn.Grant == broker.GrantClientCredentials:
	case conn.Grant == broker.GrantJWTBearer:
		// grant_type and assertion are set for each attempt
		// (withAssertion).
	case conn.Grant == broker.GrantRefreshToken:
		if cred.RefreshToken.IsZero() {
			return nil, invalid("no refresh token to redeem")
		}
		params.Set("grant_type", string(broker.GrantRefreshToken))
		params.Set("refresh_token", cred.RefreshToken.Reveal())
	default:
		return nil, invalid("grant %q is not supported", conn.Grant)
	}
	scopes := conn.Scopes
	if grantParams != nil || (conn.Grant == broker.GrantJWTBearer && conn.Assertion.ScopeClaim) {
		// The code carries the scopes it was granted for (RFC 6749
		// §4.1.3 has no scope parameter); Google's and Docusign's
		// assertions carry theirs in a claim.
		scopes = nil
	}
	if conn.AuthStyle == broker.AuthNone {
		// The assertion names the client; nothing else is sent.
		clientID = ""
	}
	return &clientcredentials.Config{
		ClientID:       clientID,
		ClientSecret:   cred.ClientSecret.Reveal(),
		TokenURL:       conn.TokenURL,
		Scopes:         scopes,
		EndpointParams: params,
		AuthStyle:      style,
	}, nil
}

// CheckTokenURL reports why raw cannot be a token URL: Token accepts https
// URLs, and http ones only for loopback hosts (tests and local demos), so that
// credentials never cross a network in clear. Configuration can call it to
// reject a connection at start-up rather than at its first refresh.
func CheckTokenURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return errors.New("token URL is not an absolute URL")
	}
	if u.User != nil {
		return errors.New("token URL must not carry credentials")
	}
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && broker.LoopbackHost(u.Hostname()):
		return nil
	}
	return fmt.Errorf("token URL must use https (http only for loopback hosts), not %s://%s", u.Scheme, u.Host)
}

// requestSecrets lists the secret values of a token request in every form
// the request carries them, so that a provider that quotes the request
// back has each redacted: as they are, form-encoded (the body), and as
// the Basic credential of RFC 6749 §2.3.1 (form-encoded, then base64).
// Longer forms come first: a short one may be part of a long one.
func requestSecrets(clientID string, cred broker.Credentials) []string {
	var out []string
	if cs := cred.ClientSecret.Reveal(); cs != "" {
		out = append(out,
			base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(clientID)+":"+url.QueryEscape(cs))),
			base64.StdEncoding.EncodeToString([]byte(clientID+":"+cs)))
	}
	for _, s := range []string{cred.ClientSecret.Reveal(), cred.RefreshToken.Reveal()} {
		if s != "" {
			out = append(out, url.QueryEscape(s), s)
		}
	}
	return out
}
