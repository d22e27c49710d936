package functions

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
)

// tokenResponse is what ADF reads: @activity('Get token').output.access_token.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	ExpiresOn   string `json:"expires_on"`
}

// errorBody is every error the surface returns.
type errorBody struct {
	Error       string `json:"error"`
	Message     string `json:"message"`
	Remediation string `json:"remediation,omitempty"`
	Connection  string `json:"connection,omitempty"`
	Retryable   bool   `json:"retryable"`
}

// principalHeader carries the caller's object id when App Service
// authentication is on.
const principalHeader = "X-MS-CLIENT-PRINCIPAL-ID"

// principalKey is principalHeader as net/http stores a request's header
// keys. The token route reads r.Header[principalKey] directly, as
// crossSite reads its headers: Header.Values would canonicalize the key,
// an allocation, on every call.
var principalKey = http.CanonicalHeaderKey(principalHeader)

func handleToken(b Broker, o Options) paramHandler {
	t := &tokenRoute{b: b, o: o}
	t.peek, _ = b.(Peeker)
	return t
}

// Peeker is what a Broker may offer to answer a token from memory before
// the request is prepared to wait (broker.Broker.Peek and AllowedCallers).
// Peek: the token when Token would serve it from memory at now, observed
// as Token would observe it, and false whenever Token would do anything
// else. now is when the request arrived (requestTime), so that a hit reads
// the clock once: a clock read is about 50 ns here, a tenth of a hit's own
// work. AllowedCallers: the connection's allowedCallers and whether it is
// configured, what the route checks first, without Connection's copy of
// the whole connection.
type Peeker interface {
	Peek(connection string, minValidity time.Duration, now time.Time) (broker.AccessToken, bool)
	AllowedCallers(connection string) ([]string, bool)
}

// tokenRoute is the token function. The router hands it the connection's
// name (paramHandler), so that a cache hit does not allocate a table of
// path values, and leaves its deadline to it: a token in memory is
// answered before the request's deadline is made (serveParam).
type tokenRoute struct {
	b       Broker
	peek    Peeker // nil when b cannot peek
	o       Options
	answers tokenAnswers // tokenjson.go
}

func (t *tokenRoute) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t.serveParam(w, r, r.PathValue("connection"))
}

// serveParam answers the token call. Its checks run in the order they
// always have (the name, the connection, allowedCallers, minValidity);
// then a token that Peek finds in memory is written at once. Only a call
// that may wait (a refresh, the store, the lock) gets the request's
// deadline in its context (requestDeadline, 2 allocations: it and the
// request's copy that carries it), with the same deadline it would have
// had from withDeadlines: RequestTimeout from the moment the route is
// reached.
//
// A request without a body reads no clock for it until it misses: only
// the checks above Peek lie between, microseconds, and a token in memory
// needs no deadline at all. A request with a body notes the time first,
// since reading the body (decodeMinValidity) may take as long as the
// server's body deadline (server/connguard.go, withBodyDeadline: 30 s),
// and ADF's minute counts from when it sent it.
func (t *tokenRoute) serveParam(w http.ResponseWriter, r *http.Request, name string) {
	b, o := t.b, &t.o                            // not a copy of the options per request
	limit := o.RequestTimeout > 0 && !limited(r) // else no deadline, or the caller's
	var began time.Time
	if limit && r.Body != nil && r.Body != http.NoBody {
		began = time.Now()
	}
	if !broker.ValidConnectionName(name) { // the rule config holds names to
		encodeError(w, &broker.Error{
			Code:        broker.CodeBadRequest,
			Message:     fmt.Sprintf("%q is not a valid connection name", truncate(name, 80)),
			Remediation: "Connection names are 1-63 characters of a-z, 0-9 and '-', starting with a letter.",
		})
		return
	}
	var callers []string
	var ok bool
	if t.peek != nil {
		callers, ok = t.peek.AllowedCallers(name)
	} else {
		var conn broker.Connection
		conn, ok = b.Connection(name)
		callers = conn.AllowedCallers
	}
	if !ok {
		// Let the broker phrase it, so the message is the same everywhere.
		// The set may have changed since: wait no longer than a call would.
		if limit {
			var ctx *requestDeadline
			r, ctx = t.limitedRequest(r, began)
			defer ctx.release()
		}
		_, err := b.Token(r.Context(), name, 0)
		encodeError(w, err)
		return
	}
	if err := authorizeCallers(name, callers, r, o.AuthEnabled); err != nil {
		encodeError(w, err)
		return
	}
	minValidity, err := decodeMinValidity(w, r, o.MaxBodyBytes)
	if err != nil {
		err.Connection = name
		encodeError(w, err)
		return
	}
	if t.peek != nil {
		now := requestTime(w, o.Now)
		if tok, ok := t.peek.Peek(name, minValidity, now); ok {
			writeToken(w, &t.answers, name, tok, now)
			return
		}
	}
	if limit {
		var ctx *requestDeadline
		r, ctx = t.limitedRequest(r, began)
		defer ctx.release()
	}
	tok, terr := b.Token(r.Context(), name, minValidity)
	if terr != nil {
		encodeError(w, terr)
		return
	}
	writeToken(w, &t.answers, name, tok, o.Now())
}

// limitedRequest returns r with the request's deadline in its context,
// RequestTimeout after began (after now when began is zero), and that
// context, which the caller releases when the request ends.
func (t *tokenRoute) limitedRequest(r *http.Request, began time.Time) (*http.Request, *requestDeadline) {
	if began.IsZero() {
		began = time.Now()
	}
	ctx := &requestDeadline{parent: r.Context(), deadline: began.Add(t.o.RequestTimeout)}
	return r.WithContext(ctx), ctx
}

// authorize checks the caller against the connection's allowedCallers.
// The caller is X-MS-CLIENT-PRINCIPAL-ID and nothing else: the other
// X-MS-CLIENT-PRINCIPAL-* headers (name, identity provider, the encoded
// claims) are never read, and without authEnabled none of them is, since
// then nothing stops a client from sending them itself.
func authorize(c broker.Connection, r *http.Request, authEnabled bool) *broker.Error {
	return authorizeCallers(c.Name, c.AllowedCallers, r, authEnabled)
}

// authorizeCallers is authorize for the connection named name with the
// allowedCallers callers.
func authorizeCallers(name string, callers []string, r *http.Request, authEnabled bool) *broker.Error {
	if len(callers) == 0 {
		return nil
	}
	if !authEnabled {
		return &broker.Error{
			Code:        broker.CodeForbidden,
			Connection:  name,
			Message:     "this connection is restricted to allowedCallers, but the caller cannot be identified: App Service authentication is off, or the handler runs without the Functions host in front of it",
			Remediation: "Turn on App Service authentication for the function app (see the README's deployment section), or remove allowedCallers from the connection.",
		}
	}
	ids := r.Header[principalKey]
	if len(ids) > 1 {
		// App Service sets exactly one, after removing any the client
		// sent; more than one means something in between added its own.
		return &broker.Error{
			Code:        broker.CodeForbidden,
			Connection:  name,
			Message:     fmt.Sprintf("the request carries %d %s headers, so the caller cannot be identified", len(ids), principalHeader),
			Remediation: "Call the function app through its own endpoint, with App Service authentication on; nothing in between may add " + principalHeader + ".",
		}
	}
	var caller string
	if len(ids) == 1 {
		caller = strings.TrimSpace(ids[0])
	}
	if caller == "" || !slices.ContainsFunc(callers, func(id string) bool { return strings.EqualFold(id, caller) }) {
		shown := caller
		if shown == "" {
			shown = "(none)"
		}
		return &broker.Error{
			Code:        broker.CodeForbidden,
			Connection:  name,
			Message:     fmt.Sprintf("caller %s is not in this connection's allowedCallers", truncate(shown, 64)),
			Remediation: "Add the data factory's managed identity object id to allowedCallers of this connection, or call with an identity that is listed.",
		}
	}
	return nil
}

// decodeMinValidity reads minValidity (seconds) from the query or, on POST,
// from a JSON body {"minValidity": 600}. Absent means 0: the connection's
// own refresh margin still applies.
//
// A POST must carry its body: it is the only reason to POST. One that
// arrives without a body most likely lost it on the way (forwarding drops a
// body that has no Content-Length), and serving it as if no minValidity had
// been asked would hand out a token that expires too soon.
func decodeMinValidity(w http.ResponseWriter, r *http.Request, maxBody int64) (time.Duration, *broker.Error) {
	var fromQuery, fromBody *int64
	var q string
	var present bool
	if r.URL.RawQuery != "" { // parsing an empty query allocates its map
		values := r.URL.Query()
		if err := unknownTokenQuery(values); err != nil {
			return 0, err
		}
		var qerr *broker.Error
		q, present, qerr = queryValue(values, "minValidity")
		if qerr != nil {
			return 0, qerr
		}
	}
	if present {
		if strings.Contains(q, ",") {
			return 0, repeatedQuery("minValidity", fmt.Sprintf("has more than one value (%q)", truncate(q, 40)))
		}
		v, err := parseSeconds(q)
		if err != nil {
			return 0, err
		}
		fromQuery = &v
	}
	if r.Method == http.MethodPost {
		v, err := decodeBody(w, r, maxBody)
		if err != nil {
			return 0, err
		}
		fromBody = v
	}
	switch {
	case fromQuery != nil && fromBody != nil && *fromQuery != *fromBody:
		return 0, badRequest("minValidity is given in both the query and the body, with different values", "Give it once.")
	case fromQuery != nil:
		return time.Duration(*fromQuery) * time.Second, nil
	case fromBody != nil:
		return time.Duration(*fromBody) * time.Second, nil
	}
	return 0, nil
}

// tokenQueryKeys are the query parameters the token route reads: the
// minimum validity, and the function key, which the Functions host (and
// standalone mode, apikey.go) takes from ?code=.
var tokenQueryKeys = []string{"minValidity", keyQuery}

// unknownTokenQuery refuses a query parameter the token route does not
// read. A caller who wrote ?min_validity=600 believes the token it gets
// stays valid ten minutes; serving it with the default margin would break
// that belief silently. Keys match without regard to case, as queryValue
// reads them. Known keys cost no allocation: the work that allocates is
// done only for a key that is unknown.
func unknownTokenQuery(q url.Values) *broker.Error {
	for k := range q {
		if slices.ContainsFunc(tokenQueryKeys, func(known string) bool { return strings.EqualFold(k, known) }) {
			continue
		}
		msg := fmt.Sprintf("the query parameter %q is not one the token route reads", truncate(k, 40))
		remedy := "Pass only minValidity (seconds), e.g. ?minValidity=600, and the function key as ?code= if it is not in the x-functions-key header."
		if hint := config.Suggest(k, tokenQueryKeys[:1]); hint != "" {
			msg += fmt.Sprintf("; did you mean %q?", hint)
			remedy = fmt.Sprintf("Spell it %s, e.g. ?%s=600: an unknown parameter is refused rather than ignored, so a token is never served for less validity than the caller asked for.", hint, hint)
		}
		return badRequest(msg, remedy)
	}
	return nil
}

// queryValue returns the value of key in q, which must appear at most
// once. Keys match without regard to case, as in the Functions host, whose
// query collection is case-insensitive: behind enableForwardingHttpRequest
// ?MinValidity=600 arrives with that spelling, and ?a=1&A=2 as one key.
// A key given twice is refused, not resolved by picking one; forwarding
// joins the values with a comma first, which the caller checks where a
// comma cannot be part of a value.
func queryValue(q url.Values, key string) (value string, present bool, err *broker.Error) {
	n := 0
	for k, vs := range q {
		if strings.EqualFold(k, key) {
			n += len(vs)
			value = vs[0]
		}
	}
	if n > 1 {
		return "", false, repeatedQuery(key, fmt.Sprintf("is given %d times", n))
	}
	return value, n == 1, nil
}

// repeatedQuery is the 400 for a query parameter given more than once.
func repeatedQuery(key, what string) *broker.Error {
	return badRequest(
		fmt.Sprintf("the query parameter %s %s; it takes one value (the Functions host joins a repeated parameter into one comma-separated value)", key, what),
		fmt.Sprintf("Give %s once.", key))
}

// tokenRequest is the POST body. minValidity may be a number or a
// numeric string: ADF expressions often produce strings.
type tokenRequest struct {
	MinValidity json.RawMessage `json:"minValidity"`
}

func decodeBody(w http.ResponseWriter, r *http.Request, maxBody int64) (*int64, *broker.Error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &broker.Error{Code: codeTooLarge, Message: fmt.Sprintf("the request body exceeds %d bytes", maxBody), Remediation: `Send at most {"minValidity": <seconds>}.`}
		}
		return nil, badRequest("the request body could not be read", "Retry the request.")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, badRequest(
			"this POST has no body; POST is for sending {\"minValidity\": <seconds>} in a JSON body. Behind the Functions host a body sent without Content-Length (chunked) may be lost on the way",
			`Send the body with a Content-Length header, e.g. {"minValidity": 600} or {}, or use GET with ?minValidity=600.`)
	}
	var req tokenRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field == "" {
			// Its text names our Go type, which means nothing to a caller.
			return nil, badRequest("the request body is a JSON "+typeErr.Value+", not an object",
				`Send an empty body, {} or {"minValidity": 600}.`)
		}
		return nil, badRequest("the request body is not valid JSON of the form {\"minValidity\": <seconds>}: "+truncate(err.Error(), 160),
			`Send an empty body, {} or {"minValidity": 600}.`)
	}
	if dec.More() {
		return nil, badRequest("the request body has data after the JSON object", `Send a single object such as {"minValidity": 600}.`)
	}
	raw := bytes.TrimSpace(req.MinValidity)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, badRequest("minValidity is not a valid string", "Send minValidity as a number of seconds.")
		}
		raw = []byte(s)
	}
	v, perr := parseSeconds(string(raw))
	if perr != nil {
		return nil, perr
	}
	return &v, nil
}

func parseSeconds(s string) (int64, *broker.Error) {
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || v < 0 || v > int64(broker.MaxMinValidity/time.Second) {
		return 0, badRequest(
			fmt.Sprintf("minValidity must be a whole number of seconds from 0 to %d, not %q", int64(broker.MaxMinValidity/time.Second), truncate(s, 40)),
			"Pass e.g. minValidity=600 for a token that stays valid ten more minutes.")
	}
	return v, nil
}

func badRequest(msg, remediation string) *broker.Error {
	return &broker.Error{Code: broker.CodeBadRequest, Message: msg, Remediation: remediation}
}

// codeTooLarge is an HTTP-only error code: bodies are this layer's concern.
const codeTooLarge broker.ErrorCode = "request_too_large"

// statusOf is the HTTP status of an error code: the broker's vocabulary
// (broker.ErrorCode.HTTPStatus), and 413 for this layer's own.
func statusOf(code broker.ErrorCode) int {
	if code == codeTooLarge {
		return http.StatusRequestEntityTooLarge
	}
	return code.HTTPStatus()
}

// encodeError writes err as the JSON error body. Only Message and
// Remediation reach the caller; the wrapped cause stays in the logs.
func encodeError(w http.ResponseWriter, err error) {
	var e *broker.Error
	if !errors.As(err, &e) {
		e = &broker.Error{Code: broker.CodeInternal, Message: "unexpected failure", Remediation: "Check the function app's logs."}
	}
	status := statusOf(e.Code)
	if e.RetryAfter > 0 && (status == http.StatusServiceUnavailable || status == http.StatusBadGateway || status == http.StatusTooManyRequests) {
		w.Header().Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	w.Header().Set("Cache-Control", "no-store")
	encode(w, status, errorBody{
		Error:       string(e.Code),
		Message:     e.Message,
		Remediation: e.Remediation,
		Connection:  e.Connection,
		Retryable:   e.Retryable(),
	})
}

// truncate shortens caller-supplied text echoed in messages.
// It also drops invalid UTF-8, so the JSON stays readable.
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
