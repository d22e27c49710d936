package broker

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestRecordOpensOnlyAsSealed: a write-ahead record opens to what was
// sealed, under the key and for the connection it was sealed with; any
// other key, connection or changed byte is a *RecordError that says which,
// and never carries the token.
func TestRecordOpensOnlyAsSealed(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	const token = "rt-S3CRET-next"
	base := hashToken("rt-previous")
	rec := writeAheadRecord{RefreshToken: token, IssuedAt: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), Instance: "i-1"}
	raw, err := sealRecord(key, "xero", base, rec)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(token)) {
		t.Fatal("the sealed record holds the token in the clear")
	}
	if got, ok := recordBase(raw); !ok || got != base {
		t.Fatalf("recordBase = %x, %v; want %x", got, ok, base)
	}
	got, err := openRecord(key, "xero", raw)
	if err != nil || got != rec {
		t.Fatalf("openRecord = %+v, %v; want %+v", got, err, rec)
	}

	changed := func(i int) []byte {
		b := bytes.Clone(raw)
		b[i] ^= 0x01
		return b
	}
	empty, err := sealRecord(key, "xero", base, writeAheadRecord{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		key        []byte
		connection string
		raw        []byte
		reason     string
	}{
		{"no key", nil, "xero", raw, "no key"},
		{"another key", bytes.Repeat([]byte{8}, 32), "xero", raw, "another key"},
		{"another connection", key, "graph", raw, "failed authentication"},
		{"magic changed", key, "xero", changed(0), "malformed"},
		{"key id changed", key, "xero", changed(6), "another key"},
		{"base changed", key, "xero", changed(6 + hashLen), "failed authentication"},
		{"nonce changed", key, "xero", changed(headerLen), "failed authentication"},
		{"ciphertext changed", key, "xero", changed(len(raw) - 1), "failed authentication"},
		{"header only", key, "xero", raw[:headerLen], "malformed"},
		{"too short for a header", key, "xero", raw[:headerLen-1], "malformed"},
		{"nothing", key, "xero", nil, "malformed"},
		{"sealed without a token", key, "xero", empty, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := openRecord(tt.key, tt.connection, tt.raw)
			var re *RecordError
			if !errors.As(err, &re) || re.Connection != tt.connection || !strings.Contains(re.Reason, tt.reason) {
				t.Fatalf("openRecord = %v; want a *RecordError of %q, %q", err, tt.connection, tt.reason)
			}
			if got.RefreshToken != "" {
				t.Error("a refused record handed out its token")
			}
			if msg := err.Error(); strings.Contains(msg, token) || !strings.Contains(msg, tt.connection) {
				t.Errorf("error %q: want the connection named and no token", msg)
			}
		})
	}
}

// TestRecordErrorWrapsItsCause: a RecordError with a cause says it and
// unwraps to it.
func TestRecordErrorWrapsItsCause(t *testing.T) {
	cause := errors.New("blob gone")
	err := error(&RecordError{Connection: "xero", Reason: "unreadable", Err: cause})
	if !errors.Is(err, cause) || err.Error() != `write-ahead record of "xero": unreadable: blob gone` {
		t.Errorf("%v; want the connection, the reason and the cause, unwrapping to it", err)
	}
}
