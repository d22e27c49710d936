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
	// For a client error the diagnosis knows more codes than RFC 6749's
	// six: AADSTS codes, OIDC's, HubSpot's statuses. Only those it
	// recognises make a failure permanent; a bare 4xx or an unknown code
	// stays "not retried, yet not a rejection", as the package says.
	// Rate limits and timeouts stay the retry policy's to judge.
	clientError := ex.status >= 400 && ex.status < 500 && ex.status != http.StatusTooManyRequests && ex.status != http.StatusRequestTimeout
	recognised := d.AADSTS != "" || in.Body.Status != "" || knownPermanentCodes[pe.Code]
	if clientError && d.Permanent && recognised {
		pe.Permanent, f.retryable = true, false
	}
}

// knownPermanentCodes are error codes beyond RFC 6749 §5.2 that providers
// use for failures only a person can fix.
var knownPermanentCodes = map[string]bool{
	"access_denied":        true, // RFC 6749 §4.1.2.1
	"interaction_required": true, // OpenID Connect Core §3.1.2.6
	"login_required":       true,
	"consent_required":     true,
	"invalid_tenant":       true, // Entra
	"deleted_client":       true, // Google
	"invalid_client_id":    true, // Salesforce
}
