package functions

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
)

// ConsentBroker is what the consent routes need of the broker beyond
// Broker: the secret store it reads. The consent flow reads the client
// credentials there, keeps its pending authorization there (the provider's
// redirect may reach any instance), and stores the new tokens there, where
// every instance's broker finds them. A Broker without it answers the
// consent routes with 501.
type ConsentBroker interface {
	Broker
	Store() broker.SecretStore
}

// consentRoutes is the operator's re-authorization, for a connection whose
// grant died (invalid_grant): the authorization code grant with PKCE,
// through the function app.
//
//	GET /api/consent/{connection}  admin key: redirects to the provider's consent page
//	GET /api/consent/callback      anonymous: the provider's redirect back
//
// The callback takes no key (the provider cannot send one), so it does
// nothing unless its state is a pending authorization that is valid,
// unexpired and unused, and the browser carries the cookie the start route
// set with it (RFC 9700 §4.7.1: the state bound to the user agent). The
// PKCE verifier never leaves the store, so a code that does not come from
// that authorization cannot be redeemed.
type consentRoutes struct {
	b   Broker
	log *slog.Logger
	now func() time.Time
	// authorizationURL finds a connection's authorization endpoint; tests
	// point it at the test provider.
	authorizationURL func(broker.Connection) (string, error)
	// client sends the code exchange; nil means consent's default.
	client *http.Client
	// forwardedByHost is Options.ForwardedByHost: the redirect URI's host
	// may come from X-Forwarded-Host, and the client's address from
	// X-Forwarded-For.
	forwardedByHost bool
	// authEnabled is Options.AuthEnabled, for allowedCallers.
	authEnabled bool
	// keys returns the state-signing and ticket keys (consentKeys).
	keys func(context.Context) (consentKeys, error)
	// limit bounds the callbacks per client address.
	limit *addrLimiter
	// needTicket: the start route needs a ticket (standalone mode,
	// checkTicket); tickets are those already used.
	needTicket bool
	tickets    *usedTickets
}

// consentKeys are derived from Options.ConsentKey: one signs states, the
// other start tickets (consent.StateKey, consent.TicketKey).
type consentKeys struct{ state, ticket []byte }

// callbackPath is the redirect URI's path. A connection named "callback"
// would have this path as its start route, and the host routes it to the
// callback (hostRouter); config refuses that name.
const callbackPath = "/api/consent/callback"

// exchangeTimeout bounds the exchange and the store writes after the
// callback. They run detached from the browser's request: once the code is
// redeemed, a closed tab must not stop the new refresh token being stored.
const exchangeTimeout = time.Minute

func newConsentRoutes(b Broker, o Options) *consentRoutes {
	return &consentRoutes{b: b, log: o.Logger, now: o.Now, authorizationURL: consent.AuthorizationURL, forwardedByHost: o.ForwardedByHost,
		authEnabled: o.AuthEnabled, keys: keySource(o.ConsentKey), limit: newAddrLimiter(),
		needTicket: !o.ForwardedByHost, tickets: &usedTickets{}}
}

// keySource derives the consent keys from material, read once (the
// KeySource caches). Without material (tests, a broker that keeps no
// store) the keys are random for the life of the process, which serves
// one instance.
func keySource(material broker.KeySource) func(context.Context) (consentKeys, error) {
	if material == nil {
		random := make([]byte, 32)
		_, _ = rand.Read(random) // never fails (crypto/rand)
		material = func(context.Context) ([]byte, error) { return random, nil }
	}
	return func(ctx context.Context) (consentKeys, error) {
		m, err := material(ctx)
		if err != nil {
			return consentKeys{}, err
		}
		return consentKeys{state: consent.StateKey(m), ticket: consent.TicketKey(m)}, nil
	}
}

// hostRoutes are the two functions' routes. The host tries consent-callback
// first (function names sort so), which is what makes /api/consent/callback
// the callback and not the start of a connection named "callback".
func (cr *consentRoutes) hostRoutes() []hostRoute {
	return []hostRoute{
		{function: "consent-start", template: "consent/{connection}", methods: []string{http.MethodGet}, handler: http.HandlerFunc(cr.start)},
		{function: "consent-callback", template: "consent/callback", methods: []string{http.MethodGet}, handler: http.HandlerFunc(cr.callback)},
	}
}

// register serves the consent routes alone on mux, as the server does.
func (cr *consentRoutes) register(mux *http.ServeMux) {
	mux.Handle("/", newHostRouter(handleNotFound(), cr.hostRoutes()...))
}

// cookieName is the cookie that binds a connection's pending authorization
// to the browser that started it; one per connection, so two consents in
// one browser do not disturb each other.
func cookieName(connection string) string { return "tokenrefresher-consent-" + connection }

// start redirects the operator's browser to the provider's consent page.
// ?scope= adds scopes to the connection's.
func (cr *consentRoutes) start(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("connection")
	c, ok := cr.b.Connection(name)
	if !ok {
		encodeError(w, unknownConnection(name))
		return
	}
	if err := authorize(c, r, cr.authEnabled); err != nil {
		encodeError(w, err)
		return
	}
	if cr.needTicket {
		if err := cr.checkTicket(r, name); err != nil {
			encodeError(w, err)
			return
		}
	}
	if c.Grant != broker.GrantRefreshToken {
		encodeError(w, &broker.Error{Code: broker.CodeBadRequest, Connection: name,
			Message:     fmt.Sprintf("connection %q uses the %s grant, which needs no consent", name, c.Grant),
			Remediation: "Only refresh_token connections are authorized by a person."})
		return
	}
	cb, ok := cr.b.(ConsentBroker)
	if !ok {
		notImplemented(w, name)
		return
	}
	store := cb.Store()
	authURL, err := cr.authorizationURL(c)
	if err != nil {
		encodeError(w, &broker.Error{Code: broker.CodeBadRequest, Connection: name, Message: err.Error(),
			Remediation: "Run `handler connect " + name + " -authorization-url URL` from a workstation instead, with the provider's authorization endpoint."})
		return
	}
	extra, _, qerr := queryValue(r.URL.Query(), "scope")
	if qerr != nil {
		qerr.Connection = name
		qerr.Remediation = "Pass every extra scope in one parameter, separated by spaces: ?scope=a%20b."
		encodeError(w, qerr)
		return
	}
	scopes, err := consent.Scopes(c, extra)
	if err != nil {
		encodeError(w, &broker.Error{Code: broker.CodeBadRequest, Connection: name, Message: err.Error(),
			Remediation: "Pass scopes as ?scope=a%20b."})
		return
	}
	redirect, secure, err := callbackURL(r, cr.forwardedByHost)
	if err != nil {
		encodeError(w, &broker.Error{Code: broker.CodeBadRequest, Connection: name, Message: err.Error(),
			Remediation: "Call this route on the function app's own host name."})
		return
	}
	ctx := r.Context()
	keys, err := cr.keys(ctx)
	if err != nil {
		encodeError(w, consentError(name, err))
		return
	}
	clientID, clientSecret, err := consent.ClientCredentials(ctx, store, c)
	if err != nil {
		encodeError(w, consentError(name, err))
		return
	}
	p := consent.NewSignedPending(keys.state, name, redirect, cr.now())
	flow := consent.Flow{Connection: c, AuthorizationURL: authURL, RedirectURL: redirect, ClientID: clientID, ClientSecret: clientSecret, Scopes: scopes}
	location, err := flow.AuthCodeURL(p.State, p.Verifier)
	if err != nil {
		encodeError(w, &broker.Error{Code: broker.CodeBadRequest, Connection: name, Message: err.Error(),
			Remediation: "Fix the connection in the connections file."})
		return
	}
	if err := (&consent.PendingStore{Store: store, Now: cr.now}).Put(ctx, p); err != nil {
		encodeError(w, consentError(name, err))
		return
	}
	// #nosec G124 -- Secure is false only on plain-http loopback (standalone on a workstation), where a Secure cookie would never come back
	http.SetCookie(w, &http.Cookie{
		Name: cookieName(name), Value: p.State, Path: callbackPath,
		MaxAge: int(consent.PendingTTL / time.Second), HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode,
	})
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	cr.log.Info("consent started; the operator is sent to the provider", "event", "consent.started", "connection", name, "redirect_uri", redirect)
	http.Redirect(w, r, location, http.StatusFound)
}

// callback finishes an authorization: it claims the pending authorization
// the state names, exchanges the code and stores the tokens.
//
// It is anonymous, so everything before the store is read costs nothing
// and tells nothing: the client's rate is bounded first, then the state's
// signature, connection and expiry are checked (consent.VerifyState, no
// I/O beyond the signing key, read once per process), then the browser's
// cookie. Only a state that passes all of them reaches the store, where
// claiming it makes it single-use. Every refusal of a state, from a forged
// one to a replayed one, gets the same answer (refuseState), so the
// answers do not tell which connections exist or have a consent under way.
func (cr *consentRoutes) callback(w http.ResponseWriter, r *http.Request) {
	if ok, retry := cr.limit.allow(clientAddress(r, cr.forwardedByHost), cr.now()); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int((retry+time.Second-1)/time.Second)))
		cr.refuse(w, r, http.StatusTooManyRequests, string(broker.CodeTooManyRequests), "", "Too many attempts",
			"too many consent callbacks came from this address", "Wait a minute, then start again at /api/consent/{connection}.")
		return
	}
	q := r.URL.Query()
	state := q.Get("state")
	if len(q["state"]) != 1 {
		cr.refuseState(w, r, "", "the redirect carries no state, or more than one")
		return
	}
	name, ok := consent.ConnectionOfState(state)
	var c broker.Connection
	if ok {
		c, ok = cr.b.Connection(name)
	}
	if !ok {
		cr.refuseState(w, r, "", "the state names no connection of this app")
		return
	}
	cookie, err := r.Cookie(cookieName(name))
	if err != nil || subtle.ConstantTimeCompare([]byte(cookie.Value), []byte(state)) != 1 {
		// Nothing is claimed: the browser that started the consent can
		// still finish it.
		cr.refuseState(w, r, name, "the browser does not carry the cookie the start set (another browser, or not started here)")
		return
	}
	keys, err := cr.keys(r.Context())
	if err != nil {
		cr.refuse(w, r, http.StatusServiceUnavailable, string(broker.CodeUnavailable), "", "The secret store could not be reached",
			"the key that signs consent states could not be read", "Start again in a minute.")
		return
	}
	if _, err := consent.VerifyState(keys.state, state, cr.now()); err != nil {
		cr.refuseState(w, r, name, err.Error())
		return
	}
	restart := fmt.Sprintf("Start again at /api/consent/%s with the admin key.", name)
	cb, ok := cr.b.(ConsentBroker)
	if !ok {
		cr.refuse(w, r, http.StatusNotImplemented, "not_implemented", name, "Consent is not available", notImplementedMessage, "Use `handler connect "+name+"` from a workstation.")
		return
	}
	_, secure, _ := callbackURL(r, cr.forwardedByHost)
	// #nosec G124 -- Secure is false only on plain-http loopback, as where the cookie was set
	http.SetCookie(w, &http.Cookie{Name: cookieName(name), Value: "", Path: callbackPath, MaxAge: -1, HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode})

	store := cb.Store()
	p, err := (&consent.PendingStore{Store: store, Now: cr.now}).Claim(r.Context(), state)
	var se *consent.StateError
	switch {
	case errors.As(err, &se):
		cr.refuseState(w, r, name, se.Err.Error())
		return
	case err != nil:
		cr.refuse(w, r, http.StatusServiceUnavailable, string(broker.CodeUnavailable), name, "The secret store could not be reached", err.Error(), restart)
		return
	}
	code, err := consent.ParseCallback(q, p.State)
	if err != nil {
		errCode, remedy := "invalid_callback", restart
		var ce *consent.CallbackError
		if errors.As(err, &ce) {
			errCode, remedy = "consent_refused", ce.Remediation()
		}
		cr.refuse(w, r, http.StatusBadRequest, errCode, name, "Connection "+name+" was not re-authorized", err.Error(), remedy)
		return
	}

	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), exchangeTimeout)
	defer cancel()
	clientID, clientSecret, err := consent.ClientCredentials(ctx, store, c)
	if err != nil {
		e := consentError(name, err)
		cr.refuse(w, r, statusOf(e.Code), string(e.Code), name, "Connection "+name+" was not re-authorized", e.Message, e.Remediation)
		return
	}
	flow := consent.Flow{Connection: c, RedirectURL: p.RedirectURL, ClientID: clientID, ClientSecret: clientSecret, HTTPClient: cr.client, Now: cr.now}
	tok, err := flow.Exchange(ctx, code, p.Verifier)
	if err != nil {
		remedy := restart
		var ee *consent.ExchangeError
		if errors.As(err, &ee) {
			remedy = ee.Remediation()
		}
		cr.refuse(w, r, http.StatusBadGateway, "exchange_failed", name, "Connection "+name+" was not re-authorized", err.Error(), remedy)
		return
	}
	if err := consent.Save(ctx, store, c, tok); err != nil {
		cr.refuse(w, r, http.StatusServiceUnavailable, string(broker.CodeUnavailable), name, "The new tokens of "+name+" could not be stored", err.Error(), restart)
		return
	}
	cr.log.Info("connection re-authorized", "event", "consent.completed", "connection", name,
		"expires_on", tok.Expiry.UTC().Format(time.RFC3339))
	msg := fmt.Sprintf("the new refresh token is stored in secret %q, and every instance uses it from the next call; "+
		"the connection's status shows the old failure until its next refresh", c.Secrets.RefreshToken)
	if !acceptsHTML(r) {
		w.Header().Set("Cache-Control", "no-store")
		encode(w, http.StatusOK, consentResult{Connection: name, Message: msg})
		return
	}
	consent.WritePage(w, http.StatusOK, consent.Page{Title: "Connection " + name + " re-authorized", Message: capitalize(msg) + ".", Remediation: "You can close this tab."})
}

// consentResult is the callback's success for a client that is not a
// browser.
type consentResult struct {
	Connection string `json:"connection"`
	Message    string `json:"message"`
}

// refuse logs a callback that stored nothing and says why: a page for a
// browser, the surface's JSON error for anything else.
func (cr *consentRoutes) refuse(w http.ResponseWriter, r *http.Request, status int, code, connection, title, message, remediation string) {
	cr.log.Warn("consent not completed", "event", "consent.failed", "connection", connection, "status", status, "error", code, "message", message)
	if !acceptsHTML(r) {
		w.Header().Set("Cache-Control", "no-store")
		encode(w, status, errorBody{Error: code, Message: message, Remediation: remediation, Connection: connection})
		return
	}
	consent.WritePage(w, status, consent.Page{Title: title, Message: capitalize(message) + ".", Remediation: remediation})
}

// refuseState is the one answer to every state the callback cannot
// accept: forged, expired, unknown, used, superseded, or from another
// browser. Only the log line says which (why), with the connection the
// state names.
func (cr *consentRoutes) refuseState(w http.ResponseWriter, r *http.Request, connection, why string) {
	cr.log.Warn("consent not completed", "event", "consent.failed", "connection", connection, "status", http.StatusBadRequest,
		"error", "invalid_state", "message", why)
	const (
		title       = "This consent link is not valid"
		message     = "the provider's redirect does not carry a consent under way in this browser: it was not started here, has expired or was already used"
		remediation = "Start again at /api/consent/{connection} with the admin key, in this browser."
	)
	if !acceptsHTML(r) {
		w.Header().Set("Cache-Control", "no-store")
		encode(w, http.StatusBadRequest, errorBody{Error: "invalid_state", Message: message, Remediation: remediation})
		return
	}
	consent.WritePage(w, http.StatusBadRequest, consent.Page{Title: title, Message: capitalize(message) + ".", Remediation: remediation})
}

// checkTicket is the start route's guard in standalone mode, where nothing
// but the loopback interface stands between the route and any web page the
// operator's browser shows: a page could navigate the browser here and
// start a consent. The start needs a one-time ticket that only the
// operator has: `handler consent-link` signs one with the key in the
// store and prints the address with it.
func (cr *consentRoutes) checkTicket(r *http.Request, name string) *broker.Error {
	remedy := "Run `handler consent-link " + name + "` on this machine and open the address it prints (a ticket is good once, for " +
		consent.TicketTTL.String() + "), or use `handler connect " + name + "`."
	ticket, present, qerr := queryValue(r.URL.Query(), "ticket")
	if qerr != nil || !present {
		return &broker.Error{Code: broker.CodeForbidden, Connection: name, Remediation: remedy,
			Message: "in standalone mode a consent starts only from a one-time address printed by handler consent-link, so that no web page can start one"}
	}
	keys, err := cr.keys(r.Context())
	if err != nil {
		return consentError(name, err)
	}
	now := cr.now()
	got, err := consent.VerifyState(keys.ticket, ticket, now)
	if err != nil || got != name || !cr.tickets.use(ticket, now) {
		return &broker.Error{Code: broker.CodeForbidden, Connection: name, Remediation: remedy,
			Message: "the ticket is not valid for this connection, has expired or was already used"}
	}
	return nil
}

// acceptsHTML reports whether the client is a browser, which asks for
// text/html; programs get JSON like everywhere else on this surface.
func acceptsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// consentError maps the store's answers about the client credentials to
// the surface's errors: a missing one is a 424 like the token route's, a
// store failure a 503.
func consentError(name string, err error) *broker.Error {
	var me *consent.MissingSecretError
	if errors.As(err, &me) {
		return &broker.Error{Code: broker.CodeRejected, Connection: name, Message: me.Error(), Remediation: me.Remediation()}
	}
	return &broker.Error{Code: broker.CodeUnavailable, Connection: name, Message: err.Error(), RetryAfter: 10 * time.Second,
		Remediation: "Check that the secret store is reachable and that the app may read and write its secrets; then start again."}
}

const notImplementedMessage = "this build's broker does not expose its secret store, which the consent flow needs"

func notImplemented(w http.ResponseWriter, name string) {
	w.Header().Set("Cache-Control", "no-store")
	encode(w, http.StatusNotImplemented, errorBody{
		Error:       "not_implemented",
		Message:     notImplementedMessage,
		Remediation: "Use `handler connect " + name + "` from a workstation.",
		Connection:  name,
	})
}

// callbackURL is the redirect URI on the host the operator called, which
// behind the Functions host is the app's public host name: https, except on
// a loopback host (standalone on a workstation, or `func start`), where it
// is the request's own scheme. secure reports https.
//
// A request the host proxied (enableProxyingHttpRequest) carries Host
// 127.0.0.1:<port>, the destination YARP's HttpTransformer.Default sends
// to, and the public host in X-Forwarded-Host; with forwardedByHost that
// header is used, its last value (YARP's default action replaces the
// header; were it appended, the host's own value would be the last). A
// forwarded request (enableForwardingHttpRequest) keeps the original Host,
// which is not a loopback address, so X-Forwarded-Host is not read then.
func callbackURL(r *http.Request, forwardedByHost bool) (uri string, secure bool, err error) {
	host := r.Host
	if forwardedByHost && isLoopbackHost(host) {
		if fwd := lastForwardedHost(r.Header.Values("X-Forwarded-Host")); fwd != "" {
			host = fwd
		}
	}
	u, err := url.Parse("//" + host)
	if err != nil || host == "" || u.Host != host || u.User != nil || u.Path != "" {
		return "", false, fmt.Errorf("the request's host %q cannot make a redirect URI", truncate(host, 100))
	}
	scheme := "https"
	if r.TLS == nil && isLoopbackHost(host) {
		scheme = "http"
	}
	return scheme + "://" + host + callbackPath, scheme == "https", nil
}

// isLoopbackHost reports whether a Host value names this machine.
func isLoopbackHost(host string) bool {
	u, err := url.Parse("//" + host)
	if err != nil {
		return false
	}
	return broker.LoopbackHost(u.Hostname())
}

// lastForwardedHost is the last element of the X-Forwarded-Host values.
func lastForwardedHost(values []string) string {
	if len(values) == 0 {
		return ""
	}
	last := values[len(values)-1]
	if i := strings.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	return strings.TrimSpace(last)
}
