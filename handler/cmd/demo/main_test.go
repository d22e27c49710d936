package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDemoRunsToTheEnd runs `make demo` as it is: the real handler binary,
// built here, against the test provider. It must hold every promise and
// show the failure and recovery scene: a revoked grant answered 424 with
// a remediation, a consent through `handler consent-link` and the
// provider's page, and the same request answered 200 again.
func TestDemoRunsToTheEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the handler binary")
	}
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go command to build the handler")
	}
	bin := filepath.Join(t.TempDir(), "handler")
	if b, err := exec.Command(gotool, "build", "-o", bin, "../..").CombinedOutput(); err != nil {
		t.Fatalf("go build the handler: %v\n%s", err, b)
	}
	var buf bytes.Buffer
	out = &buf
	t.Cleanup(func() { out = os.Stdout })
	if err := run(bin, false); err != nil {
		t.Fatalf("the demo failed: %v\n%s", err, buf.String())
	}
	printed := buf.String()
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^==> 4a\. GET /api/token/erp-demo -> 424 provider_rejected; token-endpoint calls: 1\n    message: .*invalid_grant.*\n    remediation: .*re-authorize.*"erp-demo-refresh-token"`),
		regexp.MustCompile(`(?m)^==>     GET /api/connections/erp-demo -> state "needs_reauthorization"`),
		regexp.MustCompile(`(?m)^==> \$ handler consent-link erp-demo -expires 10m\n    Send this address`),
		regexp.MustCompile(`(?m)^==> 4c\. The link's page, button Continue \(POST\) -> 303 to the provider's consent page http://127\.0\.0\.1:\d+/authorize$`),
		regexp.MustCompile(`(?m)^==> 4d\. .* -> 200: the new refresh token is stored in secret "erp-demo-refresh-token"`),
		regexp.MustCompile(`(?m)^==> 4e\. GET /api/token/erp-demo -> 200, .*state "healthy": healthy again`),
		regexp.MustCompile(`(?m)^==> all promises held$`),
	} {
		if !want.MatchString(printed) {
			t.Errorf("the demo printed no line matching %s", want)
		}
	}
	if strings.Contains(printed, "[redacted]") {
		t.Errorf("the demo's output has redacted pieces of public values (a non-secret registered with the redactor):\n%s", printed)
	}
	if t.Failed() {
		t.Logf("the demo printed:\n%s", printed)
	}
}
