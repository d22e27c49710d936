package consent_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
)

// TestExchangeChecksTokensAsRefreshDoes: what the code exchange stores is
// checked as package oauth checks every token it accepts (issue 16 §5).
// Before, the exchange stored whatever the provider sent.
func TestExchangeChecksTokensAsRefreshDoes(t *testing.T) {
	tests := []struct {
		name, body string
		want       string // in the error; "" means accepted
	}{
		{"refresh token with CR LF", `{"access_token":"at-1","refresh_token":"rt-1\r\nSet-Cookie: x","expires_in":3600}`, "refresh_token"},
		{"refresh token with a control character", `{"access_token":"at-1","refresh_token":"rt-1\u0007","expires_in":3600}`, "refresh_token"},
		{"access token with LF", `{"access_token":"at-1\nX-Injected: 1","refresh_token":"rt-1","expires_in":3600}`, "access_token"},
		{"access token expiring in 2094", `{"access_token":"at-1","refresh_token":"rt-1","expires_in":2208988800}`, "expires_in"},
		{"expires_in a string that is no number", `{"access_token":"at-1","refresh_token":"rt-1","expires_in":"soon"}`, "expires_in"},
		{"token type with CR", `{"access_token":"at-1","refresh_token":"rt-1","expires_in":3600,"token_type":"Bearer\r"}`, "token_type"},
		{"a good answer", `{"access_token":"at-1","refresh_token":"rt-1","expires_in":3600,"token_type":"Bearer"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &consent.Flow{
				Connection: broker.Connection{Name: "demo", TokenURL: tokenEndpoint(t, 200, tt.body), AuthStyle: broker.AuthBody},
				ClientID:   clientID, ClientSecret: clientSecret, RedirectURL: "http://127.0.0.1:1/callback",
			}
			tok, err := f.Exchange(context.Background(), "code-1", consent.NewVerifier())
			if tt.want == "" {
				if err != nil || tok.Expiry.Sub(tok.IssuedAt) != time.Hour {
					t.Fatalf("got %+v, %v; want the token, valid an hour", tok, err)
				}
				return
			}
			var ee *consent.ExchangeError
			if !errors.As(err, &ee) || tok != nil || !errors.Is(err, oauth.ErrMalformedResponse) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, %v; want an *ExchangeError wrapping oauth.ErrMalformedResponse naming %s", tok, err, tt.want)
			}
		})
	}
}
