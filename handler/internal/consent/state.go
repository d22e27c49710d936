package consent

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"time"
)

// A signed state is "<connection>.<payload>", the payload the unpadded
// base32 of expiry (8 bytes, Unix seconds) | nonce (16) | MAC (16): 64
// characters, a shape ConnectionOfState accepts. The MAC is HMAC-SHA-256,
// cut to 128 bits, over the connection's name, the expiry and the nonce,
// under a key derived from the caller's (StateKey). So the anonymous
// callback can tell a state this app issued, for this connection and not
// yet expired, from anything else with no I/O at all: only then does it
// read the pending authorization from the store, which makes the state
// single-use.
const (
	stateExpiryLen = 8
	stateNonceLen  = 16
	stateMACLen    = 16
	statePayload   = stateExpiryLen + stateNonceLen + stateMACLen
)

var stateEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// ErrStateForged: the state is not one this app signed, for the connection
// it names, or it has expired. The callback answers it exactly as it
// answers an unknown or used state.
var ErrStateForged = errors.New("the state is not one this app issued, or it has expired")

// StateKey derives the state-signing key from key material the app already
// keeps (the write-ahead key, broker.StoredKey): HMAC with a label of its
// own, so the two uses never share a key.
func StateKey(material []byte) []byte {
	m := hmac.New(sha256.New, material)
	m.Write([]byte("tokenrefresher consent state v1"))
	return m.Sum(nil)
}

// NewSignedPending is NewPending with a state signed under key (StateKey),
// expiring with the pending authorization.
func NewSignedPending(key []byte, connection, redirectURL string, now time.Time) Pending {
	p := NewPending(connection, redirectURL, now)
	p.State = signState(key, connection, p.Expiry)
	return p
}

func signState(key []byte, connection string, expiry time.Time) string {
	var b [statePayload]byte
	binary.BigEndian.PutUint64(b[:stateExpiryLen], uint64(expiry.Unix())) // #nosec G115 -- a time after 1970
	_, _ = rand.Read(b[stateExpiryLen : stateExpiryLen+stateNonceLen])    // never fails (crypto/rand)
	copy(b[stateExpiryLen+stateNonceLen:], stateMAC(key, connection, b[:stateExpiryLen+stateNonceLen]))
	return connection + "." + stateEncoding.EncodeToString(b[:])
}

func stateMAC(key []byte, connection string, expiryAndNonce []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(connection))
	m.Write([]byte{0})
	m.Write(expiryAndNonce)
	return m.Sum(nil)[:stateMACLen]
}

// VerifyState returns the connection a state names when key signed it for
// that connection and it has not expired at now; otherwise ErrStateForged.
// It does no I/O.
func VerifyState(key []byte, state string, now time.Time) (string, error) {
	name, ok := ConnectionOfState(state)
	if !ok || len(key) == 0 {
		return "", ErrStateForged
	}
	b, err := stateEncoding.DecodeString(state[len(name)+1:])
	if err != nil || len(b) != statePayload {
		return "", ErrStateForged
	}
	signed, mac := b[:stateExpiryLen+stateNonceLen], b[stateExpiryLen+stateNonceLen:]
	if !hmac.Equal(mac, stateMAC(key, name, signed)) {
		return "", ErrStateForged
	}
	expiry := time.Unix(int64(binary.BigEndian.Uint64(signed[:stateExpiryLen])), 0) // #nosec G115 -- signed by us
	if !now.Before(expiry) {
		return "", ErrStateForged
	}
	return name, nil
}

// TicketKey derives the key that signs consent links' tickets (SignLink), as StateKey the one
// that signs states: a ticket is never a valid state, nor the reverse.
func TicketKey(material []byte) []byte {
	m := hmac.New(sha256.New, material)
	m.Write([]byte("tokenrefresher consent ticket v1"))
	return m.Sum(nil)
}
