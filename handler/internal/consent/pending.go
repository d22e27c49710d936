package consent

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// PendingTTL is how long an authorization may take, from the redirect to
// the provider to its redirect back: time to sign in, with MFA, and no more.
const PendingTTL = 10 * time.Minute

// Pending is an authorization under way: what its callback needs to finish
// it. The state names the connection ("<connection>.<random>"), so the
// callback knows where to look for the rest.
type Pending struct {
	Connection string
	State      string
	// Verifier is the PKCE code verifier whose challenge went to the
	// provider.
	Verifier broker.Secret
	// RedirectURL is the redirect URI the authorization request named; the
	// code exchange must name it again (RFC 6749 §4.1.3).
	RedirectURL string
	Expiry      time.Time
	// Standby: this authorization is the connection's second, whose
	// refresh token goes to its standby secret (broker/standby.go).
	Standby bool
	// Scopes are the scopes the authorization asked for, which a standby
	// authorization after it asks for again.
	Scopes []string
}

// NewPending starts an authorization of connection, to come back to
// redirectURL within PendingTTL of now.
func NewPending(connection, redirectURL string, now time.Time) Pending {
	return Pending{
		Connection:  connection,
		State:       connection + "." + NewState(),
		Verifier:    NewVerifier(),
		RedirectURL: redirectURL,
		Expiry:      now.Add(PendingTTL),
	}
}

// ConnectionOfState returns the connection a state from NewPending names,
// and false when state is not shaped like one. The shape is checked before
// the name is used to look anything up.
func ConnectionOfState(state string) (string, bool) {
	name, random, ok := strings.Cut(state, ".")
	if !ok || len(name) == 0 || len(name) > 63 || len(random) < 16 || len(random) > 64 {
		return "", false
	}
	if name[0] < 'a' || name[0] > 'z' {
		return "", false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return "", false
		}
	}
	for i := 0; i < len(random); i++ {
		if c := random[i]; !('A' <= c && c <= 'Z' || '2' <= c && c <= '7') {
			return "", false
		}
	}
	return name, true
}

// StateSecretName is the secret that holds connection's pending
// authorization.
func StateSecretName(connection string) string { return connection + broker.ConsentStateSuffix }

// Errors wrapped by a *StateError.
var (
	// ErrStateUnknown: no pending authorization has this state. It was
	// never issued, or a later authorization of the connection replaced it.
	ErrStateUnknown = errors.New("no authorization under way has this state")
	// ErrStateUsed: the authorization was already finished, or refused; a
	// replayed redirect.
	ErrStateUsed = errors.New("this authorization was already used")
	// ErrStateExpired: the authorization took longer than PendingTTL.
	ErrStateExpired = errors.New("this authorization has expired")
)

// StateError is a callback whose state cannot be accepted.
type StateError struct {
	// Connection is the connection the state names; empty when it names
	// none.
	Connection string
	Err        error
}

func (e *StateError) Error() string {
	if e.Connection == "" {
		return e.Err.Error()
	}
	return fmt.Sprintf("connection %q: %v", e.Connection, e.Err)
}

func (e *StateError) Unwrap() error { return e.Err }

// PendingStore keeps pending authorizations in the secret store, one per
// connection under StateSecretName, so that the provider's redirect may
// reach any instance of the function app, and a restart in between loses
// nothing. Starting a new authorization of a connection replaces the one
// pending, whose state is then unknown.
type PendingStore struct {
	Store broker.SecretStore
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// pendingRecord is the stored form. A used record keeps its state, without
// the verifier, so a replay is told apart from a forgery.
type pendingRecord struct {
	State       string    `json:"state"`
	Verifier    string    `json:"verifier,omitempty"`
	RedirectURL string    `json:"redirectUri,omitempty"`
	Expiry      time.Time `json:"expiry"`
	Used        bool      `json:"used,omitempty"`
	Standby     bool      `json:"standby,omitempty"`
	Scopes      []string  `json:"scopes,omitempty"`
}

// Put records p as its connection's pending authorization.
func (s *PendingStore) Put(ctx context.Context, p Pending) error {
	return s.write(ctx, p.Connection, pendingRecord{State: p.State, Verifier: p.Verifier.Reveal(), RedirectURL: p.RedirectURL, Expiry: p.Expiry,
		Standby: p.Standby, Scopes: p.Scopes})
}

// Claim returns the pending authorization that state names and marks it
// used, so that it is claimed once: a replayed redirect gets ErrStateUsed.
// A state that is malformed, unknown or superseded is ErrStateUnknown, one
// too old ErrStateExpired; each is wrapped in a *StateError. A store
// failure is a *StoreError, and then nothing was claimed.
//
// The store has no compare-and-swap, so two redirects with the same state
// that reach two instances in the same instant may both be claimed. Both
// then redeem the same authorization code, and the provider refuses the
// second (RFC 6749 §4.1.2), or revokes what it issued for the code, in
// which case the person starts again. A redirect cannot bring in the code
// of another authorization where the provider checks PKCE: the verifier
// would not match.
func (s *PendingStore) Claim(ctx context.Context, state string) (Pending, error) {
	name, ok := ConnectionOfState(state)
	if !ok {
		return Pending{}, &StateError{Err: ErrStateUnknown}
	}
	secret := StateSecretName(name)
	stored, err := s.Store.Get(ctx, secret)
	if errors.Is(err, broker.ErrSecretNotFound) {
		return Pending{}, &StateError{Connection: name, Err: ErrStateUnknown}
	}
	if err != nil {
		return Pending{}, &StoreError{Op: "read", Secret: secret, Err: err}
	}
	var rec pendingRecord
	if json.Unmarshal([]byte(stored.Value.Reveal()), &rec) != nil ||
		subtle.ConstantTimeCompare([]byte(rec.State), []byte(state)) != 1 {
		return Pending{}, &StateError{Connection: name, Err: ErrStateUnknown}
	}
	if rec.Used {
		return Pending{}, &StateError{Connection: name, Err: ErrStateUsed}
	}
	if !s.now().Before(rec.Expiry) {
		return Pending{}, &StateError{Connection: name, Err: ErrStateExpired}
	}
	// Used before it is used: if the exchange fails, the person starts
	// again with a new state rather than retrying this one.
	if err := s.write(ctx, name, pendingRecord{State: rec.State, Expiry: rec.Expiry, Used: true}); err != nil {
		return Pending{}, err
	}
	return Pending{Connection: name, State: rec.State, Verifier: broker.Secret(rec.Verifier), RedirectURL: rec.RedirectURL, Expiry: rec.Expiry,
		Standby: rec.Standby, Scopes: rec.Scopes}, nil
}

func (s *PendingStore) write(ctx context.Context, connection string, rec pendingRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	secret := StateSecretName(connection)
	// The expiry goes on the secret too, so that the vault shows a stale
	// one as expired.
	if err := s.Store.Set(ctx, secret, broker.StoredSecret{Value: broker.Secret(b), ExpiresOn: rec.Expiry, UpdatedOn: s.now()}); err != nil {
		return &StoreError{Op: "write", Secret: secret, Err: err}
	}
	return nil
}

func (s *PendingStore) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}
