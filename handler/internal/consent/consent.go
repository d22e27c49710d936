// Package consent obtains a connection's refresh token from a person's
// consent: the OAuth2 authorization code grant (RFC 6749 §4.1) with PKCE
// (RFC 7636, method S256), on golang.org/x/oauth2. `handler connect` runs it
// from a workstation with a loopback redirect URI (RFC 8252 §7.3); the
// function app runs it for an operator at /api/consent/{connection} when a
// grant has died (invalid_grant).
//
// Both share what is here: where the provider's authorization endpoint is
// (AuthorizationURL), what makes the provider issue a refresh token
// (Scopes, and the parameters Flow.AuthCodeURL adds), reading the provider's
// redirect back (ParseCallback), the code exchange (Flow.Exchange), and
// storing the result as the broker does (Save). The function app's redirect
// may reach any of its instances, so it keeps its pending authorizations in
// the secret store (PendingStore); the command keeps its one in memory.
//
// Nothing here shows a token: pages say what happened, the provider's own
// words are sanitised, and tokens go to the store only.
package consent

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
)

// DefaultExchangeTimeout bounds the code exchange when Flow.HTTPClient is
// nil. An authorization code lives a minute or ten at the provider, so
// waiting longer would only end in invalid_grant.
const DefaultExchangeTimeout = 30 * time.Second

// Flow is the authorization code grant of one connection.
type Flow struct {
	// Connection is the connection being authorized: its token URL, client
	// authentication style, extra token parameters and default lifetime.
	Connection broker.Connection
	// AuthorizationURL is the provider's authorization endpoint (see the
	// function AuthorizationURL).
	AuthorizationURL string
	// RedirectURL is where the provider sends the browser back. The provider
	// compares it with the redirect URIs registered for the client, usually
	// character for character.
	RedirectURL string
	// ClientID and ClientSecret authenticate the client (see
	// ClientCredentials).
	ClientID     string
	ClientSecret broker.Secret
	// Scopes are asked for at the authorization endpoint (see Scopes).
	Scopes []string
	// HTTPClient sends the token request; nil means a client that gives up
	// after DefaultExchangeTimeout and follows no redirect.
	HTTPClient *http.Client
	// Now is the clock for the token's IssuedAt and default expiry; nil
	// means time.Now.
	Now func() time.Time
	// Signer and Federated make the client assertion of a private_key_jwt
	// or managedIdentity connection's code exchange, as they make its
	// refreshes (oauth.Options); nil where the handler has none, and such
	// an exchange then fails unsent.
	Signer    oauth.Signer
	Federated oauth.FederatedToken
}

// NewState returns a random state parameter (RFC 6749 §10.12): 128 bits,
// so that a callback carrying it can only come from this authorization.
func NewState() string { return rand.Text() }

// NewVerifier returns a fresh PKCE code verifier (RFC 7636 §4.1), one per
// authorization.
func NewVerifier() broker.Secret { return broker.Secret(oauth2.GenerateVerifier()) }

// AuthCodeURL returns the URL of the provider's consent page for this flow:
// the client, redirect URI and scopes, state, the S256 challenge of
// verifier, and whatever the provider needs to issue a refresh token
// (access_type=offline for Google, for instance).
func (f *Flow) AuthCodeURL(state string, verifier broker.Secret) (string, error) {
	cfg, err := f.config()
	if err != nil {
		return "", err
	}
	if err := checkEndpointURL(f.AuthorizationURL); err != nil {
		return "", &EndpointError{Connection: f.Connection.Name, Provider: f.Connection.Provider, URL: f.AuthorizationURL, Err: err}
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier.Reveal())}
	for _, kv := range offline[f.Connection.Provider].params {
		opts = append(opts, oauth2.SetAuthURLParam(kv[0], kv[1]))
	}
	// The connection's authParams come last, so they may change a
	// preset's (prompt=select_account rather than consent); config refuses
	// those the request itself sets (broker.ReservedAuthParam).
	for _, k := range slices.Sorted(maps.Keys(f.Connection.AuthParams)) {
		if broker.ReservedAuthParam(k) {
			return "", &EndpointError{Connection: f.Connection.Name, Provider: f.Connection.Provider,
				Err: fmt.Errorf("authParams may not set %q: the authorization request sets it", k)}
		}
		opts = append(opts, oauth2.SetAuthURLParam(k, f.Connection.AuthParams[k]))
	}
	return cfg.AuthCodeURL(state, opts...), nil
}

// Exchange redeems an authorization code at the token endpoint, with the
// verifier whose challenge the authorization request carried, and the
// connection's Params as in every token request. It fails with
// ErrNoRefreshToken (wrapped in an *ExchangeError) when the provider issued
// no refresh token: the connection would be dead once the access token
// expires. Failures are *ExchangeError.
//
// The exchange is a token request like every other, package oauth's: its
// checks of the connection (reserved parameters, the client
// authentication style, set explicitly), size limit, no redirects, its
// reading of a failure (an allow-list of the answer's fields, each
// redacted) and its one check of the tokens issued.
func (f *Flow) Exchange(ctx context.Context, code string, verifier broker.Secret) (*broker.Token, error) {
	timeout, transport := DefaultExchangeTimeout, http.RoundTripper(nil)
	if f.HTTPClient != nil {
		transport = f.HTTPClient.Transport
		if f.HTTPClient.Timeout > 0 {
			timeout = f.HTTPClient.Timeout
		}
	}
	client := oauth.New(oauth.Options{Timeout: timeout, AttemptTimeout: timeout, Transport: transport, Now: f.Now,
		Signer: f.Signer, Federated: f.Federated})
	tok, err := client.Exchange(ctx, &f.Connection, f.credentials(), code, verifier.Reveal(), f.RedirectURL)
	if err != nil {
		return nil, f.exchangeError(err)
	}
	if tok.RefreshToken.IsZero() {
		return nil, &ExchangeError{Connection: f.Connection.Name, Provider: f.Connection.Provider, Err: ErrNoRefreshToken}
	}
	return tok, nil
}

func (f *Flow) credentials() broker.Credentials {
	return broker.Credentials{ClientID: f.ClientID, ClientSecret: f.ClientSecret}
}

// config is the oauth2.Config of the consent page. It is refused when the
// code it leads to could not be redeemed (oauth.CheckExchange), before a
// person is sent to the provider.
func (f *Flow) config() (*oauth2.Config, error) {
	if err := oauth.CheckExchange(&f.Connection, f.credentials()); err != nil {
		return nil, f.exchangeError(err)
	}
	return &oauth2.Config{
		ClientID:    f.ClientID,
		Endpoint:    oauth2.Endpoint{AuthURL: f.AuthorizationURL},
		RedirectURL: f.RedirectURL,
		Scopes:      f.Scopes,
	}, nil
}

// exchangeError keeps what may be shown of a failed exchange: the status,
// the RFC 6749 error code and the description as package oauth cleaned
// them, and its sentinel errors. Never a body, nor a transport error's
// text, which names the token URL.
func (f *Flow) exchangeError(err error) *ExchangeError {
	e := &ExchangeError{Connection: f.Connection.Name, Provider: f.Connection.Provider}
	var pe *broker.ProviderError
	if !errors.As(err, &pe) {
		e.Err = err
		return e
	}
	e.StatusCode, e.Code, e.Description = pe.StatusCode, pe.Code, pe.Description
	e.Category, e.Diagnosis = broker.Category(pe.Category), pe.Remediation
	switch {
	case errors.Is(pe, oauth.ErrInvalidConnection):
		e.Err = fmt.Errorf("%w: %s", ErrBadConnection, pe.Description)
		e.Description = ""
	case errors.Is(pe, oauth.ErrMalformedResponse), errors.Is(pe, oauth.ErrResponseTooLarge):
		e.Err = pe.Err
	case pe.StatusCode == 0:
		e.Err = errors.New("no answer from the token endpoint")
	}
	return e
}

// ErrBadConnection is wrapped by an *ExchangeError when the connection
// cannot be used for a code exchange; nothing was sent.
var ErrBadConnection = errors.New("connection cannot be used for a code exchange")

// ErrNoRefreshToken is wrapped by an *ExchangeError when the provider
// answered the exchange without a refresh token.
var ErrNoRefreshToken = errors.New("the provider issued no refresh token")

// ExchangeError is a failed code exchange. It carries the provider's answer
// as far as it may be shown: never a body, a code or a token.
type ExchangeError struct {
	Connection string
	Provider   string
	// StatusCode is the token endpoint's HTTP status; zero when no answer
	// arrived or nothing was sent.
	StatusCode int
	// Code is the RFC 6749 §5.2 error code, when the provider sent one.
	Code string
	// Description is the provider's error_description, sanitised.
	Description string
	// Err is the cause when it was not the provider's error answer: a
	// transport failure, ErrNoRefreshToken, ErrBadConnection.
	Err error
	// Category is the failure's category in the broker's vocabulary, and
	// Diagnosis the token client's remediation, which names the
	// connection's own secrets; empty when there was no diagnosis.
	Category  broker.Category
	Diagnosis string
}

func (e *ExchangeError) Error() string {
	// The token endpoint's answer reads as every token request's failure
	// does (broker.ProviderError).
	answer := &broker.ProviderError{StatusCode: e.StatusCode, Code: e.Code, Description: e.Description, Err: e.Err}
	return fmt.Sprintf("connection %q: exchanging the authorization code: %s", e.Connection, answer)
}

func (e *ExchangeError) Unwrap() error { return e.Err }

// Remediation says what to do about the failure, for the person at the
// browser or the terminal.
func (e *ExchangeError) Remediation() string {
	switch {
	case errors.Is(e.Err, ErrNoRefreshToken):
		return "Ask for offline access: check the scopes (-scope adds one; Xero, Atlassian and Microsoft need offline_access, which is added for them) " +
			"and that the app registration at the provider may issue refresh tokens; then start again."
	case errors.Is(e.Err, ErrBadConnection):
		return "Fix the connection in the connections file, then start again."
	case e.Code == "invalid_grant":
		// At an exchange the grant is the code, not a refresh token.
		return "The code was refused: it expired, was already used, or the redirect URI or PKCE verifier did not match the authorization request. Start again."
	case (e.Category == broker.CategoryRotateClientSecret || e.Category == broker.CategoryFixConfiguration) && e.Diagnosis != "":
		// The client and the configuration are the same for an exchange
		// as for a refresh: the diagnosis says which secret or setting.
		return strings.TrimSuffix(e.Diagnosis, ".") + "; then start again."
	case e.Code == "invalid_client" || e.Code == "unauthorized_client":
		return fmt.Sprintf("Check the client id and secret of connection %q in the store, and its clientAuth (the provider may want the other style); then start again.", e.Connection)
	case e.StatusCode == 0 && e.Err != nil:
		return "The token endpoint could not be reached; check the network and the connection's tokenUrl, then start again."
	}
	return "Start again; if it fails the same way, check the app registration at the provider."
}
