// Package testprovider is a strict OAuth2 authorization server for tests and
// demos. It implements the token endpoint of RFC 6749 for the refresh_token
// and client_credentials grants, rotates refresh tokens with reuse detection
// as RFC 9700 §4.14.2 describes, and can be told to misbehave the way real
// providers do (5xx, 429, HTML pages, lost responses, slow answers).
//
// It is strict where real servers are strict, so that code passing against
// it does not rely on leniency: client authentication must use exactly the
// configured style, parameters must not repeat, and an already-rotated
// refresh token revokes its whole grant chain.
//
// Routes:
//
//	GET  /authorize  the consent page of the authorization code grant (authorize.go)
//	POST /authorize  its Allow button
//	POST /token    the token endpoint (application/x-www-form-urlencoded)
//	GET  /api/me   a stand-in protected API: 200 {"ok":true} for a valid Bearer access token, else 401
//	GET  /stats    the counters (Stats) as JSON
package testprovider

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// DefaultAccessTokenLifetime is the expires_in sent when
// Config.AccessTokenLifetime is zero.
const DefaultAccessTokenLifetime = 30 * time.Minute

// maxFormBytes bounds a token request body; a real one is a few hundred bytes.
const maxFormBytes = 64 << 10

// Config describes the provider's client and behaviour.
type Config struct {
	// ClientID and ClientSecret are the only client credentials accepted
	// (with ClientSecrets). An empty ClientSecret with client assertions
	// configured accepts no secret at all.
	ClientID, ClientSecret string
	// ClientSecrets are further secrets accepted beside ClientSecret, as a
	// provider holds an old and a new one during a rotation (Entra keeps
	// several per app). SetClientSecrets replaces them all at run time.
	ClientSecrets []string
	// ClientAssertionKeys, when it has keys, makes the token endpoint accept
	// private_key_jwt client authentication (RFC 7523 §2.2, OpenID Connect
	// Core §9): client_assertion_type
	// urn:ietf:params:oauth:client-assertion-type:jwt-bearer and a
	// client_assertion signed by one of these keys (RS256, PS256 or ES256;
	// by kid, else x5t#S256, else the only key of its type), with iss = sub
	// = ClientID, aud one of ClientAssertionAudiences, exp in the future
	// and at most ClientAssertionMaxLifetime ahead, iat and nbf (when
	// present) not in the future, and a jti not accepted before (replay is
	// refused). Any failure is 401 invalid_client with an
	// error_description naming the check.
	ClientAssertionKeys JWKS
	// ClientAssertionAudiences are the aud values accepted; when empty,
	// the token endpoint's URL as the request addressed it
	// (http://host/token).
	ClientAssertionAudiences []string
	// ClientAssertionMaxLifetime bounds how far ahead a client assertion's
	// exp may be (DefaultClientAssertionLifetime when zero).
	ClientAssertionMaxLifetime time.Duration
	// FederatedCredentials are trusted issuers of client assertions, as
	// Entra's federated identity credentials (jwtbearer.go). An assertion
	// whose iss is one of them is checked against it instead of
	// ClientAssertionKeys; client_id is then required.
	FederatedCredentials []FederatedCredential
	// JWTBearer, when set, accepts the JWT-bearer grant (RFC 7523 §2.1)
	// with these rules; see SalesforceJWTBearer, DocusignJWTBearer,
	// GoogleServiceAccountJWTBearer.
	JWTBearer *JWTBearer
	// AssertionSkew is the clock skew allowed on every assertion's time
	// claims (DefaultAssertionSkew when zero).
	AssertionSkew time.Duration
	// AuthStyle is the client authentication the token endpoint demands:
	// broker.AuthBasic (the default, which RFC 6749 §2.3.1 makes every
	// server support) or broker.AuthBody. A request using the other style,
	// both, or neither is answered 401 invalid_client, as strict servers do.
	AuthStyle broker.AuthStyle
	// AccessTokenLifetime is the expires_in sent (DefaultAccessTokenLifetime
	// when zero).
	AccessTokenLifetime time.Duration
	// OmitExpiresIn sends no expires_in at all, as Salesforce does. Access
	// tokens still expire after AccessTokenLifetime.
	OmitExpiresIn bool
	// Rotate issues a new refresh token on every refresh and invalidates the
	// redeemed one. Without it a refresh response carries no refresh_token
	// and the redeemed one stays valid.
	Rotate bool
	// ReuseGrace, with Rotate, keeps accepting a rotated refresh token for
	// this long after its rotation (Xero: 30 minutes). Such a redemption
	// issues a new access token and returns the chain's current refresh
	// token (the successor already issued) without rotating again, so a
	// client that lost the first response converges on the same chain.
	// Redeeming a rotated token after the grace is reuse.
	ReuseGrace time.Duration
	// RequiredScope, when set, must be one of the space-separated values of
	// the scope parameter of every refresh and client_credentials request;
	// otherwise the request is answered 400 invalid_scope.
	RequiredScope string
	// Now is the provider's clock (time.Now when nil). It decides access
	// token expiry and the reuse grace.
	Now func() time.Time
}

// Stats counts what the token endpoint saw. Every field only grows.
type Stats struct {
	// TokenRequests counts every request to POST /token, whatever its fate.
	TokenRequests int `json:"tokenRequests"`
	// RefreshGrants and ClientCredentialsGrants count token requests by
	// their grant_type, faulted ones included.
	RefreshGrants           int `json:"refreshGrants"`
	ClientCredentialsGrants int `json:"clientCredentialsGrants"`
	JWTBearerGrants         int `json:"jwtBearerGrants"`
	// InvalidClient counts the requests answered invalid_client of the
	// provider's own accord (part of Rejected).
	InvalidClient int `json:"invalidClient"`
	// Issued counts access tokens issued, including those whose response
	// was then lost (FaultProcessedButLost).
	Issued int `json:"issued"`
	// Rejected counts requests the provider answered with an OAuth2 error of
	// its own accord (bad client, bad grant, bad scope…), not injected faults.
	Rejected int `json:"rejected"`
	// ReuseDetected counts redemptions of an already-rotated refresh token
	// outside the grace period.
	ReuseDetected int `json:"reuseDetected"`
	// ChainsRevoked counts grant chains revoked, by reuse detection or Revoke.
	ChainsRevoked int `json:"chainsRevoked"`
	// Faults counts injected faults consumed.
	Faults int `json:"faults"`
}

// FaultKind is a way for the token endpoint to misbehave.
type FaultKind int

const (
	// FaultServerError answers 500 {"error":"server_error"}.
	FaultServerError FaultKind = iota + 1
	// FaultUnavailable answers 503 {"error":"temporarily_unavailable"},
	// with Retry-After when Fault.RetryAfter is set.
	FaultUnavailable
	// FaultRateLimited answers 429 with Retry-After (whole seconds,
	// rounded up, "0" when Fault.RetryAfter is zero).
	FaultRateLimited
	// FaultInvalidGrant answers 400 {"error":"invalid_grant"}.
	FaultInvalidGrant
	// FaultInvalidClient answers 401 {"error":"invalid_client"}.
	FaultInvalidClient
	// FaultHTML answers 200 with a text/html page, like a login page or a
	// proxy's error page.
	FaultHTML
	// FaultSlow waits Fault.Delay (or until the request is cancelled), then
	// answers normally.
	FaultSlow
	// FaultProcessedButLost processes the request (a refresh token is
	// rotated, an access token issued) and then closes the connection
	// without answering: the client sees no response.
	FaultProcessedButLost
	// FaultErrorIn200 answers 200 {"error":"invalid_grant"}, as some
	// unorthodox servers do.
	FaultErrorIn200
	// FaultNoAccessToken answers 200 with a JSON object that has no
	// access_token.
	FaultNoAccessToken
	// FaultBadExpiresIn processes the request (a refresh token is rotated)
	// and answers the token with "expires_in": -1: a response the client
	// cannot use, yet carrying the only live refresh token.
	FaultBadExpiresIn
	// FaultCommitThenHold processes the request (a refresh token is
	// rotated: the old one is spent), closes Fault.Committed, and then
	// holds the answer until Fault.Release is closed (it is then sent) or
	// the client goes away (nothing is sent). It is the instant a real
	// provider passes through between committing a rotation and its
	// answer reaching the client: a client killed there has lost the new
	// refresh token, whatever it does after receiving answers.
	FaultCommitThenHold
)

var faultNames = map[FaultKind]string{
	FaultServerError:      "server_error",
	FaultUnavailable:      "unavailable",
	FaultRateLimited:      "rate_limited",
	FaultInvalidGrant:     "invalid_grant",
	FaultInvalidClient:    "invalid_client",
	FaultHTML:             "html",
	FaultSlow:             "slow",
	FaultProcessedButLost: "processed_but_lost",
	FaultErrorIn200:       "error_in_200",
	FaultNoAccessToken:    "no_access_token",
	FaultBadExpiresIn:     "bad_expires_in",
	FaultCommitThenHold:   "commit_then_hold",
}

// String returns the fault's name.
func (k FaultKind) String() string {
	if s, ok := faultNames[k]; ok {
		return s
	}
	return "FaultKind(" + strconv.Itoa(int(k)) + ")"
}

// Fault is one injected misbehaviour of the token endpoint.
type Fault struct {
	Kind FaultKind
	// RetryAfter is sent as Retry-After by FaultRateLimited and
	// FaultUnavailable.
	RetryAfter time.Duration
	// Delay is how long FaultSlow waits before answering.
	Delay time.Duration
	// Committed, for FaultCommitThenHold, is closed once the rotation is
	// committed; nil means nobody is told.
	Committed chan struct{}
	// Release, for FaultCommitThenHold, lets the held answer go; nil
	// holds it until the client goes away.
	Release <-chan struct{}
}

// Request is what the token endpoint received, as Requests records it.
type Request struct {
	// Grant is the grant_type parameter.
	Grant string
	// BasicAuth, BodyAuth and AssertionAuth report which client
	// authentication the request used (an Authorization header, a
	// client_secret parameter, a client_assertion parameter).
	BasicAuth, BodyAuth, AssertionAuth bool
	// Claims are the claims of the request's client assertion or
	// JWT-bearer assertion, as far as it was decoded (nil when none):
	// what tests of the client side assert on.
	Claims map[string]any
	// Form is the request's form with client_secret removed. It holds the
	// refresh token that was sent: do not print it outside tests.
	Form url.Values
	// Fault is the injected fault this request consumed, zero when none.
	Fault FaultKind
}

// Provider is the authorization server. It is safe for concurrent use.
type Provider struct {
	cfg Config
	mux *http.ServeMux

	mu       sync.Mutex
	stats    Stats
	faults   []Fault
	requests []Request
	refresh  map[string]*refreshToken
	access   map[string]time.Time // access token -> expiry
	authz    authorization
	// secrets are the client secrets accepted now.
	secrets []string
	// seenJTI is the replay cache of assertions: jti -> exp.
	seenJTI map[string]time.Time
	// lastClaims are the claims of the assertion the request being
	// processed carried, for its Request record.
	lastClaims map[string]any
}

// chain is one grant: the refresh tokens issued one after another from a
// single user consent.
type chain struct {
	current string
	revoked bool
}

type refreshToken struct {
	chain *chain
	// rotatedAt is when this token was replaced by a successor; zero while
	// it is the chain's current token.
	rotatedAt time.Time
}

// New returns a provider configured by cfg.
func New(cfg Config) *Provider {
	if cfg.AccessTokenLifetime <= 0 {
		cfg.AccessTokenLifetime = DefaultAccessTokenLifetime
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.AuthStyle == "" {
		cfg.AuthStyle = broker.AuthBasic
	}
	p := &Provider{
		cfg:     cfg,
		mux:     http.NewServeMux(),
		refresh: make(map[string]*refreshToken),
		access:  make(map[string]time.Time),
		seenJTI: make(map[string]time.Time),
	}
	p.secrets = slices.Concat([]string{cfg.ClientSecret}, cfg.ClientSecrets)
	p.mux.HandleFunc("GET /authorize", p.serveAuthorize)
	p.mux.HandleFunc("POST /authorize", p.serveAllow)
	p.mux.HandleFunc("POST /token", p.serveToken)
	p.mux.HandleFunc("GET /api/me", p.serveMe)
	p.mux.HandleFunc("GET /stats", p.serveStats)
	return p
}

// ServeHTTP implements http.Handler.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.mux.ServeHTTP(w, r) }

// IssueRefreshToken starts a new grant chain, as if a user had consented,
// and returns its refresh token.
func (p *Provider) IssueRefreshToken() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	rt := newToken("rt")
	p.refresh[rt] = &refreshToken{chain: &chain{current: rt}}
	return rt
}

// CurrentRefreshToken returns the current refresh token of the chain that
// rt belongs to (rt itself until it is rotated), and whether that chain is
// known and not revoked.
func (p *Provider) CurrentRefreshToken(rt string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.refresh[rt]
	if !ok || e.chain.revoked {
		return "", false
	}
	return e.chain.current, true
}

// Revoke revokes the grant chain that rt belongs to, as a user withdrawing
// consent would. It reports whether rt was known.
func (p *Provider) Revoke(rt string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.refresh[rt]
	if !ok {
		return false
	}
	p.revokeLocked(e.chain)
	return true
}

// SetClientSecrets replaces the client secrets the token endpoint accepts,
// as an operator adding a new secret at the provider (old and new) and
// later deleting the old one would.
func (p *Provider) SetClientSecrets(secrets ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.secrets = slices.Clone(secrets)
}

// Stats returns a snapshot of the counters.
func (p *Provider) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Requests returns the token requests received so far, oldest first.
func (p *Provider) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Request, len(p.requests))
	for i, r := range p.requests {
		r.Form = cloneValues(r.Form)
		out[i] = r
	}
	return out
}

// LastRequest returns the most recent token request, and false when there
// has been none.
func (p *Provider) LastRequest() (Request, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.requests) == 0 {
		return Request{}, false
	}
	r := p.requests[len(p.requests)-1]
	r.Form = cloneValues(r.Form)
	return r, true
}

// InjectFault queues faults. Each token request consumes the next one, in
// order; once the queue is empty the endpoint behaves normally again.
func (p *Provider) InjectFault(f ...Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, f...)
}

// ValidAccessToken reports whether tok was issued by this provider and has
// not expired.
func (p *Provider) ValidAccessToken(tok string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	exp, ok := p.access[tok]
	return ok && p.cfg.Now().Before(exp)
}

// response is a token endpoint answer, computed before it is written so that
// FaultProcessedButLost can process a request and then drop the answer.
type response struct {
	status      int
	header      http.Header
	body        []byte
	contentType string
}

func jsonResponse(status int, v any) response {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only maps of strings and numbers are marshalled
	}
	return response{status: status, body: b, contentType: "application/json;charset=UTF-8"}
}

// oauthError is an RFC 6749 §5.2 error response.
func oauthError(status int, code, description string) response {
	body := map[string]string{"error": code}
	if description != "" {
		body["error_description"] = description
	}
	return jsonResponse(status, body)
}

func (p *Provider) serveToken(w http.ResponseWriter, r *http.Request) {
	form, formErr := readForm(w, r)

	p.mu.Lock()
	p.stats.TokenRequests++
	var fault Fault
	if len(p.faults) > 0 {
		fault = p.faults[0]
		p.faults = p.faults[1:]
		p.stats.Faults++
	}
	switch form.Get("grant_type") {
	case string(broker.GrantRefreshToken):
		p.stats.RefreshGrants++
	case string(broker.GrantClientCredentials):
		p.stats.ClientCredentialsGrants++
	case GrantJWTBearer:
		p.stats.JWTBearerGrants++
	}
	rec := Request{Grant: form.Get("grant_type"), Fault: fault.Kind, Form: cloneValues(form)}
	rec.BasicAuth = r.Header.Get("Authorization") != ""
	rec.BodyAuth = form.Has("client_secret")
	rec.AssertionAuth = form.Has("client_assertion")
	rec.Form.Del("client_secret")
	p.requests = append(p.requests, rec)
	idx := len(p.requests) - 1
	p.mu.Unlock()

	var resp response
	switch fault.Kind {
	case 0, FaultProcessedButLost:
		resp = p.process(r, form, formErr, idx)
	case FaultSlow:
		t := time.NewTimer(fault.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
		resp = p.process(r, form, formErr, idx)
	case FaultServerError:
		resp = oauthError(http.StatusInternalServerError, "server_error", "")
	case FaultUnavailable:
		resp = oauthError(http.StatusServiceUnavailable, "temporarily_unavailable", "")
		if fault.RetryAfter > 0 {
			resp.header = http.Header{"Retry-After": {retryAfterSeconds(fault.RetryAfter)}}
		}
	case FaultRateLimited:
		resp = oauthError(http.StatusTooManyRequests, "rate_limited", "too many requests")
		resp.header = http.Header{"Retry-After": {retryAfterSeconds(fault.RetryAfter)}}
	case FaultInvalidGrant:
		resp = oauthError(http.StatusBadRequest, "invalid_grant", "injected fault")
	case FaultInvalidClient:
		resp = oauthError(http.StatusUnauthorized, "invalid_client", "injected fault")
	case FaultHTML:
		resp = response{status: http.StatusOK, contentType: "text/html; charset=utf-8",
			body: []byte("<!DOCTYPE html><html><body><h1>Sign in</h1></body></html>")}
	case FaultErrorIn200:
		resp = oauthError(http.StatusOK, "invalid_grant", "injected fault")
	case FaultNoAccessToken:
		resp = jsonResponse(http.StatusOK, map[string]any{"token_type": "Bearer", "expires_in": 3600})
	case FaultCommitThenHold:
		resp = p.process(r, form, formErr, idx)
		if fault.Committed != nil {
			close(fault.Committed)
		}
		select {
		case <-fault.Release:
		case <-r.Context().Done():
			return
		}
	case FaultBadExpiresIn:
		resp = p.process(r, form, formErr, idx)
		var body map[string]any
		if resp.status == http.StatusOK && json.Unmarshal(resp.body, &body) == nil {
			body["expires_in"] = -1
			resp = jsonResponse(http.StatusOK, body)
		}
	default:
		resp = oauthError(http.StatusInternalServerError, "server_error", "unknown fault "+fault.Kind.String())
	}

	if fault.Kind == FaultProcessedButLost {
		dropConnection(w)
		return
	}
	for k, v := range resp.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", resp.contentType)
	if strings.HasPrefix(resp.contentType, "application/json") {
		// RFC 6749 §5.1: token responses must not be cached.
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
	}
	if resp.status == http.StatusUnauthorized && rec.BasicAuth {
		// RFC 6749 §5.2: a client that tried the Authorization header is
		// told which scheme the server accepts.
		w.Header().Set("WWW-Authenticate", `Basic realm="testprovider"`)
	}
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body)
}

// dropConnection closes the client's connection without an answer. Hijack
// works on HTTP/1; elsewhere ErrAbortHandler makes the server reset the
// stream, which the client sees the same way.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

func retryAfterSeconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// readForm parses the request body strictly: the form content type, a bounded
// size, and no parameter more than once (RFC 6749 §3.2). Query parameters are
// ignored, as the token endpoint takes its parameters from the body.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return url.Values{}, fmt.Errorf("content type must be application/x-www-form-urlencoded")
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFormBytes))
	if err != nil {
		return url.Values{}, fmt.Errorf("request body unreadable or too large")
	}
	form, err := url.ParseQuery(string(b))
	if err != nil {
		return url.Values{}, fmt.Errorf("malformed form body")
	}
	for k, v := range form {
		if len(v) > 1 {
			return form, fmt.Errorf("parameter %s repeated", k)
		}
	}
	return form, nil
}

// process answers a token request that no fault intercepted.
func (p *Provider) process(r *http.Request, form url.Values, formErr error, idx int) response {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastClaims = nil
	resp := p.processLocked(r, form, formErr)
	p.requests[idx].Claims = p.lastClaims
	if resp.status != http.StatusOK {
		p.stats.Rejected++
		if resp.status == http.StatusUnauthorized {
			p.stats.InvalidClient++
		}
	}
	return resp
}

func (p *Provider) processLocked(r *http.Request, form url.Values, formErr error) response {
	if formErr != nil {
		return oauthError(http.StatusBadRequest, "invalid_request", formErr.Error())
	}
	grant := form.Get("grant_type")
	// RFC 7523 §3.1: client authentication is optional for the JWT-bearer
	// grant; when the request carries some, it must be right.
	if grant != GrantJWTBearer || hasClientAuth(r, form) {
		if resp, ok := p.authenticate(r, form); !ok {
			return resp
		}
	}
	switch grant {
	case "":
		return oauthError(http.StatusBadRequest, "invalid_request", "grant_type is missing")
	case string(broker.GrantRefreshToken), string(broker.GrantClientCredentials):
	case grantAuthorizationCode:
		return p.redeemCodeLocked(form)
	case GrantJWTBearer:
		return p.redeemAssertionLocked(form)
	default:
		return oauthError(http.StatusBadRequest, "unsupported_grant_type", "grant_type "+grant+" is not supported")
	}
	if p.cfg.RequiredScope != "" && !slices.Contains(strings.Fields(form.Get("scope")), p.cfg.RequiredScope) {
		return oauthError(http.StatusBadRequest, "invalid_scope", "scope must include "+p.cfg.RequiredScope)
	}
	if grant == string(broker.GrantClientCredentials) {
		return p.issueLocked(form, "")
	}

	rt := form.Get("refresh_token")
	if rt == "" {
		return oauthError(http.StatusBadRequest, "invalid_request", "refresh_token is missing")
	}
	e, ok := p.refresh[rt]
	switch {
	case !ok:
		return oauthError(http.StatusBadRequest, "invalid_grant", "unknown refresh token")
	case e.chain.revoked:
		return oauthError(http.StatusBadRequest, "invalid_grant", "refresh token has been revoked")
	case !e.rotatedAt.IsZero():
		if p.cfg.ReuseGrace > 0 && p.cfg.Now().Sub(e.rotatedAt) < p.cfg.ReuseGrace {
			return p.issueLocked(form, e.chain.current)
		}
		// RFC 9700 §4.14.2: either the legitimate client or an attacker
		// holds a stolen token; the server cannot tell which, so the whole
		// grant goes.
		p.stats.ReuseDetected++
		p.revokeLocked(e.chain)
		return oauthError(http.StatusBadRequest, "invalid_grant", "refresh token was already used; the grant has been revoked")
	}
	if !p.cfg.Rotate {
		return p.issueLocked(form, "")
	}
	next := newToken("rt")
	p.refresh[next] = &refreshToken{chain: e.chain}
	e.rotatedAt = p.cfg.Now()
	e.chain.current = next
	return p.issueLocked(form, next)
}

func hasClientAuth(r *http.Request, form url.Values) bool {
	return r.Header.Get("Authorization") != "" || form.Has("client_secret") ||
		form.Has("client_assertion") || form.Has("client_assertion_type")
}

// authenticate checks client authentication in exactly the configured style:
// a client secret in AuthStyle, or a client assertion when those are
// configured.
func (p *Provider) authenticate(r *http.Request, form url.Values) (response, bool) {
	header := r.Header.Get("Authorization") != ""
	body := form.Has("client_secret")
	assertion := form.Has("client_assertion") || form.Has("client_assertion_type")
	var id, secret string
	switch {
	case (header && body) || (assertion && (header || body)):
		return oauthError(http.StatusUnauthorized, "invalid_client", "more than one client authentication method"), false
	case assertion:
		return p.authenticateAssertionLocked(r, form)
	case p.cfg.AuthStyle == broker.AuthBasic && header:
		u, pw, ok := r.BasicAuth()
		if !ok {
			return oauthError(http.StatusUnauthorized, "invalid_client", "malformed Authorization header"), false
		}
		// RFC 6749 §2.3.1: both parts are form-urlencoded before Basic.
		var err1, err2 error
		id, err1 = url.QueryUnescape(u)
		secret, err2 = url.QueryUnescape(pw)
		if err1 != nil || err2 != nil {
			return oauthError(http.StatusUnauthorized, "invalid_client", "malformed Authorization header"), false
		}
		if cid := form.Get("client_id"); cid != "" && cid != id {
			return oauthError(http.StatusUnauthorized, "invalid_client", "client_id does not match the Authorization header"), false
		}
	case p.cfg.AuthStyle == broker.AuthBody && body:
		id, secret = form.Get("client_id"), form.Get("client_secret")
	default:
		return oauthError(http.StatusUnauthorized, "invalid_client", "client authentication must use "+string(p.cfg.AuthStyle)), false
	}
	// A provider that takes assertions and has no secret takes none.
	secretOK := slices.ContainsFunc(p.secrets, func(s string) bool { return constantEqual(s, secret) }) &&
		(secret != "" || !p.assertionsConfigured())
	if id != p.cfg.ClientID || !secretOK {
		return oauthError(http.StatusUnauthorized, "invalid_client", "client authentication failed"), false
	}
	return response{}, true
}

func (p *Provider) assertionsConfigured() bool {
	return len(p.cfg.ClientAssertionKeys.Keys) > 0 || len(p.cfg.FederatedCredentials) > 0
}

// issueLocked issues an access token, with refreshToken in the response when
// it is not empty.
func (p *Provider) issueLocked(form url.Values, refreshToken string) response {
	at := newToken("at")
	p.access[at] = p.cfg.Now().Add(p.cfg.AccessTokenLifetime)
	p.stats.Issued++
	body := map[string]any{"access_token": at, "token_type": "Bearer"}
	if !p.cfg.OmitExpiresIn {
		body["expires_in"] = int64(p.cfg.AccessTokenLifetime / time.Second)
	}
	if refreshToken != "" {
		body["refresh_token"] = refreshToken
	}
	if s := form.Get("scope"); s != "" {
		body["scope"] = s
	}
	return jsonResponse(http.StatusOK, body)
}

func (p *Provider) revokeLocked(c *chain) {
	if !c.revoked {
		c.revoked = true
		p.stats.ChainsRevoked++
	}
}

func (p *Provider) serveMe(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !p.ValidAccessToken(tok) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, map[string]any{"ok": false})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
}

func (p *Provider) serveStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, p.Stats())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// newToken returns an opaque random token; the prefix only helps a human
// tell token kinds apart while debugging.
func newToken(prefix string) string { return prefix + "_" + rand.Text() }

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vv := range v {
		out[k] = slices.Clone(vv)
	}
	return out
}
