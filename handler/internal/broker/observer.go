package broker

import (
	"errors"
	"time"
)

// Observer is told what the broker does, for metrics. The broker knows no
// metrics library (imports_test.go): the wiring adapts these calls to its
// instruments (package metrics). Every method is called on a request's
// path, the first on the cache hit's: an implementation must be quick,
// must not block, and must be safe for concurrent use.
type Observer interface {
	// TokenServed: a token was handed to a caller, from source, age after
	// its issue (negative when the issue time is not known).
	TokenServed(connection string, source Source, age time.Duration)
	// Refreshed: a refresh (the token endpoint call and making its result
	// durable, steps 6 and 7) ended with outcome after d.
	Refreshed(connection string, outcome Outcome, d time.Duration)
	// TokenEndpoint: one request to the provider's token endpoint ended
	// with outcome after d.
	TokenEndpoint(connection string, outcome Outcome, d time.Duration)
	// LockWaited: taking the connection's lock (step 4) ended with outcome
	// ("acquired", "timeout" or "error") after d.
	LockWaited(connection string, outcome string, d time.Duration)
	// StoreFailed: the secret store refused a read or a write (op).
	StoreFailed(connection string, op string)
}

// Source is where a served token came from.
type Source string

const (
	// SourceMemory: this instance's cache (step 1), no I/O.
	SourceMemory Source = "memory"
	// SourceStore: the store's access token (steps 3 and 5), written by
	// an earlier refresh of any instance.
	SourceStore Source = "store"
	// SourceRefresh: a refresh made for this request's flight.
	SourceRefresh Source = "refresh"
)

// Outcome is how a refresh or a token-endpoint call ended: "success", or
// the ErrorCode of the failure ("rejected", "provider_failed",
// "unavailable", ...).
type Outcome string

// OutcomeSuccess is the outcome of a call that succeeded.
const OutcomeSuccess Outcome = "success"

// outcomeOf names err's outcome in one word from a fixed set, so a
// metric's labels stay few whatever the provider answers.
func outcomeOf(err error) Outcome {
	if err == nil {
		return OutcomeSuccess
	}
	var pe *ProviderError
	if errors.As(err, &pe) {
		if pe.Permanent {
			return Outcome(CodeRejected)
		}
		return Outcome(CodeProviderFailed)
	}
	var e *Error
	if errors.As(err, &e) {
		return Outcome(e.Code)
	}
	return Outcome(CodeInternal)
}

// noObserver is the Observer of a broker given none.
type noObserver struct{}

func (noObserver) TokenServed(string, Source, time.Duration)    {}
func (noObserver) Refreshed(string, Outcome, time.Duration)     {}
func (noObserver) TokenEndpoint(string, Outcome, time.Duration) {}
func (noObserver) LockWaited(string, string, time.Duration)     {}
func (noObserver) StoreFailed(string, string)                   {}

// observeServed tells the observer of a token handed out at now, with its
// age when its lifetime is known. The caller passes the time it judged
// the token by: a second clock read was a tenth of a cache hit's work.
func (b *Broker) observeServed(name string, ct *cachedToken, source Source, now time.Time) {
	age := time.Duration(-1)
	if ct.lifetime > 0 {
		age = now.Sub(ct.token.Expiry.Add(-ct.lifetime))
	}
	b.observe.TokenServed(name, source, age)
}

// lockOutcome names how taking a lock ended.
func lockOutcome(err error) string {
	switch {
	case err == nil:
		return "acquired"
	case errors.Is(err, ErrLockTimeout):
		return "timeout"
	}
	return "error"
}
