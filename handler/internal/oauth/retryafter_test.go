package oauth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// inProcess serves each request with h in the caller's goroutine: no
// socket, so in a synctest bubble every wait of the client is on the
// bubble's clock, and a loaded machine cannot stretch a measured delay.
type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// TestRetryAfterOnTheClock: a 429's Retry-After is waited out exactly when
// it fits the call's budget, and ends the call at once when it does not.
// Time is synctest's, so the durations are exact.
func TestRetryAfterOnTheClock(t *testing.T) {
	const tokenURL = "http://127.0.0.1/token" // never dialled: inProcess serves it
	tests := []struct {
		name       string
		rotate     bool
		retryAfter time.Duration
		timeout    time.Duration
		wantWait   time.Duration
		wantCalls  int
		wantStatus int // 0: success
	}{
		{"honoured", true, time.Second, 0, time.Second, 2, 0},
		{"beyond the budget", false, 3 * time.Second, time.Second, 0, 1, http.StatusTooManyRequests},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := testprovider.New(testprovider.Config{ClientID: clientID, ClientSecret: clientSecret, AuthStyle: broker.AuthBasic, Rotate: tt.rotate})
				conn, secrets := ccConn(tokenURL), creds("")
				if tt.rotate {
					conn, secrets = refreshConn(tokenURL, broker.AuthBasic, true, 0), creds(p.IssueRefreshToken())
				}
				p.InjectFault(testprovider.Fault{Kind: testprovider.FaultRateLimited, RetryAfter: tt.retryAfter})
				c := newClient(oauth.Options{Timeout: tt.timeout, Transport: inProcess{p}})

				began := time.Now()
				_, err := c.Token(context.Background(), conn, secrets)
				waited := time.Since(began)

				if tt.wantStatus == 0 && err != nil {
					t.Fatal(err)
				}
				if tt.wantStatus != 0 {
					pe := asProviderError(t, err)
					if pe.StatusCode != tt.wantStatus || pe.RetryAfter != tt.retryAfter || pe.Permanent {
						t.Errorf("error = %+v, want %d carrying RetryAfter %v", pe, tt.wantStatus, tt.retryAfter)
					}
				}
				if waited != tt.wantWait {
					t.Errorf("the call took %v, want %v", waited, tt.wantWait)
				}
				if n := p.Stats().TokenRequests; n != tt.wantCalls {
					t.Errorf("token requests = %d, want %d", n, tt.wantCalls)
				}
			})
		})
	}
}
