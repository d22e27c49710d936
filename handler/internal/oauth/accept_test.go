package oauth_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
)

// TestEveryGrantChecksWhatItAccepts: the refresh, client-credentials and
// code-exchange requests refuse the same unusable tokens (issue 16 §5).
// Before, a refresh token with CR/LF passed on every path.
func TestEveryGrantChecksWhatItAccepts(t *testing.T) {
	bodies := []struct{ name, body, want string }{
		{"refresh token with CR LF", `{"access_token":"at-1","refresh_token":"rt-2\r\nx","expires_in":3600}`, "refresh_token"},
		{"access token with LF", `{"access_token":"at-1\nx","refresh_token":"rt-2","expires_in":3600}`, "access_token"},
		{"expiring in 2094", `{"access_token":"at-1","refresh_token":"rt-2","expires_in":2208988800}`, "expires_in"},
		{"token type with a control character", `{"access_token":"at-1","refresh_token":"rt-2","expires_in":60,"token_type":"Bearer\u0000"}`, "token_type"},
	}
	for _, b := range bodies {
		tokenURL, _ := scripted(t, jsonReply(200, b.body), jsonReply(200, b.body), jsonReply(200, b.body), jsonReply(200, b.body))
		for name, run := range map[string]func(c *oauth.Client) (*broker.Token, error){
			"refresh": func(c *oauth.Client) (*broker.Token, error) {
				return c.Token(context.Background(), refreshConn(tokenURL, broker.AuthBasic, false, 0), creds("rt-1"))
			},
			"client credentials": func(c *oauth.Client) (*broker.Token, error) {
				return c.Token(context.Background(), ccConn(tokenURL), creds(""))
			},
			"code exchange": func(c *oauth.Client) (*broker.Token, error) {
				return c.Exchange(context.Background(), refreshConn(tokenURL, broker.AuthBody, true, 0), creds(""), "code-1", "verifier-1", "http://127.0.0.1:1/cb")
			},
		} {
			t.Run(b.name+"/"+name, func(t *testing.T) {
				tok, err := run(newClient(oauth.Options{MaxAttempts: 1}))
				if tok != nil || !errors.Is(err, oauth.ErrMalformedResponse) || !strings.Contains(err.Error(), b.want) {
					t.Fatalf("got %+v, %v; want oauth.ErrMalformedResponse naming %s", tok, err, b.want)
				}
				if pe := asProviderError(t, err); strings.ContainsAny(pe.IssuedRefreshToken.Reveal(), "\r\n") {
					t.Error("a refresh token with CR/LF is handed back to be stored")
				}
			})
		}
	}
}
