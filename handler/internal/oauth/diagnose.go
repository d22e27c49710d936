package oauth

import (
	"net/http"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/diagnose"
)

// diagnoseFailure adds package diagnose's reading of the answer to f: a
// category and a remediation that name the connection's secrets, and, for
// a client error, whether repeating can help. Entra's error_codes and
// HubSpot's status are only in the raw body, which is why this happens
// here rather than in the broker.
func diagnoseFailure(conn *broker.Connection, f *failure, ex *exchange, err error) {
	pe := f.err
	in := diagnose.Input{Connection: conn, HTTPStatus: ex.status, RetryAfter: pe.RetryAfter, Err: err}
	if ex.status != 0 && !ex.tooLarge && ex.bodyErr == nil {
		in.Body = diagnose.ParseBody(ex.body)
	}
	d := diagnose.Diagnose(in)
	pe.Category = string(d.Category)
	pe.Remediation = d.Remediation
	pe.AADSTS = d.AADSTS
	// The one decision whether a failure is permanent: its category
	// (broker's vocabulary) says so, the answer was a client error or a
	// success carrying an error, and the diagnosis rests on a code: an
	// AADSTS code, HubSpot's status, or an error code the vocabulary knows
	// (RFC 6749's, OpenID Connect's, providers'). A bare 4xx or an unknown
	// code stays "not retried, yet not a rejection". Rate limits and
	// timeouts stay the retry policy's to judge. A success status with no
	// token is a rejection only when it names a known code in `error`: a
	// phrase in a 2xx's description (an AADSTS number in free text) is
	// too weak to lock a connection out for a cool-down.
	success := ex.status >= 200 && ex.status < 300
	clientError := ex.status >= 400 && ex.status < 500 && ex.status != http.StatusTooManyRequests && ex.status != http.StatusRequestTimeout
	_, knownCode := broker.CodeCategory(pe.Code)
	evidence := d.AADSTS != "" || in.Body.Status != "" || knownCode
	if d.Category.Permanent() && (clientError && evidence || success && knownCode) {
		pe.Permanent, f.retryable = true, false
	}
}
