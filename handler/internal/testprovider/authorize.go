package testprovider

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"html"
	"html/template"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// The authorization code grant (RFC 6749 §4.1) with PKCE (RFC 7636), for
// tests of a consent flow:
//
//	GET  /authorize  checks the request and shows a consent page: an Allow
//	                 button (a form posted back here) and a Deny link
//	POST /authorize  Allow: issues a one-time code bound to the redirect URI
//	                 and the PKCE challenge, and redirects back with it
//
// and grant_type=authorization_code at the token endpoint. It is strict:
// only S256 challenges, redirect URIs matched exactly against those
// AllowRedirectURIs registered, a code redeemed once (presenting it again
// revokes the grant it produced, as RFC 6749 §4.1.2 suggests), and the code
// verifier checked.

// CodeLifetime is how long an authorization code can be redeemed. RFC 6749
// §4.1.2 asks for ten minutes at most; real providers use one to ten.
const CodeLifetime = time.Minute

const grantAuthorizationCode = "authorization_code"

// authorization is the provider's state of the authorization code grant,
// guarded by Provider.mu.
type authorization struct {
	redirectURIs []string
	codes        map[string]*authCode
	stats        AuthorizationStats
}

// authCode is an issued authorization code and what it is bound to.
type authCode struct {
	redirectURI string
	challenge   string
	scope       string
	expiry      time.Time
	used        bool
	// chain is the grant the code was redeemed for, revoked if the code
	// comes back.
	chain *chain
}

// AuthorizationStats counts what the authorization code grant saw. Every
// field only grows.
type AuthorizationStats struct {
	// Consents counts Allow decisions that issued a code.
	Consents int `json:"consents"`
	// CodesRedeemed counts codes exchanged for tokens.
	CodesRedeemed int `json:"codesRedeemed"`
	// CodesRefused counts code redemptions refused: unknown, reused,
	// expired, or with a wrong redirect URI or verifier.
	CodesRefused int `json:"codesRefused"`
}

// AllowRedirectURIs registers redirect URIs for the client. The
// authorization endpoint accepts only these, compared as strings.
func (p *Provider) AllowRedirectURIs(uris ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.authz.redirectURIs = append(p.authz.redirectURIs, uris...)
}

// AuthorizationStats returns a snapshot of the authorization code grant's
// counters.
func (p *Provider) AuthorizationStats() AuthorizationStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.authz.stats
}

// authRequest is a checked authorization request.
type authRequest struct {
	ClientID, RedirectURI, State, Scope, Challenge string
}

// authError is a refused authorization request. redirect is false when the
// client or the redirect URI is in doubt: the error is then shown to the
// person rather than sent to an address nobody vouched for (RFC 6749
// §4.1.2.1).
type authError struct {
	redirect    bool
	code, descr string
}

var challengePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

// checkAuthRequest checks the parameters of an authorization request, in
// the query (GET) or the posted consent form (POST).
func (p *Provider) checkAuthRequest(v url.Values) (authRequest, *authError) {
	req := authRequest{
		ClientID:    v.Get("client_id"),
		RedirectURI: v.Get("redirect_uri"),
		State:       v.Get("state"),
		Scope:       v.Get("scope"),
		Challenge:   v.Get("code_challenge"),
	}
	p.mu.Lock()
	registered := slices.Contains(p.authz.redirectURIs, req.RedirectURI)
	p.mu.Unlock()
	switch {
	case len(v["client_id"]) != 1 || req.ClientID != p.cfg.ClientID:
		return req, &authError{code: "invalid_client", descr: "unknown client_id"}
	case len(v["redirect_uri"]) != 1 || !registered:
		return req, &authError{code: "invalid_request", descr: "redirect_uri is not registered for this client"}
	}
	for k, vv := range v {
		if len(vv) > 1 {
			return req, &authError{redirect: true, code: "invalid_request", descr: "parameter " + k + " repeated"}
		}
	}
	switch {
	case v.Get("response_type") != "code":
		return req, &authError{redirect: true, code: "unsupported_response_type", descr: "response_type must be code"}
	case v.Get("code_challenge_method") != "S256":
		return req, &authError{redirect: true, code: "invalid_request", descr: "PKCE is required, with code_challenge_method S256"}
	case !challengePattern.MatchString(req.Challenge):
		return req, &authError{redirect: true, code: "invalid_request", descr: "code_challenge must be 43 characters of base64url"}
	}
	return req, nil
}

// redirectTo returns redirectURI with params added to its query.
func redirectTo(redirectURI string, params url.Values) string {
	u, err := url.Parse(redirectURI)
	if err != nil {
		return redirectURI // registered by the test itself
	}
	q := u.Query()
	for k, vv := range params {
		q[k] = vv
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func (p *Provider) refuseAuthorization(w http.ResponseWriter, r *http.Request, req authRequest, e *authError) {
	if !e.redirect {
		writePage(w, http.StatusBadRequest, "Authorization refused", e.code+": "+e.descr)
		return
	}
	q := url.Values{"error": {e.code}, "error_description": {e.descr}}
	if req.State != "" {
		q.Set("state", req.State)
	}
	http.Redirect(w, r, redirectTo(req.RedirectURI, q), http.StatusFound)
}

var consentPage = template.Must(template.New("consent").Parse(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>testprovider: authorize {{.ClientID}}</title></head>
<body>
<h1>Authorize {{.ClientID}}</h1>
<p>The application asks for: <span id="scope">{{if .Scope}}{{.Scope}}{{else}}(no scope){{end}}</span></p>
<form id="consent" method="post" action="authorize">
<input type="hidden" name="response_type" value="code">
<input type="hidden" name="client_id" value="{{.ClientID}}">
<input type="hidden" name="redirect_uri" value="{{.RedirectURI}}">
<input type="hidden" name="state" value="{{.State}}">
<input type="hidden" name="scope" value="{{.Scope}}">
<input type="hidden" name="code_challenge" value="{{.Challenge}}">
<input type="hidden" name="code_challenge_method" value="S256">
<button type="submit" id="allow">Allow</button>
</form>
<p><a id="deny" href="{{.DenyURL}}">Deny</a></p>
</body>
</html>
`))

// serveAuthorize shows the consent page for a valid request.
func (p *Provider) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	req, e := p.checkAuthRequest(r.URL.Query())
	if e != nil {
		p.refuseAuthorization(w, r, req, e)
		return
	}
	deny := url.Values{"error": {"access_denied"}, "error_description": {"The user denied the request"}}
	if req.State != "" {
		deny.Set("state", req.State)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = consentPage.Execute(w, struct {
		authRequest
		DenyURL string
	}{req, redirectTo(req.RedirectURI, deny)})
}

// serveAllow is the consent page's Allow: the request is checked again
// (the form came through the browser), then a code is issued.
func (p *Provider) serveAllow(w http.ResponseWriter, r *http.Request) {
	form, err := readForm(w, r)
	if err != nil {
		writePage(w, http.StatusBadRequest, "Authorization refused", "invalid_request: "+err.Error())
		return
	}
	req, e := p.checkAuthRequest(form)
	if e != nil {
		p.refuseAuthorization(w, r, req, e)
		return
	}
	code := newToken("code")
	p.mu.Lock()
	if p.authz.codes == nil {
		p.authz.codes = make(map[string]*authCode)
	}
	p.authz.codes[code] = &authCode{
		redirectURI: req.RedirectURI,
		challenge:   req.Challenge,
		scope:       req.Scope,
		expiry:      p.cfg.Now().Add(CodeLifetime),
	}
	p.authz.stats.Consents++
	p.mu.Unlock()
	q := url.Values{"code": {code}}
	if req.State != "" {
		q.Set("state", req.State)
	}
	// 303: the browser follows a POST's redirect with a GET.
	http.Redirect(w, r, redirectTo(req.RedirectURI, q), http.StatusSeeOther)
}

var verifierPattern = regexp.MustCompile(`^[A-Za-z0-9._~-]{43,128}$`)

// redeemCodeLocked answers grant_type=authorization_code for an
// authenticated client: a new grant chain whose first refresh token is in
// the response, rotated afterwards as Config.Rotate says.
func (p *Provider) redeemCodeLocked(form url.Values) response {
	refuse := func(code, descr string) response {
		p.authz.stats.CodesRefused++
		return oauthError(http.StatusBadRequest, code, descr)
	}
	code := form.Get("code")
	if code == "" {
		return refuse("invalid_request", "code is missing")
	}
	c, ok := p.authz.codes[code]
	if !ok {
		return refuse("invalid_grant", "unknown authorization code")
	}
	if c.used {
		if c.chain != nil {
			p.revokeLocked(c.chain)
		}
		return refuse("invalid_grant", "authorization code was already used; the grant issued for it has been revoked")
	}
	// Once presented, a code is spent, whatever the outcome: a wrong
	// verifier cannot be followed by guesses.
	c.used = true
	verifier := form.Get("code_verifier")
	switch {
	case !p.cfg.Now().Before(c.expiry):
		return refuse("invalid_grant", "authorization code has expired")
	case form.Get("redirect_uri") != c.redirectURI:
		return refuse("invalid_grant", "redirect_uri does not match the authorization request")
	case !verifierPattern.MatchString(verifier):
		return refuse("invalid_grant", "code_verifier is missing or malformed")
	case s256(verifier) != c.challenge:
		return refuse("invalid_grant", "code_verifier does not match the code_challenge")
	}
	rt := newToken("rt")
	c.chain = &chain{current: rt}
	p.refresh[rt] = &refreshToken{chain: c.chain}
	p.authz.stats.CodesRedeemed++
	echo := url.Values{}
	if c.scope != "" {
		echo.Set("scope", c.scope)
	}
	return p.issueLocked(echo, rt)
}

func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

var pageTemplate = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>testprovider: {{.Title}}</title></head>
<body><h1>{{.Title}}</h1><p id="message">{{.Message}}</p></body></html>
`))

func writePage(w http.ResponseWriter, status int, title, message string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = pageTemplate.Execute(w, struct{ Title, Message string }{title, message})
}

// The browser's side of the consent page, for tests without a browser.

var (
	hiddenInput = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)
	denyLink    = regexp.MustCompile(`<a id="deny" href="([^"]*)">`)
)

// Approve does what a person does at the consent page of authURL: opens it
// and presses Allow. client follows the redirects, so the response is the
// redirect URI's answer (the client's callback page) unless a redirect
// fails. It fails when the page is not the consent page.
func Approve(ctx context.Context, client *http.Client, authURL string) (*http.Response, error) {
	page, base, err := consentForm(ctx, client, authURL)
	if err != nil {
		return nil, err
	}
	form := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(page, -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	action := base.ResolveReference(&url.URL{Path: "authorize"})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, action.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return client.Do(req)
}

// Deny follows the consent page's Deny link of authURL, and returns the
// redirect URI's answer.
func Deny(ctx context.Context, client *http.Client, authURL string) (*http.Response, error) {
	page, _, err := consentForm(ctx, client, authURL)
	if err != nil {
		return nil, err
	}
	m := denyLink.FindStringSubmatch(page)
	if m == nil {
		return nil, errors.New("testprovider: the consent page has no Deny link")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, html.UnescapeString(m[1]), nil)
	if err != nil {
		return nil, err
	}
	return client.Do(req)
}

// consentForm fetches the consent page at authURL.
func consentForm(ctx context.Context, client *http.Client, authURL string) (string, *url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return "", nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", nil, err
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || mt != "text/html" || !strings.Contains(string(b), `id="consent"`) {
		return "", nil, fmt.Errorf("testprovider: %s answered %d %s, not the consent page: %.300s", authURL, resp.StatusCode, mt, b)
	}
	return string(b), resp.Request.URL, nil
}
