package oauth_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
)

// TestUnusableSuccessAnswers covers the 200 answers TestExpiresIn and
// TestFaults leave out: each is a transient ErrMalformedResponse that says
// what was wrong, sent once on a rotating connection, and no token.
func TestUnusableSuccessAnswers(t *testing.T) {
	const form = "application/x-www-form-urlencoded"
	tests := []struct {
		name  string
		reply reply
		want  string // in the description
	}{
		{"expires_in below a second, form-encoded", reply{status: 200, contentType: form, body: "access_token=at-1&expires_in=0.5"}, "expires_in"},
		{"expires_in a tiny exponent, form-encoded", reply{status: 200, contentType: form, body: "access_token=at-1&expires_in=1e-10"}, "expires_in"},
		{"expires_in NaN, form-encoded", reply{status: 200, contentType: form, body: "access_token=at-1&expires_in=NaN"}, "expires_in"},
		{"expires_in infinite, form-encoded", reply{status: 200, contentType: form, body: "access_token=at-1&expires_in=%2BInf"}, "expires_in"},
		{"expires_in an exponent in JSON", jsonReply(200, `{"access_token":"at-1","expires_in":3.6e3}`), "expires_in"},
		{"expires_in an array", jsonReply(200, `{"access_token":"at-1","expires_in":[3600]}`), "expires_in"},
		{"byte order mark", jsonReply(200, "\uFEFF"+`{"access_token":"at-1","expires_in":60}`), "not a JSON object"},
		{"invalid UTF-8", jsonReply(200, "\xff\xfe\x00{"), "not a JSON object"},
		{"an array", jsonReply(200, `[{"access_token":"at-1","expires_in":60}]`), "not a JSON object"},
		{"null", jsonReply(200, `null`), "without an access_token"},
		{"empty", jsonReply(200, ``), "not a JSON object"},
		{"access_token nested", jsonReply(200, `{"access_token":{"value":"at-1"},"expires_in":60}`), "access_token"},
		{"access_token empty", jsonReply(200, `{"access_token":"","expires_in":60}`), "without an access_token"},
		{"two JSON objects", jsonReply(200, `{"access_token":"at-1","expires_in":60}{"x":1}`), "not a JSON object"},
		// Fail until oauth refuses access tokens outside RFC 6749 A.12's
		// VSCHAR (see the fuzz target's invariant): invalid UTF-8 is
		// decoded to U+FFFD and the mangled token served.
		{"access_token of invalid UTF-8", jsonReply(200, "{\"access_token\":\"at-\xff\xfe\",\"expires_in\":60}"), "access_token"},
		{"access_token with a line break", jsonReply(200, `{"access_token":"at-1\r\nX-Injected: 1","expires_in":60}`), "access_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tokenURL, n := scripted(t, tt.reply)
			tok, err := newClient(oauth.Options{}).Token(context.Background(), refreshConn(tokenURL, broker.AuthBasic, true, 0), creds("rt-old"))
			if tok != nil {
				t.Fatalf("a token from an unusable answer (expiry %v)", tok.Expiry)
			}
			pe := asProviderError(t, err)
			if !errors.Is(err, oauth.ErrMalformedResponse) || pe.Permanent || pe.StatusCode != 200 {
				t.Errorf("error = %+v, want a transient malformed-response error", pe)
			}
			if !strings.Contains(pe.Description, tt.want) {
				t.Errorf("description %q does not say %q", pe.Description, tt.want)
			}
			if n.Load() != 1 {
				t.Errorf("%d requests; a rotating refresh token is not sent again after an answer", n.Load())
			}
			if !pe.IssuedRefreshToken.IsZero() {
				t.Error("IssuedRefreshToken set from an answer without a refresh token")
			}
		})
	}
}

// TestIssuedTokensQuotedInAnErrorAreRedacted: a provider that quotes, in
// its error_description, a token it issued in the same answer gets it
// redacted like the credentials that were sent. Fails until classify adds
// the body's tokens to the secrets it redacts.
func TestIssuedTokensQuotedInAnErrorAreRedacted(t *testing.T) {
	const issued = "rt-issued-9c1e7f55"
	tests := []struct {
		name  string
		reply reply
	}{
		{"JSON 400", jsonReply(400, `{"error":"invalid_grant","error_description":"new refresh token `+issued+` was issued","refresh_token":"`+issued+`"}`)},
		{"JSON 200", jsonReply(200, `{"error":"invalid_grant","error_description":"token `+issued+`","access_token":"`+issued+`"}`)},
		{"form 401", reply{status: 401, contentType: "application/x-www-form-urlencoded",
			body: "error=invalid_client&error_description=see+" + issued + "&refresh_token=" + issued}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tokenURL, _ := scripted(t, tt.reply)
			_, err := newClient(oauth.Options{}).Token(context.Background(), refreshConn(tokenURL, broker.AuthBasic, true, 0), creds("rt-old"))
			pe := asProviderError(t, err)
			if strings.Contains(err.Error(), issued) || strings.Contains(pe.Description, issued) {
				t.Errorf("the error quotes a token from the answer: %q", strings.ReplaceAll(pe.Description, issued, "<LEAKED>"))
			} else if !strings.Contains(pe.Description, "[redacted]") {
				t.Errorf("description %q does not show where the token was", pe.Description)
			}
		})
	}
}
