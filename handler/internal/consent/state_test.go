package consent_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
)

var (
	stateMaterial = []byte("the write-ahead key's material, 32 bytes")
	stateNow      = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
)

// TestSignedStateVerifies: a state NewSignedPending issues names its
// connection, has the shape the callback checks before any lookup, and
// verifies under the same key until the pending authorization expires.
func TestSignedStateVerifies(t *testing.T) {
	key := consent.StateKey(stateMaterial)
	p := consent.NewSignedPending(key, "xero", "https://app.example/api/consent/callback", stateNow)
	if p.Connection != "xero" || p.Verifier == "" || !p.Expiry.Equal(stateNow.Add(consent.PendingTTL)) {
		t.Fatalf("pending = %+v", p)
	}
	if name, ok := consent.ConnectionOfState(p.State); !ok || name != "xero" {
		t.Fatalf("ConnectionOfState(%q) = %q, %v; want xero", p.State, name, ok)
	}
	for _, at := range []time.Time{stateNow, p.Expiry.Add(-time.Second)} {
		if name, err := consent.VerifyState(key, p.State, at); err != nil || name != "xero" {
			t.Errorf("VerifyState at %v = %q, %v; want xero", at, name, err)
		}
	}
	if again := consent.NewSignedPending(key, "xero", "", stateNow); again.State == p.State {
		t.Error("two states for one connection and instant are equal: the nonce is missing")
	}
}

// TestForgedStatesAreRefused: whatever was changed about a signed state, or
// whatever key checks it, VerifyState answers ErrStateForged, and never
// the connection.
func TestForgedStatesAreRefused(t *testing.T) {
	key := consent.StateKey(stateMaterial)
	state := consent.NewSignedPending(key, "xero", "", stateNow).State
	name, payload, _ := strings.Cut(state, ".")

	tests := []struct {
		name  string
		key   []byte
		state string
		at    time.Time
	}{
		{"expired", key, state, stateNow.Add(consent.PendingTTL)},
		{"long expired", key, state, stateNow.Add(24 * time.Hour)},
		{"another key", consent.StateKey([]byte("other material")), state, stateNow},
		{"the material itself as key", stateMaterial, state, stateNow},
		{"no key", nil, state, stateNow},
		{"another connection's name", key, "graph." + payload, stateNow},
		{"a longer name", key, name + "x." + payload, stateNow},
		{"payload cut short", key, state[:len(state)-8], stateNow},
		{"payload not base32", key, name + "." + strings.Repeat("1", len(payload)), stateNow},
		{"an unsigned state of the right shape", key, consent.NewPending("xero", "", stateNow).State, stateNow},
		{"no name", key, "." + payload, stateNow},
		{"empty", key, "", stateNow},
	}
	// Every single character of the payload changed.
	for i := range len(payload) {
		b := []byte(payload)
		b[i] = flip(b[i])
		tests = append(tests, struct {
			name  string
			key   []byte
			state string
			at    time.Time
		}{"payload character changed", key, name + "." + string(b), stateNow})
	}
	for _, tt := range tests {
		got, err := consent.VerifyState(tt.key, tt.state, tt.at)
		if !errors.Is(err, consent.ErrStateForged) || got != "" {
			t.Errorf("%s: VerifyState(%q) = %q, %v; want ErrStateForged", tt.name, tt.state, got, err)
		}
	}
}

// flip returns another character of the base32 alphabet.
func flip(c byte) byte {
	if c == 'A' {
		return 'B'
	}
	return 'A'
}

// TestTicketsAndStatesAreKeptApart: a consent link's ticket verifies under
// the ticket key for its lifetime and no longer, and neither a ticket nor a state
// passes for the other, although both come from the same material.
func TestTicketsAndStatesAreKeptApart(t *testing.T) {
	stateKey, ticketKey := consent.StateKey(stateMaterial), consent.TicketKey(stateMaterial)
	if bytes.Equal(stateKey, ticketKey) || bytes.Equal(stateKey, stateMaterial) || bytes.Equal(ticketKey, stateMaterial) {
		t.Fatal("the state key, the ticket key and their material are not three different keys")
	}
	if !bytes.Equal(stateKey, consent.StateKey(stateMaterial)) || !bytes.Equal(ticketKey, consent.TicketKey(stateMaterial)) {
		t.Fatal("a key derived twice from the same material differs: instances would refuse each other's states")
	}

	ticket, expiry, err := consent.SignLink(ticketKey, "xero", stateNow, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if name, until, err := consent.VerifyLink(ticketKey, ticket, stateNow.Add(time.Hour-time.Second)); err != nil || name != "xero" || !until.Equal(expiry) {
		t.Errorf("ticket within its TTL: %q, %v, %v; want xero until %v", name, until, err, expiry)
	}
	if _, err := consent.VerifyState(ticketKey, ticket, stateNow.Add(time.Hour)); !errors.Is(err, consent.ErrStateForged) {
		t.Errorf("ticket at its TTL: %v; want ErrStateForged", err)
	}
	if _, err := consent.VerifyState(stateKey, ticket, stateNow); !errors.Is(err, consent.ErrStateForged) {
		t.Errorf("ticket checked as a state: %v; want ErrStateForged", err)
	}
	state := consent.NewSignedPending(stateKey, "xero", "", stateNow).State
	if _, err := consent.VerifyState(ticketKey, state, stateNow); !errors.Is(err, consent.ErrStateForged) {
		t.Errorf("state checked as a ticket: %v; want ErrStateForged", err)
	}
}
