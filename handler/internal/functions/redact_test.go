package functions

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/redact"
)

// TestAnswersAreRedacted: every answer but the token route's success has
// the registered secrets redacted, in any encoding, and stays JSON.
func TestAnswersAreRedacted(t *testing.T) {
	const secret = "cs_Zm9vYmFyYmF6+/=qux-0123456789"
	r := redact.New()
	r.Remember("leak-client-secret", secret)
	tests := []struct {
		name      string
		write     func(w http.ResponseWriter)
		wantJSON  bool
		wantShown bool // the secret is served on purpose
	}{
		{"an error quoting a provider", func(w http.ResponseWriter) {
			encodeError(w, &broker.Error{Code: broker.CodeRejected, Message: "token endpoint answered HTTP 401: bad secret " + url.QueryEscape(secret)})
		}, true, false},
		{"a status", func(w http.ResponseWriter) {
			encode(w, http.StatusOK, connectionsResponse{Connections: []broker.ConnectionStatus{{Name: "leak", NextAction: "secret " + secret}}})
		}, true, false},
		{"a consent page", func(w http.ResponseWriter) {
			consent.WritePage(w, http.StatusBadGateway, consent.Page{Title: "t", Message: "the provider said " + secret})
		}, false, false},
		{"the token served", func(w http.ResponseWriter) {
			writeToken(w, &tokenAnswers{}, "xero", broker.AccessToken{Value: secret, TokenType: "Bearer", Expiry: time.Now().Add(time.Hour)}, time.Now())
		}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			answering(slog.New(slog.DiscardHandler), time.Now, r, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { tt.write(w) })).
				ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
			body := rec.Body.String()
			shown := strings.Contains(body, secret[:redact.Window]) || strings.Contains(body, url.QueryEscape(secret)[10:10+redact.Window])
			if shown != tt.wantShown {
				t.Errorf("secret shown: %v, want %v: %s", shown, tt.wantShown, body)
			}
			if tt.wantJSON && !json.Valid(rec.Body.Bytes()) {
				t.Errorf("the answer is no longer JSON: %s", body)
			}
		})
	}
}
