package broker

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestREADMEQuotesTheMinValidityError: the README quotes the 400 a
// minValidity beyond the provider's token lifetime gets, in the demo's
// output and in the troubleshooting table. Both must be the handler's text
// (they once quoted an older wording the handler no longer writes).
func TestREADMEQuotesTheMinValidityError(t *testing.T) {
	b, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	msg := lifetimeError("x", 7200*time.Second, 1800*time.Second).Message
	if n := strings.Count(readme, msg); n < 2 {
		t.Errorf("README.md quotes %q %d time(s); want it in the demo's output and in the troubleshooting table", msg, n)
	}
	for _, line := range strings.Split(readme, "\n") {
		if strings.Contains(line, "minValidity 7200s") && !strings.Contains(line, msg) {
			t.Errorf("README.md quotes a minValidity error the handler does not write: %s", line)
		}
	}
}
