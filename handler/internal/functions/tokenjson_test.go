package functions

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// stdTokenJSON is the answer as encoding/json writes it: what the token
// route sent before appendTokenResponse, and what it must still send.
func stdTokenJSON(t testing.TB, accessToken, tokenType string, expiresIn int64, expiry time.Time) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(tokenResponse{AccessToken: accessToken, TokenType: tokenType,
		ExpiresIn: expiresIn, ExpiresOn: expiry.UTC().Format(time.RFC3339)}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestTokenResponseEncoding: the hand encoder writes what encoding/json
// writes, for every class of byte a provider could put in a token.
func TestTokenResponseEncoding(t *testing.T) {
	var allBytes strings.Builder
	for c := range 256 {
		allBytes.WriteByte(byte(c))
	}
	expiry := time.Date(2026, 11, 23, 4, 0, 0, 0, time.UTC)
	tests := []struct {
		name, token, tokenType string
		expiresIn              int64
		expiry                 time.Time
	}{
		{"jwt", "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln-_", "Bearer", 3599, expiry},
		{"empty", "", "", 0, expiry},
		{"quote and backslash", `a"b\c\"`, "Bearer", 1, expiry},
		{"named escapes", "\b\f\n\r\t", "Bearer", 1, expiry},
		{"other control characters", "\x00\x01\x1f\x0b\x7f", "Bearer", 1, expiry},
		{"HTML", "<script>&amp;</script>", "Bear<er>", 1, expiry},
		{"every byte", allBytes.String(), "Bearer", 1, expiry},
		{"invalid UTF-8", "a\xffb\xc3(\xe2\x82\xf0\x9f\x98", "Bearer", 1, expiry},
		{"truncated rune at the end", "token\xe2\x82", "Bearer", 1, expiry},
		{"line and paragraph separators", "a\u2028b\u2029c\u2027\u202a", "Bearer", 1, expiry},
		{"multi-byte", "héllo 世界 🙂 \uFFFD", "Bearer", 1, expiry},
		{"surrogate halves as bytes", "\xed\xa0\x80\xed\xbf\xbf", "Bearer", 1, expiry},
		{"long", strings.Repeat("x<\"", 10000), "Bearer", 1, expiry},
		{"negative expires_in", "t", "Bearer", -5, expiry},
		{"extreme expires_in", "t", "Bearer", math.MinInt64, expiry},
		{"max expires_in", "t", "Bearer", math.MaxInt64, expiry},
		{"expiry in another zone", "t", "Bearer", 1, time.Date(2026, 11, 23, 5, 0, 0, 123456789, time.FixedZone("CET", 3600))},
		{"zero expiry", "t", "Bearer", 1, time.Time{}},
		{"year beyond 9999", "t", "Bearer", 1, time.Date(12026, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"negative year", "t", "Bearer", 1, time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := stdTokenJSON(t, tt.token, tt.tokenType, tt.expiresIn, tt.expiry)
			got := appendTokenResponse([]byte("prefix"), tt.token, tt.tokenType, tt.expiresIn, tt.expiry)
			if !bytes.HasPrefix(got, []byte("prefix")) || !bytes.Equal(got[len("prefix"):], want) {
				t.Errorf("appendTokenResponse wrote\n%q\nencoding/json writes\n%q", got, want)
			}
		})
	}
}

// FuzzTokenResponseEncoding holds appendTokenResponse to encoding/json for
// any token, token type, lifetime and expiry.
func FuzzTokenResponseEncoding(f *testing.F) {
	f.Add("eyJ0eXAi.x.y", "Bearer", int64(3599), int64(1795000000), int64(0))
	f.Add("a\"\\<>&\u2028\xff\x00", "b\u2029", int64(-1), int64(-62135596800), int64(999999999))
	f.Add("\xed\xa0\x80", "", int64(math.MaxInt64), int64(253402300799), int64(1))
	f.Fuzz(func(t *testing.T, token, tokenType string, expiresIn, unix, nanos int64) {
		expiry := time.Unix(unix, nanos)
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(tokenResponse{AccessToken: token, TokenType: tokenType,
			ExpiresIn: expiresIn, ExpiresOn: expiry.UTC().Format(time.RFC3339)}); err != nil {
			t.Skip() // not a case encoding/json can write either
		}
		if got := appendTokenResponse(nil, token, tokenType, expiresIn, expiry); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("appendTokenResponse wrote\n%q\nencoding/json writes\n%q", got, want.Bytes())
		}
	})
}

// TestInvocationIDHeaderIsCanonical: the request log reads the header by
// its canonical key, which Get then finds without canonicalizing it.
func TestInvocationIDHeaderIsCanonical(t *testing.T) {
	if got := http.CanonicalHeaderKey("X-Azure-Functions-InvocationId"); got != invocationIDHeader {
		t.Errorf("canonical key %q, the log reads %q", got, invocationIDHeader)
	}
}

// TestTokenAnswerFollowsTheToken: each connection's answer is worked out
// once per token (tokenAnswers), so it must be made again whenever the
// token the broker hands over differs in any way: an answer kept for an
// old token would serve that token.
func TestTokenAnswerFollowsTheToken(t *testing.T) {
	at := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	// Strings built at run time, so that equal values do not share
	// their bytes as constants would.
	fresh := func(s string) string { return strings.Clone(s) }
	steps := []struct {
		name       string
		connection string
		token      string
		tokenType  string
		expiry     time.Time
	}{
		{"first token", "xero", fresh("eyJhbGciOi.first"), "Bearer", at.Add(time.Hour)},
		{"the same token again", "xero", fresh("eyJhbGciOi.first"), "Bearer", at.Add(time.Hour)},
		{"a new token, same expiry", "xero", fresh("eyJhbGciOi.second"), "Bearer", at.Add(time.Hour)},
		{"the same token, a new expiry", "xero", fresh("eyJhbGciOi.second"), "Bearer", at.Add(2 * time.Hour)},
		{"the same token, another type", "xero", fresh("eyJhbGciOi.second"), "bearer", at.Add(2 * time.Hour)},
		{"another connection", "sf", fresh("00D.opaque!token"), "Bearer", at.Add(time.Hour)},
		{"a token JSON escapes", "sf", fresh("a<b>&\"c\\\u2028\xff"), "Bearer", at.Add(time.Hour)},
		{"the first connection is unchanged", "xero", fresh("eyJhbGciOi.second"), "bearer", at.Add(2 * time.Hour)},
	}
	var answers tokenAnswers
	for _, s := range steps {
		tok := broker.AccessToken{Value: broker.Secret(s.token), TokenType: s.tokenType, Expiry: s.expiry}
		rec := httptest.NewRecorder()
		writeToken(rec, &answers, s.connection, tok, at)
		want := stdTokenJSON(t, s.token, s.tokenType, int64(s.expiry.Sub(at)/time.Second), s.expiry)
		if !bytes.Equal(rec.Body.Bytes(), want) {
			t.Errorf("%s: answered\n%q\nwant\n%q", s.name, rec.Body.Bytes(), want)
		}
	}
}
