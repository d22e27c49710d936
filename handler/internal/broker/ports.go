package broker

import (
	"context"
	"errors"
	"time"
)

// StoredSecret is one secret as the store keeps it.
type StoredSecret struct {
	Value Secret
	// ExpiresOn is the secret's expiry (for an access token, when it stops
	// being valid; for a client secret, the date an operator recorded).
	// Zero means none is recorded.
	ExpiresOn time.Time
	// UpdatedOn is when this value was written. Zero when unknown.
	UpdatedOn time.Time
	// IssuedOn is when the provider issued an access token (its
	// response's arrival): unlike UpdatedOn, a late write does not move
	// it. Zero when unknown.
	IssuedOn time.Time
	// Lifetime is how long the provider made an access token valid, as
	// issued. Zero when unknown; the broker then refreshes rather than
	// refuse a request by a lifetime it would have to infer.
	Lifetime time.Duration
}

// ErrSecretNotFound is wrapped by SecretStore.Get when the secret does not
// exist.
var ErrSecretNotFound = errors.New("secret not found")

// SecretStore keeps a connection's secrets: client credentials written by an
// operator, refresh and access tokens written by the broker.
type SecretStore interface {
	// Get returns the current value of the named secret, or an error
	// wrapping ErrSecretNotFound.
	Get(ctx context.Context, name string) (StoredSecret, error)
	// Set writes a new value. It returns only once the value is durable: a
	// later Get, from any process, returns it.
	Set(ctx context.Context, name string, s StoredSecret) error
}

// ErrLockTimeout is wrapped by Locker.Lock when another holder kept the lock
// past the caller's deadline.
var ErrLockTimeout = errors.New("lock is held by another refresh")

// ErrLockUnavailable is wrapped by Locker.Lock when the lock's backend could
// not be reached, as opposed to being held by someone else.
var ErrLockUnavailable = errors.New("lock backend unavailable")

// ErrLockLost is wrapped by a write the broker stopped retrying because
// its lock stopped being held.
var ErrLockLost = errors.New("lock lost")

// Locker serialises refreshes of one connection across every instance that
// shares the store.
type Locker interface {
	// Lock blocks until the named lock is held, or ctx is done (an error
	// wrapping ErrLockTimeout), or the backend fails (ErrLockUnavailable).
	Lock(ctx context.Context, name string) (Lock, error)
}

// Lock is a held lock.
type Lock interface {
	// Lost is closed if the lock stops being held before Release: a lease
	// that could not be renewed in time. A refresh that has not yet called
	// the provider must then abort.
	Lost() <-chan struct{}
	// Held reports whether the lock is held at this moment, as far as the
	// holder can tell without asking its backend: false once Lost is
	// closed or Release has run, and false as soon as the time its backend
	// last confirmed the hold for has run out, even before Lost is closed
	// (a lease's renewal may be late to notice). The broker asks it right
	// before every token request that redeems a refresh token.
	Held() bool
	// Release gives the lock up. It is owner-checked: releasing a lock
	// someone else now holds does nothing to their hold.
	Release(ctx context.Context) error
}

// Grant performs one token request against a connection's token endpoint.
type Grant interface {
	// Token requests a token. It makes at most one request that redeems
	// cred.RefreshToken unless the connection tolerates reuse
	// (ReuseGrace > 0). Failures are *ProviderError.
	Token(ctx context.Context, c *Connection, cred Credentials) (*Token, error)
}

// SecretInfo describes a stored secret without its value.
type SecretInfo struct {
	Name string
	// ExpiresOn is the secret's recorded expiry; zero when none is.
	ExpiresOn time.Time
	// UpdatedOn is when the current value was written; zero when unknown.
	UpdatedOn time.Time
}

// SecretLister is implemented by a SecretStore that can describe every
// secret in one call (Key Vault's paged list of secret properties). The
// sweep uses it to pass over fresh connections without reading each token,
// and to see when client secrets expire.
type SecretLister interface {
	// List describes every secret in the store. A store that could read
	// only some returns those along with an error.
	List(ctx context.Context) ([]SecretInfo, error)
}

// SharedStatus is the non-secret outcome of a connection's latest refresh,
// kept beside its lock (the lock blob's metadata) so that every instance
// reports the same, not only the one that refreshed.
type SharedStatus struct {
	// LastRefresh is when a refresh last succeeded.
	LastRefresh time.Time
	// LastRefreshDuration is how long that refresh took (steps 6 and 7);
	// zero when not known.
	LastRefreshDuration time.Duration
	// LastError is the category of the latest failure ("" after a success):
	// a word such as an Error code or an RFC 6749 error code, never a
	// message a provider wrote.
	LastError string
	// Failures counts failed refreshes since the last success.
	Failures int
	// Instance identifies the instance that recorded this.
	Instance string
	// RecordedOn is when this was recorded.
	RecordedOn time.Time
}

// StatusRecorder is implemented by a Lock whose backend can keep a
// SharedStatus beside the lock. The broker records each refresh's outcome
// while it still holds the lock.
type StatusRecorder interface {
	RecordStatus(ctx context.Context, s SharedStatus) error
}

// StatusReader is implemented by a Locker that can read the status recorded
// beside a lock without taking it. A lock never recorded yields a zero
// SharedStatus and no error.
type StatusReader interface {
	ReadStatus(ctx context.Context, name string) (SharedStatus, error)
}
