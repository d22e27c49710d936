package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/oauth2"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/diagnose"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/redact"
)

// maxDescription bounds the provider's error_description kept in an error, in
// runes: enough for an AADSTS message, short enough for a log line.
const maxDescription = 300

// exchange is what one attempt saw on the wire. golang.org/x/oauth2 reports
// transport and body failures with %v, so their causes are recorded here as
// they happen rather than recovered from its error strings.
type exchange struct {
	limit int64

	roundTripErr error       // the transport failed: no response
	status       int         // zero without a response
	header       http.Header // response headers
	body         []byte      // the body, once read in full and within limit
	bodyErr      error       // reading the body failed
	tooLarge     bool        // the body exceeded limit
}

// recorder is the RoundTripper of one attempt's http.Client.
type recorder struct {
	next http.RoundTripper
	ex   *exchange
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		r.ex.roundTripErr = err
		return nil, err
	}
	r.ex.status, r.ex.header = resp.StatusCode, resp.Header
	resp.Body = &cappedBody{rc: resp.Body, ex: r.ex}
	return resp, nil
}

// cappedBody reads the whole body, up to the limit, on the first Read, so
// that an oversized body is reported as such instead of being silently
// truncated (x/oauth2 stops at 1 MiB and then fails to parse).
type cappedBody struct {
	rc  io.ReadCloser
	ex  *exchange
	buf *bytes.Reader
	err error
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.buf == nil {
		data, err := io.ReadAll(io.LimitReader(b.rc, b.ex.limit+1))
		switch {
		case err != nil:
			b.ex.bodyErr, b.err = err, err
			return 0, err
		case int64(len(data)) > b.ex.limit:
			b.ex.tooLarge, b.err = true, ErrResponseTooLarge
			return 0, b.err
		}
		b.ex.body = data
		b.buf = bytes.NewReader(data)
	}
	return b.buf.Read(p)
}

func (b *cappedBody) Close() error { return b.rc.Close() }

// failure is a failed attempt with what the retry policy needs to know.
type failure struct {
	err *broker.ProviderError
	// retryable: the same request may succeed if repeated.
	retryable bool
	// unprocessed: the provider certainly did not act on the request, so
	// repeating it cannot be a reuse of a rotating refresh token.
	unprocessed bool
}

// classify turns a failed attempt into a failure. ctx is the whole call's
// context (not the attempt's), to tell a spent budget from a slow attempt.
func (c *Client) classify(ctx context.Context, err error, ex *exchange, secrets []string) *failure {
	switch {
	case ex.status == 0:
		return c.classifyNoResponse(ctx, err, ex)
	case ex.tooLarge:
		return &failure{retryable: true, err: &broker.ProviderError{
			StatusCode:  ex.status,
			Description: fmt.Sprintf("token endpoint sent more than %d bytes; a token response is far smaller, so the token URL may point at something else", ex.limit),
			Err:         ErrResponseTooLarge,
		}}
	case ex.bodyErr != nil:
		desc := "the connection failed while the response was being read"
		if isTimeout(ex.bodyErr) {
			desc = fmt.Sprintf("token endpoint did not finish its response within %v", c.attemptTimeout)
		}
		return &failure{retryable: true, err: &broker.ProviderError{StatusCode: ex.status, Description: desc, Err: ex.bodyErr}}
	}

	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		// A success status whose body x/oauth2 could not use. It may still
		// carry the only live refresh token: keep it.
		return &failure{retryable: true, err: &broker.ProviderError{
			StatusCode:         ex.status,
			Description:        describeMalformed(ex),
			Err:                ErrMalformedResponse,
			IssuedRefreshToken: salvageRefreshToken(ex, secrets),
		}}
	}

	// A provider may quote a token it issued in the same answer.
	red := redactorFor(append(slices.Clip(secrets), issuedTokens(ex.body)...))
	pe := &broker.ProviderError{
		StatusCode:  ex.status,
		Code:        errorCode(re.ErrorCode, red),
		Description: cleanText(re.ErrorDescription, red),
		RetryAfter:  retryAfter(ex.header, c.now()),
	}
	if pe.Code == "" && re.ErrorCode != "" {
		pe.Description = strings.TrimPrefix(pe.Description+" (the provider's error code is not shown: it does not look like an error code, or it quotes a secret)", " ")
	}
	pe.ErrorURI, pe.TraceID, pe.CorrelationID = allowedFields(ex.body, red)
	f := &failure{err: pe}
	success := ex.status >= 200 && ex.status < 300
	// Whether the failure is permanent is decided once, from its category
	// (diagnoseFailure); here, only whether repeating it may help.
	category, known := broker.CodeCategory(pe.Code)
	switch {
	case known && category.Permanent() && (success || ex.status == 400 || ex.status == 401 || ex.status == 403):
		// The request itself is refused: the same one fails again.
	case ex.status == http.StatusTooManyRequests:
		// A rate limiter answers before the grant is looked at.
		f.retryable, f.unprocessed = true, true
	case ex.status == http.StatusRequestTimeout || ex.status >= 500 || success || (known && !category.Permanent()):
		f.retryable = true
	case ex.status >= 300 && ex.status < 400:
		pe.Description = fmt.Sprintf("token endpoint redirected (HTTP %d); redirects are not followed, so check the token URL", ex.status)
		return f
	}
	if pe.Code == "" && pe.Description == "" {
		pe.Description = fmt.Sprintf("token endpoint answered HTTP %d with %s, not an OAuth2 error response", ex.status, describeContentType(ex.header))
	}
	return f
}

func (c *Client) classifyNoResponse(ctx context.Context, err error, ex *exchange) *failure {
	cause := ex.roundTripErr
	if cause == nil {
		cause = err
	}
	f := &failure{retryable: true, err: &broker.ProviderError{Err: cutURLError(err)}}
	switch {
	case ctx.Err() != nil:
		f.err.Description = "gave up waiting for the token endpoint: the request's time ran out or it was cancelled"
	case isDialError(cause):
		f.unprocessed = true
		f.err.Description = "could not connect to the token endpoint"
	case isTimeout(cause):
		f.err.Description = fmt.Sprintf("token endpoint did not answer within %v", c.attemptTimeout)
	default:
		f.err.Description = "the connection to the token endpoint failed before a response arrived"
	}
	return f
}

// isDialError reports whether err shows that no connection was made, so the
// request was certainly never sent.
func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// describeMalformed says what was wrong with a success response that was not
// a usable token response, without quoting it.
func describeMalformed(ex *exchange) string {
	mt, _, _ := mime.ParseMediaType(ex.header.Get("Content-Type"))
	if mt != "application/json" && !strings.HasSuffix(mt, "+json") && mt != "" {
		return fmt.Sprintf("token endpoint answered %d with %s instead of a JSON token response", ex.status, describeContentType(ex.header))
	}
	var fields map[string]any
	if json.Unmarshal(ex.body, &fields) != nil {
		return fmt.Sprintf("token endpoint answered %d with a body that is not a JSON object", ex.status)
	}
	if s, _ := fields["access_token"].(string); s == "" {
		return fmt.Sprintf("token endpoint answered %d without an access_token", ex.status)
	}
	return fmt.Sprintf("token endpoint answered %d with a token response whose fields have the wrong types (expires_in must be a whole number of seconds)", ex.status)
}

func describeContentType(h http.Header) string {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt == "" {
		return "no usable Content-Type"
	}
	return cleanText(mt, nil)
}

// redactorFor registers the secret values of one token request, and the
// tokens its answer carried, with a Redactor of their own: the provider's
// words are redacted before they leave the package, whoever wired it.
func redactorFor(secrets []string) *redact.Redactor {
	r := redact.New()
	for i, s := range secrets {
		r.Remember(strconv.Itoa(i), s)
	}
	return r
}

// idShape is what a trace or correlation id looks like: Entra's are UUIDs.
var idShape = regexp.MustCompile(`^[0-9A-Za-z-]{1,64}$`)

// maxErrorURI bounds an error_uri kept in an error.
const maxErrorURI = 256

// allowedFields returns the fields of a JSON error answer that are passed
// on besides error and error_description: error_uri (RFC 6749 §5.2) when it
// is an https URL of RFC 6749's characters, and the trace_id and
// correlation_id Microsoft Entra sends for support requests, when they are
// id-shaped. None may quote a secret.
func allowedFields(body []byte, red *redact.Redactor) (uri, trace, correlation string) {
	var f struct {
		URI         any `json:"error_uri"`
		Trace       any `json:"trace_id"`
		Correlation any `json:"correlation_id"`
	}
	if json.Unmarshal(body, &f) != nil {
		return "", "", ""
	}
	str := func(v any) string {
		s, _ := v.(string)
		if red.Contains(s) {
			return ""
		}
		return s
	}
	uri, trace, correlation = str(f.URI), str(f.Trace), str(f.Correlation)
	if u, err := url.Parse(uri); err != nil || u.Scheme != "https" || len(uri) > maxErrorURI || !isNQSChars(uri) || u.User != nil {
		uri = ""
	}
	if !idShape.MatchString(trace) {
		trace = ""
	}
	if !idShape.MatchString(correlation) {
		correlation = ""
	}
	return uri, trace, correlation
}

// lifetime reads expires_in as x/oauth2's Token.Extra returns it: a float64
// from JSON, an int64 or string from a form-encoded body, a numeric string
// from providers such as PayPal.
func lifetime(v any, def time.Duration) (time.Duration, error) {
	var secs float64
	switch v := v.(type) {
	case nil:
		if def > 0 {
			return def, nil
		}
		return fallbackLifetime, nil
	case float64:
		secs = v
	case int64:
		secs = float64(v)
	case string:
		s := strings.TrimSpace(v)
		if s == "" {
			return lifetime(nil, def)
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, errors.New("expires_in is not a number")
		}
		secs = f
	default:
		return 0, errors.New("expires_in is not a number")
	}
	// Less than a second (form-encoded 0.5) is no lifetime: the broker would
	// refresh on every call.
	if !(secs >= 1) {
		return 0, errors.New("expires_in is less than one second")
	}
	if secs > maxLifetime.Seconds() {
		return 0, fmt.Errorf("expires_in is longer than %v", maxLifetime)
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// retryAfter reads a Retry-After header: delay-seconds or an HTTP date
// (RFC 9110 §10.2.3). It returns zero when absent, unreadable or past.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// cleanText makes provider text safe for errors and logs: valid UTF-8, no
// control or formatting characters (which could forge log lines or reorder
// text), whitespace collapsed, secrets redacted in every form red knows,
// and at most maxDescription runes.
func cleanText(s string, red *redact.Redactor) string {
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		switch {
		case unicode.IsSpace(r):
			return ' '
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			return -1
		}
		return r
	}, s)
	// Redacted before whitespace is collapsed and before the cut, so that
	// neither turns an echo into something the redactor does not know.
	s = red.String(s)
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) > maxDescription {
		s = string([]rune(s)[:maxDescription]) + "…"
	}
	return s
}

// errorCode returns the provider's error code when package diagnose's one
// rule for codes keeps it (diagnose.ErrorCode) and it quotes no secret of
// the request (red); otherwise "".
func errorCode(s string, red *redact.Redactor) string {
	if red.Contains(s) {
		return ""
	}
	return diagnose.ErrorCode(s)
}

// isNQSChars reports whether s is made of the characters RFC 6749 allows
// in error_uri (%x20-21 / %x23-5B / %x5D-7E, appendix A.8).
func isNQSChars(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r > 0x7e || r == '"' || r == '\\' })
}

// tokenFields are the response fields that carry tokens.
var tokenFields = []string{"access_token", "refresh_token", "id_token"}

// issuedTokens returns the tokens a response body carries, JSON or
// form-encoded, so that text quoting them can be redacted. Very short
// values are left out: redacting them would garble the text, and no
// provider issues them.
func issuedTokens(body []byte) []string {
	var found []string
	var fields map[string]any
	if json.Unmarshal(body, &fields) == nil {
		for _, k := range tokenFields {
			if s, ok := fields[k].(string); ok {
				found = append(found, s)
			}
		}
	}
	// x/oauth2 picks the format by Content-Type, so try both.
	if vals, err := url.ParseQuery(string(body)); err == nil {
		for _, k := range tokenFields {
			found = append(found, vals[k]...)
		}
	}
	return slices.DeleteFunc(found, func(s string) bool { return len(s) < 8 })
}

// salvageRefreshToken reads a refresh_token out of a success body that
// x/oauth2 refused (a field of the wrong type, say), JSON or form-encoded.
// It returns "" when there is none, or when it is the one just sent.
func salvageRefreshToken(ex *exchange, secrets []string) broker.Secret {
	if ex.status < 200 || ex.status > 299 || len(ex.body) == 0 {
		return ""
	}
	var rt string
	var fields map[string]json.RawMessage
	if json.Unmarshal(ex.body, &fields) == nil {
		_ = json.Unmarshal(fields["refresh_token"], &rt)
	} else if vals, err := url.ParseQuery(string(ex.body)); err == nil {
		rt = vals.Get("refresh_token")
	}
	if rt == "" || slices.Contains(secrets, rt) {
		return ""
	}
	return broker.Secret(rt)
}

// cutURLError is err, a failure without a response, as it may be logged
// and answered: the URL of its *url.Error (net/http's Client reports every
// transport failure as one, and x/oauth2 returns it as it is) cut to the
// token URL's scheme, host and path (issue 16 §6). The query may carry
// what a provider's token URL needs (a tenant, an API version) and is not
// for logs. The *url.Error is a copy, so errors.As still finds it and,
// through it, the net.OpError or timeout beneath.
func cutURLError(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	c := *ue
	c.URL = cutURL(ue.URL)
	return &c
}

// cutURL is raw's scheme, host and path: no user information, query or
// fragment. A value that does not parse is not shown at all.
func cutURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(the token URL)"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}).String()
}
