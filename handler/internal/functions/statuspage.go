package functions

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"html"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// The status page is the status API as an operator reads it in a browser:
//
//	GET  /api/status                             the page (function status-page)
//	POST /api/status/{connection}/{action}       its buttons (function status-action):
//	                                             action "refresh" (force refresh) or
//	                                             "consent-link" (mint a consent link)
//
// Both functions take the admin key, like force-refresh and consent-link,
// whose work the buttons do. The browser carries it as ?code= on the
// page's address (the host reads a key from the "code" query parameter:
// azure-functions-host src/WebJobs.Script.WebHost/Security/Authentication/Keys/
// AuthenticationLevelHandler.cs, FunctionsKeyQueryParamName); the page's script copies its own query string onto
// the buttons' requests, so the key is never written into the page.
//
// The buttons' requests must also come from the page (statusActionAllowed):
// their Origin is the page's origin and Sec-Fetch-Site, when sent, is
// same-origin, and they carry the page's token (X-Status-Page-Token), an
// HMAC under a key derived from the consent key material, which expires
// an hour after the page was served. A key in the query string is ambient
// once a link carries it, so the token, which no other site can read,
// is what ties a POST to a page the handler served.
//
// The page is written with html.EscapeString by hand: html/template pulls
// in text/template, which handler/deps_test.go (TestBinaryDependencies)
// keeps out of the binary for its size; every value on the page, the
// provider's error text included, goes through esc.

// statusPageTokenTTL is how long a page's buttons work.
const statusPageTokenTTL = time.Hour

// statusPageTokenHeader carries the page's token on its buttons' requests.
const statusPageTokenHeader = "X-Status-Page-Token" // #nosec G101 -- a header name, not a credential

// statusPageKey derives the page's token key from the key material, as
// consent.StateKey derives the state key: a label of its own, so that no
// token of one kind passes for another.
func statusPageKey(material []byte) []byte {
	m := hmac.New(sha256.New, material)
	m.Write([]byte("tokenrefresher status page v1"))
	return m.Sum(nil)
}

// signPageToken is "<unix seconds>.<HMAC>" of the time the page was served.
func signPageToken(key []byte, issued time.Time) string {
	ts := strconv.FormatInt(issued.Unix(), 10)
	m := hmac.New(sha256.New, key)
	m.Write([]byte("status-page|" + ts))
	return ts + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// verifyPageToken reports whether token is signPageToken's under key, of a
// page served at most statusPageTokenTTL before now.
func verifyPageToken(key []byte, token string, now time.Time) bool {
	ts, _, ok := strings.Cut(token, ".")
	if !ok {
		return false
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false
	}
	issued := time.Unix(sec, 0)
	if now.Before(issued.Add(-time.Minute)) || now.Sub(issued) > statusPageTokenTTL {
		return false
	}
	return hmac.Equal([]byte(signPageToken(key, issued)), []byte(token))
}

// statusPage serves the page and its buttons.
type statusPage struct {
	b       Broker
	o       Options
	consent *consentRoutes
	key     func(context.Context) ([]byte, error)
}

func newStatusPage(b Broker, o Options, cr *consentRoutes) *statusPage {
	material := o.ConsentKey
	if material == nil {
		random := make([]byte, 32)
		_, _ = rand.Read(random) // never fails (crypto/rand)
		material = func(context.Context) ([]byte, error) { return random, nil }
	}
	return &statusPage{b: b, o: o, consent: cr, key: func(ctx context.Context) ([]byte, error) {
		m, err := material(ctx)
		if err != nil {
			return nil, err
		}
		return statusPageKey(m), nil
	}}
}

// hostRoutes are the admin-key page and the signed-in one (operator.go),
// the same page and buttons behind a different guard.
func (p *statusPage) hostRoutes() []hostRoute {
	return []hostRoute{
		{function: "status-page", template: "status", methods: []string{http.MethodGet}, handler: http.HandlerFunc(p.page)},
		{function: "status-action", template: "status/{connection}/{action}", methods: []string{http.MethodPost}, handler: http.HandlerFunc(p.action)},
		{function: "operator-status", template: "operator/status", methods: []string{http.MethodGet}, handler: signedIn(p.o, p.operatorPage)},
		{function: "operator-status-action", template: "operator/status/{connection}/{action}", methods: []string{http.MethodPost}, handler: signedIn(p.o, p.operatorAction)},
	}
}

// visibleTo is the connections the status page shows and acts on, and
// how it finds one for a button.
type visibleTo struct {
	// shows reports whether the page lists c.
	shows func(c broker.Connection, r *http.Request) bool
	// find is the connection of a button's request.
	find func(r *http.Request) (broker.Connection, *broker.Error)
}

// keyHolder is what the admin-key page sees: the connections the caller
// may see (allowedCallers, as GET /api/connections).
func (p *statusPage) keyHolder() visibleTo {
	return visibleTo{
		shows: func(c broker.Connection, r *http.Request) bool { return authorize(c, r, p.o.AuthEnabled) == nil },
		find:  func(r *http.Request) (broker.Connection, *broker.Error) { return connectionFor(p.b, r, p.o) },
	}
}

// operator is what a signed-in member of the operators' group sees: every
// connection. allowedCallers names who may take a connection's tokens,
// and the page serves none; the operator's object id is in no such list.
func (p *statusPage) operator() visibleTo {
	return visibleTo{
		shows: func(broker.Connection, *http.Request) bool { return true },
		find: func(r *http.Request) (broker.Connection, *broker.Error) {
			name := r.PathValue("connection")
			c, ok := p.b.Connection(name)
			if !ok {
				return broker.Connection{}, unknownConnection(name)
			}
			return c, nil
		},
	}
}

func (p *statusPage) page(w http.ResponseWriter, r *http.Request) { p.serve(w, r, p.keyHolder()) }

func (p *statusPage) action(w http.ResponseWriter, r *http.Request) { p.act(w, r, p.keyHolder()) }

func (p *statusPage) operatorPage(w http.ResponseWriter, r *http.Request) {
	p.serve(w, r, p.operator())
}

func (p *statusPage) operatorAction(w http.ResponseWriter, r *http.Request) {
	p.act(w, r, p.operator())
}

// readKey reads the token key, or answers 503: the key material is in the
// store, which may fail.
func (p *statusPage) readKey(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	key, err := p.key(r.Context())
	if err != nil {
		encodeError(w, &broker.Error{Code: broker.CodeUnavailable, Message: "the status page's key cannot be read: " + err.Error(),
			Remediation: "Check the handler's access to its store; GET /api/connections and the admin-key routes answer without it."})
		return nil, false
	}
	return key, true
}

// serve is the page: GET /api/status or /api/operator/status, the
// connections v shows, each with its buttons.
func (p *statusPage) serve(w http.ResponseWriter, r *http.Request, v visibleTo) {
	key, ok := p.readKey(w, r)
	if !ok {
		return
	}
	now := p.o.Now()
	var visible []broker.ConnectionStatus
	for _, st := range p.o.statuses.get(r.Context()) {
		if c, ok := p.b.Connection(st.Name); ok && v.shows(c, r) {
			visible = append(visible, st)
		}
	}
	nonceBytes := make([]byte, 16)
	_, _ = rand.Read(nonceBytes) // never fails (crypto/rand)
	nonce := base64.RawURLEncoding.EncodeToString(nonceBytes)
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+nonce+"'; style-src 'nonce-"+nonce+"'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(renderStatusPage(visible, signPageToken(key, now), nonce, now)))
}

// esc escapes s for HTML text and quoted attribute values.
func esc(s string) string { return html.EscapeString(s) }

// renderStatusPage is the page's HTML.
func renderStatusPage(list []broker.ConnectionStatus, token, nonce string, now time.Time) string {
	var b strings.Builder
	b.WriteString(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tokenrefresher status</title>`)
	b.WriteString(`<meta name="status-page-token" content="` + esc(token) + `">`)
	b.WriteString(`<style nonce="` + esc(nonce) + `">body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top;text-align:left}` +
		`.healthy{color:#060}.expiring{color:#960}.failing,.needs_reauthorization,.not_configured,.standby_used{color:#a00}</style></head><body>`)
	b.WriteString(`<h1>tokenrefresher status</h1><p id="generated">As of ` + esc(now.UTC().Format(time.RFC3339)) + `.</p>`)
	if len(list) == 0 {
		b.WriteString(`<p id="empty">No connection is visible to you.</p>`)
	} else {
		b.WriteString(`<table><thead><tr><th>Connection</th><th>State</th><th>Access token expires</th><th>Last refresh</th>` +
			`<th>Last failure</th><th>Refresh token</th><th>Client secret expires</th><th>Standby</th><th>Next</th><th>Actions</th></tr></thead><tbody>`)
		for _, st := range list {
			writeStatusRow(&b, st, now)
		}
		b.WriteString(`</tbody></table>`)
	}
	b.WriteString(`<p id="result" role="status"></p>`)
	b.WriteString(`<script nonce="` + esc(nonce) + `">` + statusPageScript + `</script></body></html>`)
	return b.String()
}

// writeStatusRow is one connection's row. Element ids carry the
// connection's name, which config limits to characters safe in an id;
// they are escaped all the same.
func writeStatusRow(b *strings.Builder, st broker.ConnectionStatus, now time.Time) {
	n := esc(st.Name)
	cell := func(field, text string) {
		b.WriteString(`<td id="` + field + `-` + n + `">` + text + `</td>`)
	}
	b.WriteString(`<tr id="row-` + n + `">`)
	b.WriteString(`<td>` + n + `<br><small>` + esc(st.Provider) + `, ` + esc(string(st.Grant)) + `</small></td>`)
	stateText := esc(string(st.State))
	if len(st.MissingSecrets) > 0 {
		stateText += `<br><small>missing: ` + esc(strings.Join(st.MissingSecrets, ", ")) + `</small>`
	}
	if st.PersistPending {
		stateText += `<br><small>refresh token awaiting the store</small>`
	}
	b.WriteString(`<td id="state-` + n + `" class="` + esc(string(st.State)) + `">` + stateText + `</td>`)
	cell("expiry", when(st.AccessTokenExpiresOn, now))
	last := when(st.LastRefresh, now)
	if st.LastRefreshBy != "" {
		last += `<br><small>by ` + esc(st.LastRefreshBy) + `</small>`
	}
	if st.LastRefreshMs > 0 {
		took := time.Duration(st.LastRefreshMs) * time.Millisecond
		last += `<br><small class="took">took ` + esc(took.String()) + `</small>`
	}
	if st.Refreshes > 0 {
		last += `<br><small>` + strconv.Itoa(st.Refreshes) + ` by this instance</small>`
	}
	cell("last-refresh", last)
	failure := "—"
	if e := st.LastError; e != nil {
		failure = `<b>` + esc(string(e.Code)) + `</b>`
		if e.Category != "" {
			failure += ` (` + esc(e.Category) + `)`
		}
		failure += `<br>` + esc(e.Message) + `<br><i>` + esc(e.Remediation) + `</i>`
		if st.Failures > 0 {
			failure += `<br><small>` + strconv.Itoa(st.Failures) + ` failures since the last success</small>`
		}
	}
	cell("failure", failure)
	rt := "—"
	if !st.RefreshTokenUpdatedOn.IsZero() {
		rt = "written " + when(st.RefreshTokenUpdatedOn, now)
	}
	if !st.RefreshTokenIdleExpiresOn.IsZero() {
		rt += `<br>idle expiry ` + when(st.RefreshTokenIdleExpiresOn, now)
	}
	cell("refresh-token", rt)
	cell("client-secret", when(st.ClientSecretExpiresOn, now))
	standby := "—"
	if st.Standby != "" {
		standby = esc(string(st.Standby))
	}
	cell("standby", standby)
	cell("next", esc(st.NextAction))
	b.WriteString(`<td><button type="button" id="refresh-` + n + `" data-connection="` + n + `" data-action="refresh">Force refresh</button>`)
	if st.Grant == broker.GrantRefreshToken {
		b.WriteString(` <button type="button" id="reconnect-` + n + `" data-connection="` + n + `" data-action="consent-link">Reconnect</button>`)
	}
	b.WriteString(`</td></tr>`)
}

// when is a time on the page: UTC, and how far from now.
func when(t, now time.Time) string {
	if t.IsZero() {
		return "—"
	}
	d := t.Sub(now).Round(time.Second)
	rel := "in " + d.String()
	if d < 0 {
		rel = (-d).String() + " ago"
	}
	return `<time datetime="` + esc(t.UTC().Format(time.RFC3339)) + `">` + esc(t.UTC().Format("2006-01-02 15:04:05Z")) + `</time> <small>(` + esc(rel) + `)</small>`
}

// statusPageScript sends the buttons' POSTs with the page's token and the
// page's own query string (the key, when it came as ?code=), and shows the
// answer: a force refresh reloads the page, a consent link is shown as a
// link. Text goes in through textContent and href only, never as markup.
const statusPageScript = `
const token = document.querySelector('meta[name="status-page-token"]').content;
const result = document.getElementById('result');
for (const button of document.querySelectorAll('button[data-action]')) {
  button.addEventListener('click', async () => {
    const c = button.dataset.connection, action = button.dataset.action;
    result.textContent = action === 'refresh' ? 'Refreshing ' + c + '…' : 'Minting a consent link for ' + c + '…';
    let resp, body;
    try {
      resp = await fetch('status/' + encodeURIComponent(c) + '/' + action + location.search,
        {method: 'POST', headers: {'X-Status-Page-Token': token}, credentials: 'same-origin'});
      body = await resp.json();
    } catch (e) { result.textContent = 'The request failed: ' + e; return; }
    if (!resp.ok) {
      result.textContent = c + ': ' + (body.message || resp.status) + (body.remediation ? ' ' + body.remediation : '');
      result.dataset.outcome = 'error';
      return;
    }
    if (action === 'refresh') { location.reload(); return; }
    result.textContent = 'Consent link for ' + c + ' (works once, until ' + body.expiresOn + '): ';
    const a = document.createElement('a');
    a.id = 'link-' + c; a.href = body.url; a.textContent = body.url;
    result.appendChild(a);
    result.dataset.outcome = 'link';
  });
}
`

// act is a button of the page: POST /api/status/{connection}/{action}
// or /api/operator/status/{connection}/{action}.
func (p *statusPage) act(w http.ResponseWriter, r *http.Request, v visibleTo) {
	key, ok := p.readKey(w, r)
	if !ok {
		return
	}
	if e := statusActionAllowed(r, key, p.o.Now(), p.o.ForwardedByHost); e != nil {
		encodeError(w, e)
		return
	}
	switch r.PathValue("action") {
	case "refresh":
		c, cerr := v.find(r)
		if cerr != nil {
			encodeError(w, cerr)
			return
		}
		st, ferr := p.b.ForceRefresh(r.Context(), c.Name)
		p.o.statuses.invalidate()
		if ferr != nil {
			encodeError(w, ferr)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		encode(w, http.StatusOK, st)
	case "consent-link":
		if _, cerr := v.find(r); cerr != nil {
			encodeError(w, cerr)
			return
		}
		p.consent.mint(w, r)
	default:
		encode(w, http.StatusNotFound, errorBody{Error: "not_found",
			Message:     "the status page has no action " + truncate(r.PathValue("action"), 32),
			Remediation: "The page's buttons post to status/{connection}/refresh and status/{connection}/consent-link."})
	}
}

// statusActionAllowed refuses a button request that does not come from a
// page this handler served: another site's Origin or Sec-Fetch-Site, no
// Origin (browsers send it on every POST from a script: Fetch standard,
// "append a request Origin header"), or a missing, forged or expired
// token.
func statusActionAllowed(r *http.Request, key []byte, now time.Time, forwardedByHost bool) *broker.Error {
	refuse := func(why string) *broker.Error {
		return &broker.Error{Code: broker.CodeForbidden, Message: why,
			Remediation: "Use the buttons of GET /api/status, reloaded within the hour, or POST /api/connections/{connection}/refresh or /consent-link with the admin key."}
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return refuse("the request comes from another site (Sec-Fetch-Site: " + truncate(site, 32) + ")")
	}
	origins := r.Header.Values("Origin")
	if len(origins) != 1 {
		return refuse("the request carries no Origin, or several: the status page's buttons send their page's")
	}
	callback, _, err := callbackURL(r, forwardedByHost)
	if err != nil || !strings.EqualFold(origins[0], strings.TrimSuffix(callback, callbackPath)) {
		return refuse("the request's Origin " + truncate(origins[0], 100) + " is not this handler's")
	}
	if !verifyPageToken(key, r.Header.Get(statusPageTokenHeader), now) {
		return refuse("the request carries no valid status page token (" + statusPageTokenHeader + "), or one more than " + statusPageTokenTTL.String() + " old")
	}
	return nil
}
