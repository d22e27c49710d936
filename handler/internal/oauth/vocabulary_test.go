package oauth_test

import (
	"context"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
)

// TestPermanenceIsTheCategorys: whether a failure is permanent is decided
// once, from its category in the broker's vocabulary, so a failure is
// never a rejection (424, a cool-down) while its category says it passes,
// nor retried while its category says it will not.
func TestPermanenceIsTheCategorys(t *testing.T) {
	tests := []struct {
		name      string
		reply     reply
		category  broker.Category
		permanent bool
		requests  int64 // with MaxAttempts 3 on a client_credentials connection
	}{
		// Entra's transient AADSTS50033 under invalid_grant: the code
		// alone made it permanent, while its category said transient.
		{"400 invalid_grant with a transient AADSTS", jsonReply(400, `{"error":"invalid_grant","error_description":"AADSTS50033: A transient error has occurred."}`),
			broker.CategoryTransient, false, 1},
		// An error carried by a success status, with a code the
		// vocabulary knows as permanent: retried three times before.
		{"200 access_denied", jsonReply(200, `{"error":"access_denied"}`), broker.CategoryFixConfiguration, true, 1},
		{"400 invalid_client", jsonReply(400, `{"error":"invalid_client"}`), broker.CategoryRotateClientSecret, true, 1},
		{"400 temporarily_unavailable", jsonReply(400, `{"error":"temporarily_unavailable"}`), broker.CategoryProviderOutage, false, 3},
		{"429", reply{status: 429}, broker.CategoryThrottled, false, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tokenURL, n := scripted(t, tt.reply)
			_, err := newClient(oauth.Options{}).Token(context.Background(), ccConn(tokenURL), creds(""))
			pe := asProviderError(t, err)
			if broker.Category(pe.Category) != tt.category || pe.Permanent != tt.permanent {
				t.Errorf("category %q permanent %v, want %q %v", pe.Category, pe.Permanent, tt.category, tt.permanent)
			}
			if pe.Permanent != broker.Category(pe.Category).Permanent() {
				t.Errorf("permanent %v, but category %q says %v", pe.Permanent, pe.Category, broker.Category(pe.Category).Permanent())
			}
			if n.Load() != tt.requests {
				t.Errorf("requests = %d, want %d", n.Load(), tt.requests)
			}
		})
	}
}
