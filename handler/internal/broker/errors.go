package broker

import (
	"errors"
	"fmt"
	"time"
)

// ErrorCode classifies a broker failure. Each code maps to one HTTP status
// of the token endpoint.
type ErrorCode string

const (
	// CodeBadRequest: the caller asked for something that cannot be served
	// (bad minValidity, malformed body). HTTP 400.
	CodeBadRequest ErrorCode = "bad_request"
	// CodeForbidden: the caller is not allowed this connection. HTTP 403.
	CodeForbidden ErrorCode = "forbidden"
	// CodeNotFound: no connection has that name. HTTP 404.
	CodeNotFound ErrorCode = "unknown_connection"
	// CodeRejected: the provider rejected the credentials; retrying will not
	// help until someone acts. HTTP 424.
	CodeRejected ErrorCode = "provider_rejected"
	// CodeNotConfigured: a secret the connection needs is not in the
	// store, so the provider was not called; someone has to load it (the
	// message names every missing secret). HTTP 424, as for CodeRejected:
	// retrying will not help until someone acts.
	CodeNotConfigured ErrorCode = "not_configured"
	// CodeProviderFailed: the provider failed transiently, even after
	// retries. HTTP 502.
	CodeProviderFailed ErrorCode = "provider_unavailable"
	// CodeUnavailable: the lock or the store could not be had in time.
	// HTTP 503 with Retry-After.
	CodeUnavailable ErrorCode = "temporarily_unavailable"
	// CodeTooManyRequests: an operator action came too soon after the
	// last one. HTTP 429 with Retry-After.
	CodeTooManyRequests ErrorCode = "too_many_requests"
	// CodeInternal: a bug or an unexpected state. HTTP 500.
	CodeInternal ErrorCode = "internal_error"
)

// Error is a failure to hand out a token, written for the person reading the
// failed pipeline run: Message says what happened, Remediation what to do.
// Neither ever contains a secret.
type Error struct {
	Code        ErrorCode
	Connection  string
	Message     string
	Remediation string
	// RetryAfter is a hint for CodeUnavailable and CodeProviderFailed.
	RetryAfter time.Duration
	// Category is the diagnosed category of a provider failure
	// ("reauthorize", "rotate_client_secret", ...), for status and logs;
	// empty for other failures.
	Category string
	// Err is the underlying cause, for logs. It is never shown to callers.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Connection, e.Message, e.Err)
	}
	return e.Connection + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether the same request may succeed later without
// anyone acting: its code says so (failures.go), or it names a time after
// which it may (a force-refresh too soon after the last one, answered 429
// with Retry-After).
func (e *Error) Retryable() bool {
	return answers[e.Code].retryable || e.RetryAfter > 0
}

// ProviderError is a failed token request, as a Grant reports it. It carries
// the provider's own words (sanitised: never a token, a secret or a raw body).
type ProviderError struct {
	// StatusCode is the HTTP status, zero when no response arrived.
	StatusCode int
	// Code is the RFC 6749 §5.2 error ("invalid_grant"), when the provider
	// sent one.
	Code string
	// Description is the provider's error_description, trimmed.
	Description string
	// Permanent is true when repeating the request cannot succeed until the
	// credentials or the configuration change.
	Permanent bool
	// RetryAfter is the provider's Retry-After, when it sent one.
	RetryAfter time.Duration
	// Category is the failure's category ("reauthorize",
	// "rotate_client_secret", "transient", ...), as package diagnose names
	// them; empty when the grant did not diagnose it.
	Category string
	// Remediation says what to do, naming the connection and the secret or
	// setting to fix; empty when the grant did not diagnose the failure.
	Remediation string
	// AADSTS is the Microsoft Entra error code the diagnosis rests on
	// ("AADSTS700082"), when there was one.
	AADSTS string
	// ErrorURI is the provider's error_uri (RFC 6749 §5.2), and TraceID and
	// CorrelationID the ids Microsoft Entra asks for in a support request,
	// when the answer had them in a shape that cannot carry a secret.
	ErrorURI, TraceID, CorrelationID string
	// IssuedRefreshToken is a new refresh token found in a response that was
	// otherwise unusable (a bad expires_in, say). On a rotating provider the
	// redeemed one is already dead, so the broker persists this one even
	// though the request failed.
	IssuedRefreshToken Secret
	// Err is the transport or decoding error, when there was one.
	Err error
}

func (e *ProviderError) Error() string {
	s := "token endpoint"
	if e.StatusCode != 0 {
		s += fmt.Sprintf(" answered HTTP %d", e.StatusCode)
	}
	if e.Code != "" {
		s += ": " + e.Code
	}
	if e.Description != "" {
		s += ": " + e.Description
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	for _, f := range [][2]string{{"error_uri", e.ErrorURI}, {"trace_id", e.TraceID}, {"correlation_id", e.CorrelationID}} {
		if f[1] != "" {
			s += fmt.Sprintf(" (%s %s)", f[0], f[1])
		}
	}
	return s
}

func (e *ProviderError) Unwrap() error { return e.Err }

// asError returns err as an *Error, wrapping anything else as internal.
func asError(connection string, err error) *Error {
	var be *Error
	if errors.As(err, &be) {
		return be
	}
	return &Error{Code: CodeInternal, Connection: connection, Message: "unexpected failure", Remediation: "Retry; if it persists, check the function app's logs for this connection.", Err: err}
}
