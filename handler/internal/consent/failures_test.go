package consent_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
)

// TestAuthorizationURLMustBeHTTPS: the authorization URL, which the browser
// carries the state and the client id to, follows a connection's token
// endpoint to another host only under the token URL's rule: https, or http
// on this machine. A connection built without the connections file's
// checks gets an *EndpointError naming the URL refused.
func TestAuthorizationURLMustBeHTTPS(t *testing.T) {
	tests := []struct {
		name, tokenURL string
		want           string
		wantErr        error
	}{
		{"https elsewhere", "https://acme.my.salesforce.com/services/oauth2/token", "https://acme.my.salesforce.com/services/oauth2/authorize", nil},
		{"http on loopback", "http://127.0.0.1:8080/services/oauth2/token", "http://127.0.0.1:8080/services/oauth2/authorize", nil},
		{"http elsewhere", "http://acme.example.com/services/oauth2/token", "http://acme.example.com/services/oauth2/authorize", consent.ErrInsecureURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := broker.Connection{Name: "s", Provider: "salesforce", TokenURL: tt.tokenURL}
			got, err := consent.AuthorizationURL(c)
			if tt.wantErr == nil {
				if err != nil || got != tt.want {
					t.Fatalf("got %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			var ee *consent.EndpointError
			if !errors.Is(err, tt.wantErr) || !errors.As(err, &ee) || ee.URL != tt.want || got != "" {
				t.Fatalf("got %q, %v; want an *EndpointError on %q wrapping %v", got, err, tt.want, tt.wantErr)
			}
			if msg := err.Error(); !strings.Contains(msg, `connection "s"`) || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not name the connection and the URL refused", msg)
			}
		})
	}
}

// TestSaveWhenTheAccessTokenCannotBeWritten: the refresh token, written
// first, stays; the error names the access token's secret, wraps the
// store's error and repeats neither token.
func TestSaveWhenTheAccessTokenCannotBeWritten(t *testing.T) {
	c := broker.Connection{Name: "x", Secrets: broker.DefaultSecretNames("x")}
	issued := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tok := &broker.Token{AccessToken: "at-S3CRET", RefreshToken: "rt-S3CRET", Expiry: issued.Add(time.Hour), IssuedAt: issued}

	store := newRecordingStore()
	store.failSet["x-access-token"] = errStoreDown
	err := consent.Save(context.Background(), store, c, tok)
	var se *consent.StoreError
	if !errors.As(err, &se) || se.Op != "write" || se.Secret != "x-access-token" || !errors.Is(err, errStoreDown) {
		t.Fatalf("err = %v; want a *StoreError writing x-access-token, wrapping the store's error", err)
	}
	if rt := store.secrets["x-refresh-token"]; rt.Value.Reveal() != "rt-S3CRET" {
		t.Error("the refresh token was not kept when the access token failed")
	}
	if msg := err.Error(); !strings.Contains(msg, `"x-access-token"`) || strings.Contains(msg, "S3CRET") {
		t.Errorf("error %q: want the secret's name and no token", msg)
	}

	// No access token in the answer: the refresh token alone, no error.
	store = newRecordingStore()
	if err := consent.Save(context.Background(), store, c, &broker.Token{RefreshToken: "rt"}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"x-refresh-token"}; !slices.Equal(store.sets, want) {
		t.Errorf("writes %q, want %q", store.sets, want)
	}
}

// TestFailureTexts: what the consent's failures say names what the
// operator must act on: the connection, the secret, the cause.
func TestFailureTexts(t *testing.T) {
	tests := []struct {
		err  error
		want []string
	}{
		{&consent.MissingSecretError{Connection: "x", Secret: "x-client-secret", What: "client secret"},
			[]string{`connection "x"`, "client secret is missing", `secret "x-client-secret"`}},
		{&consent.StoreError{Op: "read", Secret: "x-client-id", Err: errStoreDown},
			[]string{`could not read secret "x-client-id"`, errStoreDown.Error()}},
		{&consent.StateError{Connection: "x", Err: consent.ErrStateForged},
			[]string{`connection "x": `, consent.ErrStateForged.Error()}},
		{&consent.StateError{Err: consent.ErrStateForged}, []string{consent.ErrStateForged.Error()}},
		{&consent.EndpointError{Connection: "g", Provider: "generic", Err: consent.ErrNoAuthorizationURL},
			[]string{`connection "g" (provider "generic")`, consent.ErrNoAuthorizationURL.Error()}},
	}
	for _, tt := range tests {
		msg := tt.err.Error()
		for _, w := range tt.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%T: %q does not contain %q", tt.err, msg, w)
			}
		}
	}
	if msg := (&consent.StateError{Err: consent.ErrStateForged}).Error(); msg != consent.ErrStateForged.Error() {
		t.Errorf("a state naming no connection reads %q; want the cause alone", msg)
	}
}
