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

// TestExchangeSanitizesWhatAPersonReads: the code exchange's failure is
// shown to the person at the browser, so its description is redacted by
// look too (a token-shaped run the request did not carry), here in the one
// token client rather than in its caller (issue 15, one token client).
func TestExchangeSanitizesWhatAPersonReads(t *testing.T) {
	const unknown = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRoYXQtd2FzLW5ldmVyLXNlbnQ"
	tokenURL, _ := scripted(t, jsonReply(400, `{"error":"invalid_grant","error_description":"code belongs to `+unknown+`"}`))
	_, err := newClient(oauth.Options{MaxAttempts: 1}).Exchange(context.Background(),
		refreshConn(tokenURL, broker.AuthBody, true, 0), creds(""), "code-1", "verifier-1", "http://127.0.0.1:1/cb")
	pe := asProviderError(t, err)
	if strings.Contains(err.Error(), unknown) || !strings.Contains(pe.Description, "[redacted]") {
		t.Fatalf("description %q; want the token-shaped run redacted", pe.Description)
	}
}

// TestCheckExchangeSendsNothing: what the exchange would refuse is refused
// beforehand, reserved parameters included, with no request.
func TestCheckExchangeSendsNothing(t *testing.T) {
	tests := []struct {
		name string
		conn *broker.Connection
		cred broker.Credentials
	}{
		{"no auth style", &broker.Connection{Name: "c", TokenURL: "https://id.example.com/token"}, creds("")},
		{"no client id", &broker.Connection{Name: "c", TokenURL: "https://id.example.com/token", AuthStyle: broker.AuthBody}, broker.Credentials{}},
		{"http off this machine", &broker.Connection{Name: "c", TokenURL: "http://id.example.com/token", AuthStyle: broker.AuthBody}, creds("")},
		{"a parameter the exchange sets", &broker.Connection{Name: "c", TokenURL: "https://id.example.com/token", AuthStyle: broker.AuthBody,
			Params: map[string]string{"code_verifier": "x"}}, creds("")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := oauth.CheckExchange(tt.conn, tt.cred); !errors.Is(err, oauth.ErrInvalidConnection) {
				t.Fatalf("err = %v; want ErrInvalidConnection", err)
			}
		})
	}
	ok := &broker.Connection{Name: "c", TokenURL: "https://id.example.com/token", AuthStyle: broker.AuthBasic}
	if err := oauth.CheckExchange(ok, creds("")); err != nil {
		t.Fatalf("a usable connection: %v", err)
	}
}

// TestReservedParamsAreNeverSent: every field a grant sets itself is
// refused in a connection's params, in any case and on every grant, with
// nothing sent. Before, the token client knew 8 of the 13 names, and only
// in lower case.
func TestReservedParamsAreNeverSent(t *testing.T) {
	for _, p := range []string{"username", "password", "assertion", "client_assertion", "client_assertion_type", "Scope", "GRANT_TYPE"} {
		tokenURL, sent := scripted(t, jsonReply(200, `{"access_token":"at-1","expires_in":3600}`))
		conn := ccConn(tokenURL)
		conn.Params = map[string]string{p: "x"}
		if _, err := newClient(oauth.Options{MaxAttempts: 1}).Token(context.Background(), conn, creds("")); !errors.Is(err, oauth.ErrInvalidConnection) {
			t.Errorf("param %q: err = %v; want ErrInvalidConnection", p, err)
		}
		if n := sent.Load(); n != 0 {
			t.Errorf("param %q: %d requests sent", p, n)
		}
	}
}
