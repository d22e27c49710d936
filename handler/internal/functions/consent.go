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
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
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

// consentRoutes are a connection's consent (its first, or after its grant
// died with invalid_grant): the authorization code grant with PKCE,
// through the function app, completed by whoever an operator sends a
// consent link to.
//
//	POST /api/connections/{connection}/consent-link  admin key: mints a one-time, expiring link
//	GET|POST /api/consent/{connection}?ticket=       the link (anonymous): a page, then the provider's consent page
//	GET /api/consent/callback                        anonymous: the provider's redirect back
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
	// signer and federated make the exchange's client assertion
	// (Options.AssertionSigner, Options.FederatedToken).
	signer    oauth.Signer
	federated oauth.FederatedToken
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
	// needTicket: the start route needs a consent link (checkLink). The
	// server always sets it; tests of the steps after the link turn it
	// off. tickets are the links used in this process, where no locker is
	// shared (locker nil).
	needTicket bool
	tickets    *usedTickets
	// locker makes a link single-use across instances (consent.LinkStore).
	locker broker.Locker
	// statuses is the status routes' cache, dropped after a consent so
	// that the new state shows at once.
	statuses *statusCache
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
		needTicket: true, tickets: &usedTickets{}, locker: o.ConsentLocker, statuses: o.statuses,
		signer: o.AssertionSigner, federated: o.FederatedToken}
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
		{function: "consent-start", template: "consent/{connection}", methods: []string{http.MethodGet, http.MethodPost}, handler: http.HandlerFunc(cr.start)},
		{function: "consent-callback", template: "consent/callback", methods: []string{http.MethodGet}, handler: http.HandlerFunc(cr.callback)},
		{function: "consent-link", template: "connections/{connection}/consent-link", methods: []string{http.MethodPost}, handler: http.HandlerFunc(cr.mint)},
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

// start begins a consent of the connection the path names, for whoever
// holds a consent link of it (?ticket=, see consent.SignLink): the
// business owner who can sign in at the provider, mailed the link by an
// operator (the consent-link route, or `handler consent-link`). The route
// takes no function key (consent-start's authLevel is anonymous): the
// link is the only credential, and it opens this one consent and nothing
// else. ?scope= adds scopes to the connection's.
//
//   - GET checks the link (signature, connection, expiry; no I/O but the
//     key, read once) and everything a consent needs, then shows a page
//     that says what is about to happen, with a button; a program
//     (Accept without text/html) gets the same as JSON. Nothing is used
//     up: a mail scanner that opens the link does not spend it.
//   - POST (the button) claims the link, once across every instance
//     (consent.LinkStore), and redirects the browser to the provider's
//     consent page with state and PKCE.
//
// allowedCallers is not checked here: it names the identities that may
// fetch tokens, and the person consenting is none of them; the link is the
// authorization, minted by someone holding the admin key or the store.
func (cr *consentRoutes) start(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("connection")
	c, ok := cr.b.Connection(name)
	if !ok {
		cr.fail(w, r, unknownConnection(name))
		return
	}
	var link consentLink
	if cr.needTicket {
		var lerr *broker.Error
		if link, lerr = cr.checkLink(r, name); lerr != nil {
			cr.fail(w, r, lerr)
			return
		}
	} else if err := authorize(c, r, cr.authEnabled); err != nil {
		cr.fail(w, r, err)
		return
	}
	if c.Grant != broker.GrantRefreshToken {
		cr.fail(w, r, &broker.Error{Code: broker.CodeBadRequest, Connection: name,
			Message:     fmt.Sprintf("connection %q uses the %s grant, which needs no consent", name, c.Grant),
			Remediation: "Only refresh_token connections are authorized by a person."})
		return
	}
	cb, ok := cr.b.(ConsentBroker)
	if !ok {
		cr.fail(w, r, &broker.Error{Code: "not_implemented", Connection: name, Message: notImplementedMessage,
			Remediation: "Use `handler connect " + name + "` from a workstation."})
		return
	}
	store := cb.Store()
	authURL, err := cr.authorizationURL(c)
	if err != nil {
		cr.fail(w, r, &broker.Error{Code: broker.CodeBadRequest, Connection: name, Message: err.Error(),
			Remediation: "Give the connection its provider's authorization endpoint (\"authorizationUrl\" in the connections file), or run `handler connect " + name + " -authorization-url URL` from a workstation."})
		return
	}
	extra, _, qerr := queryValue(r.URL.Query(), "scope")
	if qerr != nil {
		qerr.Connection = name
		qerr.Remediation = "Pass every extra scope in one parameter, separated by spaces: ?scope=a%20b."
		cr.fail(w, r, qerr)
		return
	}
	scopes, err := consent.Scopes(c, extra)
	if err != nil {
		cr.fail(w, r, &broker.Error{Code: broker.CodeBadRequest, Connection: name, Message: err.Error(),
			Remediation: "Pass scopes as ?scope=a%20b."})
		return
	}
	redirect, secure, err := callbackURL(r, cr.forwardedByHost)
	if err != nil {
		cr.fail(w, r, &broker.Error{Code: broker.CodeBadRequest, Connection: name, Message: err.Error(),
			Remediation: "Call this route on the function app's own host name."})
		return
	}
	ctx := r.Context()
	keys, err := cr.keys(ctx)
	if err != nil {
		cr.fail(w, r, consentError(name, err))
		return
	}
	clientID, clientSecret, err := consent.ClientCredentials(ctx, store, c)
	if err != nil {
		cr.fail(w, r, consentError(name, err))
		return
	}
	flow := consent.Flow{Connection: c, AuthorizationURL: authURL, RedirectURL: redirect, ClientID: clientID, ClientSecret: clientSecret, Scopes: scopes}
	if _, err := flow.AuthCodeURL("check", consent.NewVerifier()); err != nil {
		cr.fail(w, r, &broker.Error{Code: broker.CodeBadRequest, Connection: name, Message: err.Error(),
			Remediation: "Fix the connection in the connections file."})
		return
	}
	if cr.needTicket && r.Method != http.MethodPost {
		cr.confirm(w, r, c, link, scopes)
		return
	}
	if cr.needTicket {
		if err := cr.claim(ctx, store, name, link); err != nil {
			cr.fail(w, r, err)
			return
		}
	}
	location, err := cr.begin(w, ctx, store, keys, flow, false, secure)
	if err != nil {
		cr.fail(w, r, consentError(name, err))
		return
	}
	cr.log.Info("consent started; the browser is sent to the provider", "event", "consent.started", "connection", name, "redirect_uri", redirect,
		"link", cr.needTicket)
	status := http.StatusFound
	if r.Method == http.MethodPost {
		status = http.StatusSeeOther // the provider's page is a GET
	}
	http.Redirect(w, r, location, status)
}

// begin records a pending authorization of flow's connection (the
// standby's when standby) and binds it to the browser with a cookie; it
// returns the provider's consent page to send the browser to.
func (cr *consentRoutes) begin(w http.ResponseWriter, ctx context.Context, store broker.SecretStore, keys consentKeys, flow consent.Flow, standby, secure bool) (string, error) {
	name := flow.Connection.Name
	p := consent.NewSignedPending(keys.state, name, flow.RedirectURL, cr.now())
	p.Standby, p.Scopes = standby, flow.Scopes
	location, err := flow.AuthCodeURL(p.State, p.Verifier)
	if err != nil {
		return "", err
	}
	if err := (&consent.PendingStore{Store: store, Now: cr.now}).Put(ctx, p); err != nil {
		return "", err
	}
	// #nosec G124 -- Secure is false only on plain-http loopback (standalone on a workstation), where a Secure cookie would never come back
	http.SetCookie(w, &http.Cookie{
		Name: cookieName(name), Value: p.State, Path: callbackPath,
		MaxAge: int(consent.PendingTTL / time.Second), HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode,
	})
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	return location, nil
}

// consentLink is a checked link: its ticket and when it expires.
type consentLink struct {
	ticket string
	expiry time.Time
}

// linkStart is what a consent link's GET answers a program with.
type linkStart struct {
	Connection string    `json:"connection"`
	Provider   string    `json:"provider"`
	Scopes     []string  `json:"scopes"`
	ExpiresOn  time.Time `json:"linkExpiresOn"`
	Message    string    `json:"message"`
}

// confirm is a valid link's GET: what will happen, and the button that
// makes it happen.
func (cr *consentRoutes) confirm(w http.ResponseWriter, r *http.Request, c broker.Connection, link consentLink, scopes []string) {
	provider := providerTitle(c)
	msg := fmt.Sprintf("this link lets you authorize tokenrefresher to reach %s for connection %q, with the scopes %s. "+
		"You will sign in at %s itself; tokenrefresher never sees your password. The link works once, until %s",
		provider, c.Name, strings.Join(scopes, " "), provider, link.expiry.UTC().Format(time.RFC1123))
	w.Header().Set("Cache-Control", "no-store")
	if !acceptsHTML(r) {
		encode(w, http.StatusOK, linkStart{Connection: c.Name, Provider: c.Provider, Scopes: scopes, ExpiresOn: link.expiry,
			Message: capitalize(msg) + ". POST to this address to start."})
		return
	}
	consent.WritePage(w, http.StatusOK, consent.Page{Title: "Authorize " + provider + " for connection " + c.Name, Message: capitalize(msg) + ".",
		Remediation: "Sign in as the " + provider + " user whose data the connection reads.",
		Action:      &consent.PageAction{Label: "Continue to " + provider, Post: true}})
}

// providerTitle is the provider's name for people.
func providerTitle(c broker.Connection) string {
	if p, ok := config.LookupPreset(c.Provider); ok && p.Title != "" && c.Provider != "generic" {
		return p.Title
	}
	return "the provider"
}

// checkLink checks the start's ticket: signed under the ticket key, for
// this connection, unexpired. It reads nothing but the key.
func (cr *consentRoutes) checkLink(r *http.Request, name string) (consentLink, *broker.Error) {
	remedy := "Ask the operator for a new consent link (`handler consent-link " + name + "`, or POST /api/connections/" + name + "/consent-link with the admin key); a link works once, until it expires."
	ticket, present, qerr := queryValue(r.URL.Query(), "ticket")
	if qerr != nil || !present {
		return consentLink{}, &broker.Error{Code: broker.CodeForbidden, Connection: name, Remediation: remedy,
			Message: "a consent starts only from a consent link, which carries a one-time ticket; this address has none"}
	}
	keys, err := cr.keys(r.Context())
	if err != nil {
		return consentLink{}, consentError(name, err)
	}
	got, expiry, err := consent.VerifyLink(keys.ticket, ticket, cr.now())
	if err != nil || got != name {
		return consentLink{}, &broker.Error{Code: broker.CodeForbidden, Connection: name, Remediation: remedy,
			Message: "the consent link is not valid for this connection, or has expired"}
	}
	return consentLink{ticket: ticket, expiry: expiry}, nil
}

// claim uses the link up: once across every instance where a locker is
// shared (consent.LinkStore), else once in this process.
func (cr *consentRoutes) claim(ctx context.Context, store broker.SecretStore, name string, link consentLink) *broker.Error {
	used := &broker.Error{Code: broker.CodeForbidden, Connection: name,
		Message:     "this consent link was already used",
		Remediation: "Ask the operator for a new consent link; each one starts one consent."}
	if cr.locker == nil {
		if !cr.tickets.use(link.ticket, link.expiry, cr.now()) {
			return used
		}
		return nil
	}
	err := (&consent.LinkStore{Store: store, Locker: cr.locker, Now: cr.now}).Claim(ctx, name, link.ticket, link.expiry)
	switch {
	case errors.Is(err, consent.ErrLinkUsed):
		return used
	case err != nil:
		cr.log.Warn("could not claim a consent link", "event", "consent.link_unavailable", "connection", name, "error", err.Error())
		return &broker.Error{Code: broker.CodeUnavailable, Connection: name, RetryAfter: 10 * time.Second,
			Message:     "the record of used consent links could not be read or written, so the link was not used",
			Remediation: "Try the same link again in a minute."}
	}
	return nil
}

// fail answers a start that cannot go on: a page for a browser, the
// surface's JSON error for anything else.
func (cr *consentRoutes) fail(w http.ResponseWriter, r *http.Request, e *broker.Error) {
	status := statusOf(e.Code)
	if e.Code == "not_implemented" {
		status = http.StatusNotImplemented
	}
	if !acceptsHTML(r) {
		if status != http.StatusNotImplemented {
			encodeError(w, e)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		encode(w, status, errorBody{Error: string(e.Code), Message: e.Message, Remediation: e.Remediation, Connection: e.Connection})
		return
	}
	if e.RetryAfter > 0 && status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	title := "The consent of connection " + e.Connection + " cannot start"
	if e.Connection == "" {
		title = "The consent cannot start"
	}
	consent.WritePage(w, status, consent.Page{Title: title, Message: capitalize(e.Message) + ".", Remediation: e.Remediation})
}

// consentLinkResponse is the consent-link route's answer.
type consentLinkResponse struct {
	Connection string    `json:"connection"`
	URL        string    `json:"url"`
	ExpiresOn  time.Time `json:"expiresOn"`
	// RedirectURI is the callback the provider must have registered.
	RedirectURI string `json:"redirectUri"`
	Message     string `json:"message"`
}

// mint is POST /api/connections/{connection}/consent-link: a consent link
// of the connection, for an operator to mail to whoever can sign in at the
// provider. Its function (functions/consent-link) takes the admin key, like
// force-refresh; ?expires= (a Go duration, default 24h, at most 7 days)
// sets its life.
func (cr *consentRoutes) mint(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("connection")
	c, ok := cr.b.Connection(name)
	if !ok {
		encodeError(w, unknownConnection(name))
		return
	}
	if c.Grant != broker.GrantRefreshToken {
		encodeError(w, &broker.Error{Code: broker.CodeBadRequest, Connection: name,
			Message:     fmt.Sprintf("connection %q uses the %s grant, which needs no consent", name, c.Grant),
			Remediation: "Only refresh_token connections are authorized by a person."})
		return
	}
	ttl := consent.DefaultLinkTTL
	if v, present, qerr := queryValue(r.URL.Query(), "expires"); qerr != nil {
		qerr.Connection = name
		encodeError(w, qerr)
		return
	} else if present {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > consent.MaxLinkTTL {
			encodeError(w, &broker.Error{Code: broker.CodeBadRequest, Connection: name,
				Message:     fmt.Sprintf("expires=%q is not a duration of more than 0 and at most %s", truncate(v, 32), consent.MaxLinkTTL),
				Remediation: "Pass ?expires=24h, or leave it out for 24 hours."})
			return
		}
		ttl = d
	}
	redirect, _, err := callbackURL(r, cr.forwardedByHost)
	if err != nil {
		encodeError(w, &broker.Error{Code: broker.CodeBadRequest, Connection: name, Message: err.Error(),
			Remediation: "Call this route on the function app's own host name."})
		return
	}
	keys, err := cr.keys(r.Context())
	if err != nil {
		encodeError(w, consentError(name, err))
		return
	}
	ticket, expiry, err := consent.SignLink(keys.ticket, name, cr.now(), ttl)
	if err != nil {
		encodeError(w, &broker.Error{Code: broker.CodeBadRequest, Connection: name, Message: err.Error()})
		return
	}
	base := strings.TrimSuffix(redirect, callbackPath)
	cr.log.Info("consent link minted", "event", "consent.link_minted", "connection", name, "expires_on", expiry.UTC().Format(time.RFC3339))
	w.Header().Set("Cache-Control", "no-store")
	encode(w, http.StatusOK, consentLinkResponse{Connection: name, URL: ConsentLinkURL(base, name, ticket), ExpiresOn: expiry, RedirectURI: redirect,
		Message: "Send this address to the person who can sign in at the provider; it starts one consent of " + name + ", and opens nothing else."})
}

// ConsentLinkURL is the address of a consent link: base (scheme and host)
// with the start route and the ticket.
func ConsentLinkURL(base, connection, ticket string) string {
	return base + "/" + routePrefix + "/consent/" + connection + "?ticket=" + url.QueryEscape(ticket)
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
			"too many consent callbacks came from this address", "Wait a minute, then start again from a new consent link.")
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
	restart := "Ask the operator for a new consent link of " + name + ", and start again."
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
	flow := consent.Flow{Connection: c, RedirectURL: p.RedirectURL, ClientID: clientID, ClientSecret: clientSecret, HTTPClient: cr.client, Now: cr.now,
		Signer: cr.signer, Federated: cr.federated}
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
	if err := cr.save(ctx, store, c, tok, p.Standby); err != nil {
		cr.refuse(w, r, http.StatusServiceUnavailable, string(broker.CodeUnavailable), name, "The new tokens of "+name+" could not be stored", err.Error(), restart)
		return
	}
	if cr.statuses != nil {
		cr.statuses.invalidate()
	}
	if p.Standby {
		cr.log.Info("standby grant authorized", "event", "consent.standby_completed", "connection", name)
		cr.succeed(w, r, consentResult{Connection: name, Standby: true,
			Message: fmt.Sprintf("the second authorization for the standby grant is stored in secret %q: a second, independent grant that replaces the first if the provider ever revokes it", c.Secrets.StandbyRefreshToken)},
			"Connection "+name+": standby grant authorized", nil)
		return
	}
	cr.log.Info("connection re-authorized", "event", "consent.completed", "connection", name,
		"expires_on", tok.Expiry.UTC().Format(time.RFC3339))
	res := consentResult{Connection: name, ExpiresOn: tok.Expiry,
		Message: fmt.Sprintf("the new refresh token is stored in secret %q, and every instance uses it from the next call; "+
			"the access token is valid until %s", c.Secrets.RefreshToken, tok.Expiry.UTC().Format(time.RFC1123))}
	if !c.Standby {
		cr.succeed(w, r, res, "Connection "+name+" re-authorized", nil)
		return
	}
	// The connection keeps a standby grant: a second authorization of the
	// same user and client, which needs the person once more.
	next, err := cr.beginStandby(w, ctx, store, c, p)
	if err != nil {
		res.Message += "; the second authorization for the standby grant could not be started (" + err.Error() + "): ask for a new consent link to obtain it"
		cr.succeed(w, r, res, "Connection "+name+" re-authorized", nil)
		return
	}
	res.Next = next
	res.Message += ". One more step: the second authorization for the standby grant, which keeps the connection alive if the provider ever revokes the first"
	cr.succeed(w, r, res, "Connection "+name+" re-authorized: one more step",
		&consent.PageAction{Label: "Continue to the second authorization for the standby grant", URL: next})
}

// save stores a consent's tokens: through the broker when it can
// (Consented: under the lock, clearing the failure it recorded), else
// straight into the store.
func (cr *consentRoutes) save(ctx context.Context, store broker.SecretStore, c broker.Connection, tok *broker.Token, standby bool) error {
	if cs, ok := cr.b.(consentSaver); ok {
		return cs.Consented(ctx, c.Name, tok, standby)
	}
	if standby {
		return consent.SaveStandby(ctx, store, c, tok)
	}
	return consent.Save(ctx, store, c, tok)
}

// consentSaver is the broker's Consented.
type consentSaver interface {
	Consented(ctx context.Context, name string, tok *broker.Token, standby bool) error
}

// beginStandby starts the second authorization of a connection with a
// standby grant, right after its first (p): the same redirect URI and
// scopes, a new state and verifier, and the browser's cookie moved to it.
func (cr *consentRoutes) beginStandby(w http.ResponseWriter, ctx context.Context, store broker.SecretStore, c broker.Connection, p consent.Pending) (string, error) {
	authURL, err := cr.authorizationURL(c)
	if err != nil {
		return "", err
	}
	keys, err := cr.keys(ctx)
	if err != nil {
		return "", err
	}
	clientID, clientSecret, err := consent.ClientCredentials(ctx, store, c)
	if err != nil {
		return "", err
	}
	secure := strings.HasPrefix(p.RedirectURL, "https://")
	flow := consent.Flow{Connection: c, AuthorizationURL: authURL, RedirectURL: p.RedirectURL, ClientID: clientID, ClientSecret: clientSecret, Scopes: p.Scopes}
	return cr.begin(w, ctx, store, keys, flow, true, secure)
}

// succeed answers a completed callback: a page (with the next step, if
// any) for a browser, JSON for a program.
func (cr *consentRoutes) succeed(w http.ResponseWriter, r *http.Request, res consentResult, title string, next *consent.PageAction) {
	w.Header().Set("Cache-Control", "no-store")
	if !acceptsHTML(r) {
		encode(w, http.StatusOK, res)
		return
	}
	remedy := "You can close this tab."
	if next != nil {
		remedy = "Sign in as the same user again and allow access once more."
	}
	consent.WritePage(w, http.StatusOK, consent.Page{Title: title, Message: capitalize(res.Message) + ".", Remediation: remedy, Action: next})
}

// consentResult is the callback's success for a client that is not a
// browser.
type consentResult struct {
	Connection string `json:"connection"`
	Message    string `json:"message"`
	// ExpiresOn is the new access token's expiry.
	ExpiresOn time.Time `json:"accessTokenExpiresOn,omitzero"`
	// Standby: the standby grant was stored.
	Standby bool `json:"standby,omitempty"`
	// Next is the provider's consent page of the standby grant's
	// authorization, which the person opens next.
	Next string `json:"next,omitempty"`
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
		remediation = "Ask the operator for a new consent link and start again, in this browser."
	)
	if !acceptsHTML(r) {
		w.Header().Set("Cache-Control", "no-store")
		encode(w, http.StatusBadRequest, errorBody{Error: "invalid_state", Message: message, Remediation: remediation})
		return
	}
	consent.WritePage(w, http.StatusBadRequest, consent.Page{Title: title, Message: capitalize(message) + ".", Remediation: remediation})
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
