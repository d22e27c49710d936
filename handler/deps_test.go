package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinaryDependencies keeps out of the shipped binary what tests use
// (the test provider, the Azurite launcher, chromedp) and what costs
// megabytes for nothing: text/template's reflection disables the linker's
// dead-method elimination (3 MB here), and azblob 1.8.1+ links Apache Arrow.
func TestBinaryDependencies(t *testing.T) {
	gotool, err := goTool()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(gotool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	for _, banned := range []string{
		"text/template",
		"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider",
		"github.com/tokenrefresher/tokenrefresher/handler/internal/azurite",
		"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault/kvtest",
		"github.com/chromedp/chromedp",
		"github.com/apache/arrow-go/v18/arrow",
		"testing",
	} {
		for _, d := range deps {
			if d == banned {
				t.Errorf("the handler binary links %s", banned)
			}
		}
	}
}
