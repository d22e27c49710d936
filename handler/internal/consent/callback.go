package consent

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/diagnose"
)

// Errors of ParseCallback.
var (
	// ErrStateMismatch: the redirect's state is missing or is not the one
	// this authorization sent. The redirect answers some other request, or
	// was forged; nothing of it is used.
	ErrStateMismatch = errors.New("the state parameter does not match this authorization")
	// ErrNoCode: the redirect carries neither a code nor an error.
	ErrNoCode = errors.New("the provider's redirect carries no authorization code")
)

// CallbackError is the error a provider reported in its redirect back
// (RFC 6749 §4.1.2.1), such as access_denied when the person chose Deny.
type CallbackError struct {
	// Code is the error code, reduced to letters, digits, '_', '-' and '.'.
	Code string
	// Description is the provider's error_description, sanitised.
	Description string
}

func (e *CallbackError) Error() string {
	s := "the provider refused the authorization: " + e.Code
	if e.Description != "" {
		s += ": " + e.Description
	}
	return s
}

// Remediation says what to do about the refusal.
func (e *CallbackError) Remediation() string {
	switch e.Code {
	case "access_denied":
		return "Consent was refused at the provider. Start again and choose Allow, signed in as a user who may grant the requested scopes."
	case "invalid_scope":
		return "The provider refused the scopes asked for; check the connection's scopes and any -scope given, then start again."
	case "unauthorized_client", "invalid_request", "unsupported_response_type":
		return "Check the app registration at the provider: the redirect URI must be registered exactly as shown, and the app must be allowed the authorization code grant."
	case "server_error", "temporarily_unavailable":
		return "The provider failed; start again in a few minutes."
	}
	return "Start again; if it fails the same way, check the app registration at the provider."
}

// ParseCallback reads the provider's redirect back (RFC 6749 §4.1.2): the
// authorization code, or the *CallbackError the provider reports. The state
// is checked first, in constant time: a redirect that does not carry state
// is ErrStateMismatch, and nothing else of it is read.
func ParseCallback(q url.Values, state string) (code string, err error) {
	got := q.Get("state")
	if state == "" || got == "" || len(q["state"]) != 1 || subtle.ConstantTimeCompare([]byte(got), []byte(state)) != 1 {
		return "", ErrStateMismatch
	}
	if q.Has("error") {
		return "", &CallbackError{Code: diagnose.ErrorCode(q.Get("error")), Description: diagnose.Sanitize(q.Get("error_description"))}
	}
	code = q.Get("code")
	if code == "" || len(q["code"]) != 1 {
		return "", ErrNoCode
	}
	return code, nil
}

// Page is what the browser shows at the end of a consent. It never holds a
// token.
type Page struct {
	// Title is the headline: "Connection xero is connected".
	Title string
	// Message says what happened; Remediation what to do, if anything.
	Message     string
	Remediation string
	// Action, when set, is the one thing the page offers to do next.
	Action *PageAction
}

// PageAction is a page's button: a form posted back to the page's own
// address (Post), or a link to URL. Either way the browser goes on only
// when the person chooses to: a mail scanner that opens a link does not
// press buttons.
type PageAction struct {
	Label string
	// URL is the link's address; an http or https URL, or it is not shown.
	URL string
	// Post makes the action a form posted to the page's own address.
	Post bool
}

// pageHead and pageTail frame the page. The page is built with
// html.EscapeString rather than html/template: the template package's
// reflection keeps the linker from dropping unused methods, which cost the
// binary 3 MB for three escaped strings.
const pageHead = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%s - tokenrefresher</title>
<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;line-height:1.5}</style>
</head>
<body>
<h1 id="title">%s</h1>
<p id="message">%s</p>
`

const pageTail = `</body>
</html>
`

// WritePage writes p as a self-contained HTML page with status. The page
// loads nothing, is never cached, and sends no Referer onwards: its URL may
// hold an authorization code.
func WritePage(w http.ResponseWriter, status int, p Page) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	if p.Action != nil && p.Action.Post {
		// A form that posts back to its own address: for a POST under
		// no-referrer, browsers send "Origin: null" (Fetch, "append a
		// request Origin header",
		// https://fetch.spec.whatwg.org/#append-a-request-origin-header),
		// which a standalone handler refuses as cross-site
		// (functions.guardLocal). same-origin keeps the Referer, and so
		// the ticket in the address, on this origin alone.
		h.Set("Referrer-Policy", "same-origin")
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.WriteHeader(status)
	// Only a failed write can fail here, and then the browser is gone.
	title := html.EscapeString(p.Title)
	_, _ = fmt.Fprintf(w, pageHead, title, title, html.EscapeString(p.Message))
	if p.Remediation != "" {
		_, _ = fmt.Fprintf(w, "<p id=\"remediation\">%s</p>\n", html.EscapeString(p.Remediation))
	}
	if a := p.Action; a != nil {
		switch {
		case a.Post:
			// No action attribute: the form posts to the page's own
			// address, query and all.
			_, _ = fmt.Fprintf(w, "<form method=\"post\"><button id=\"continue\" type=\"submit\">%s</button></form>\n", html.EscapeString(a.Label))
		case strings.HasPrefix(a.URL, "https://") || strings.HasPrefix(a.URL, "http://"):
			_, _ = fmt.Fprintf(w, "<p><a id=\"continue\" href=\"%s\">%s</a></p>\n", html.EscapeString(a.URL), html.EscapeString(a.Label))
		}
	}
	_, _ = io.WriteString(w, pageTail)
}
