// Package diagnose explains a failed token request in terms of what someone
// has to do about it. It turns what the token endpoint said (the RFC 6749
// §5.2 error code, the Microsoft Entra AADSTS code, a provider's own status
// such as HubSpot's BAD_REFRESH_TOKEN, the HTTP status), or the network
// failure that stood in for an answer, into a Category, a retry decision and
// a remediation sentence that names the connection and the secret or setting
// to fix.
//
// The most specific evidence wins: an AADSTS code the package knows, then a
// provider status, then a documented error_description phrase, then the RFC
// 6749 code, then the HTTP status alone. Providers change codes and wording
// without notice (Microsoft says so of AADSTS codes), so anything unknown
// falls through to the next, more general, rule.
//
// Provider text is evidence, never output. error_description is searched for
// the AADSTS code and a few documented phrases, but nothing from it is copied
// into a Diagnosis: a provider may echo its input, a refresh token or a client
// secret, back in it. Sanitize makes a description fit for a log line.
package diagnose

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// Category is what has to happen before a failing connection works again:
// the broker's failure vocabulary (broker.Category), where each category's
// permanence, answer and generic remediation live. This package maps the
// evidence of a token endpoint's answer to one.
type Category = broker.Category

// The categories of a failed token request.
const (
	Reauthorize             = broker.CategoryReauthorize
	RotateClientSecret      = broker.CategoryRotateClientSecret
	FixConfiguration        = broker.CategoryFixConfiguration
	AccountLocked           = broker.CategoryAccountLocked
	UserInteractionRequired = broker.CategoryUserInteractionRequired
	Throttled               = broker.CategoryThrottled
	Transient               = broker.CategoryTransient
	ProviderOutage          = broker.CategoryProviderOutage
)

// Categories returns every Category a diagnosis can give, most urgent first.
func Categories() []Category {
	return []Category{Reauthorize, RotateClientSecret, FixConfiguration, AccountLocked,
		UserInteractionRequired, Throttled, Transient, ProviderOutage}
}

// Body is what a token endpoint's error response says, as ParseBody reads
// it. All fields are the provider's own words: they are matched, never
// repeated.
type Body struct {
	// Code is the RFC 6749 §5.2 "error" ("invalid_grant").
	Code string
	// Description is "error_description", or HubSpot's "message" when that
	// is absent.
	Description string
	// ErrorCodes is Microsoft Entra's "error_codes" ([700082]).
	ErrorCodes []int
	// Status is HubSpot's "status" ("BAD_REFRESH_TOKEN"), which its older
	// answers carry instead of, or beside, a misleading "error".
	Status string
}

// Input is one failed token request of a connection.
type Input struct {
	// Connection is the failing connection. Its name, provider, grant,
	// secret names, client id and client authentication go into the
	// remediation.
	Connection *broker.Connection
	// HTTPStatus is the status of the answer, zero when none arrived.
	HTTPStatus int
	// Body is what the answer said.
	Body
	// RetryAfter is the provider's Retry-After, when it sent one.
	RetryAfter time.Duration
	// Err is why no usable answer arrived: a network error, a timeout, a
	// response that could not be read.
	Err error
	// ConnectCommand obtains a new refresh token for the connection, such
	// as "handler connect xero"; the remediation tells people to run it.
	// Empty when there is no such command.
	ConnectCommand string
}

// Diagnosis is what a failure means and what to do about it. None of its
// fields holds provider text or a secret.
type Diagnosis struct {
	Category Category
	// Permanent is true when repeating the request cannot succeed until
	// someone acts (Category.Permanent).
	Permanent bool
	// RefreshTokenDead is true when the stored refresh token can never be
	// redeemed again: only a new one, from a person consenting, helps.
	// Always false for client_credentials connections.
	RefreshTokenDead bool
	// RetryAfter is how long to wait before retrying, when the provider
	// said; zero for permanent failures.
	RetryAfter time.Duration
	// AADSTS is the Microsoft Entra code the diagnosis rests on
	// ("AADSTS700082"), empty when the answer carried none.
	AADSTS string
	// Summary says what happened, in one line, with the codes that show it.
	Summary string
	// Remediation says what to do, naming the connection and the secret or
	// setting to fix.
	Remediation string
}

// LogValue implements slog.LogValuer: the stable fields, for filtering and
// metrics.
func (d Diagnosis) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("category", string(d.Category)),
		slog.Bool("permanent", d.Permanent),
		slog.Bool("refresh_token_dead", d.RefreshTokenDead),
	}
	if d.AADSTS != "" {
		attrs = append(attrs, slog.String("aadsts", d.AADSTS))
	}
	if d.RetryAfter > 0 {
		attrs = append(attrs, slog.Duration("retry_after", d.RetryAfter))
	}
	return slog.GroupValue(attrs...)
}

// advice is one diagnosis before it is applied to a connection.
type advice struct {
	category Category
	// deadRT: the refresh token can never be redeemed again.
	deadRT bool
	// what happened, in our words, as a phrase that follows "Provider: ".
	what string
	// fix is the remediation template (see render).
	fix string
	// appOnly replaces the advice for client_credentials connections,
	// which have no user and no refresh token; nil means the advice holds
	// for them too.
	appOnly *advice
}

// needsUser reports whether the advice only makes sense when a person's
// grant is involved.
func (a advice) needsUser() bool {
	switch a.category {
	case Reauthorize, UserInteractionRequired, AccountLocked:
		return true
	}
	return a.deadRT || strings.Contains(a.fix, "{refresh_token}")
}

// Diagnose explains one failed token request.
func Diagnose(in Input) Diagnosis {
	code, known := pickAADSTS(in.Description, in.ErrorCodes)
	provider := providerName(in.Connection)
	if code != 0 {
		provider = entraName
	}
	a := choose(in, code, known)

	grant := broker.GrantRefreshToken
	if in.Connection != nil && in.Connection.Grant != "" {
		grant = in.Connection.Grant
	}
	if grant == broker.GrantClientCredentials && a.needsUser() {
		if a.appOnly != nil {
			a = *a.appOnly
		} else {
			a = advice{category: FixConfiguration, what: a.what, fix: fixAppOnly}
		}
	}

	d := Diagnosis{
		Category:         a.category,
		Permanent:        a.category.Permanent(),
		RefreshTokenDead: a.deadRT && grant == broker.GrantRefreshToken,
	}
	if !d.Permanent {
		d.RetryAfter = max(in.RetryAfter, 0)
	}
	if code != 0 {
		d.AADSTS = "AADSTS" + strconv.Itoa(code)
	}
	d.Summary = summaryName(in.Connection, provider) + ": " + a.what + evidence(d.AADSTS, in)
	d.Remediation = render(a.fix, in, grant, provider)
	return d
}

// choose picks the most specific advice the failure supports.
func choose(in Input, code int, known bool) advice {
	said := in.Code != "" || in.Status != "" || code != 0
	switch {
	case in.HTTPStatus == 429:
		// A rate limiter answers before the request is looked at, whatever
		// the body says.
		return adviceThrottled
	case in.HTTPStatus >= 500:
		return adviceOutage
	case !said && in.HTTPStatus == 0:
		return networkAdvice(in.Err)
	case !said && in.Err != nil && (in.HTTPStatus < 200 || in.HTTPStatus > 299):
		// An error answer cut off before its body said why.
		return networkAdvice(in.Err)
	}
	if known {
		return entraCodes[code]
	}
	if a, ok := hubspotStatuses[strings.ToUpper(strings.TrimSpace(in.Status))]; ok {
		return a
	}
	errCode := strings.ToLower(strings.TrimSpace(in.Code))
	for _, r := range descriptionRules {
		if r.matches(in.Connection, errCode, in.Description) {
			return r.advice
		}
	}
	if a, ok := errorCodes[errCode]; ok {
		return a
	}
	if errCode != "" {
		return adviceUnknownCode
	}
	return statusAdvice(in.HTTPStatus)
}

// aadstsPattern finds Entra codes in error_description. Entra puts a generic
// code before the specific one in some answers: "AADSTS70002: Error
// validating credentials. AADSTS50012: Invalid client secret is provided."
var aadstsPattern = regexp.MustCompile(`AADSTS(\d{1,9})\b`)

// pickAADSTS returns the Entra code to diagnose by: the first, in
// error_description order and then error_codes order, that the table knows
// and that is not a generic wrapper; else the first known one; else the
// first one at all. known reports whether the table has it.
func pickAADSTS(description string, errorCodes []int) (code int, known bool) {
	var codes []int
	for _, m := range aadstsPattern.FindAllStringSubmatch(description, -1) {
		if n, err := strconv.Atoi(m[1]); err == nil && !slices.Contains(codes, n) {
			codes = append(codes, n)
		}
	}
	for _, n := range errorCodes {
		if n > 0 && !slices.Contains(codes, n) {
			codes = append(codes, n)
		}
	}
	firstKnown := 0
	for _, n := range codes {
		if _, ok := entraCodes[n]; !ok {
			continue
		}
		if !entraWrappers[n] {
			return n, true
		}
		if firstKnown == 0 {
			firstKnown = n
		}
	}
	if firstKnown != 0 {
		return firstKnown, true
	}
	if len(codes) > 0 {
		return codes[0], false
	}
	return 0, false
}

// networkAdvice describes a request that got no usable answer.
func networkAdvice(err error) advice {
	a := advice{category: Transient, what: "the connection to the token endpoint failed", fix: fixNetwork}
	var dns *net.DNSError
	var op *net.OpError
	var ne net.Error
	switch {
	case err == nil:
		a.what = "the request failed without an answer or an error to explain it"
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		a.what = "the token endpoint did not answer in time"
	case errors.As(err, &dns):
		a.what = "the token endpoint's host name could not be resolved"
	case errors.As(err, &op) && op.Op == "dial":
		a.what = "the token endpoint could not be reached"
	}
	return a
}

// statusAdvice describes an answer that carried no error code, by its HTTP
// status alone.
func statusAdvice(status int) advice {
	switch {
	case status >= 200 && status < 300:
		return advice{category: Transient, what: "the token endpoint answered success without a usable token", fix: fixMalformed}
	case status >= 300 && status < 400:
		return advice{category: FixConfiguration, what: "the token endpoint redirected instead of answering", fix: fixTokenURL}
	case status == 401:
		// RFC 6749 §5.2: failed client authentication may be answered 401.
		return advice{category: RotateClientSecret, what: "the token endpoint refused to authenticate the client", fix: fixInvalidClient}
	case status == 403:
		return advice{category: FixConfiguration, what: "the token endpoint forbade the request", fix: fixForbidden}
	case status == 404 || status == 405 || status == 410:
		return advice{category: FixConfiguration, what: "there is no token endpoint at the configured URL", fix: fixTokenURL}
	case status == 408:
		return advice{category: Transient, what: "the token endpoint timed out waiting for the request", fix: fixNetwork}
	}
	return advice{category: FixConfiguration, what: "the token endpoint rejected the request without an OAuth2 error", fix: fixRequest}
}

// evidence lists the codes a summary rests on, cleaned of anything a code
// cannot contain.
func evidence(aadsts string, in Input) string {
	var parts []string
	for _, s := range []string{aadsts, ErrorCode(strings.TrimSpace(in.Code)), ErrorCode(strings.TrimSpace(in.Status))} {
		if s != "" && !slices.Contains(parts, s) {
			parts = append(parts, s)
		}
	}
	if in.HTTPStatus != 0 {
		parts = append(parts, fmt.Sprintf("HTTP %d", in.HTTPStatus))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// maxErrorCode is the longest error code kept: the longest RFC 6749, OpenID
// Connect and provider codes are some 25 characters.
const maxErrorCode = 64

// ErrorCode returns s when it can be repeated as a provider's error code,
// and "" otherwise. An error code is the one piece of provider text that
// is passed on as it is, so it must look like one: letters, digits, '_',
// '-' and '.' (every RFC 6749 §5.2, OpenID Connect and preset provider code
// is), at most 64 of them, and nothing that looks like a token or a secret
// (a provider may echo one in its place). A code is never trimmed into
// shape: what stood in its place may be a secret. The token client, the
// consent callback and the summaries all keep codes by this one rule.
func ErrorCode(s string) string {
	if len(s) == 0 || len(s) > maxErrorCode || looksSecret(s) {
		return ""
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return ""
		}
	}
	return s
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
