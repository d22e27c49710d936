package broker_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// TestBrokerImportsOnlyTheStandardLibrary enforces the boundary DESIGN.md
// draws around the broker: it knows providers, stores and the platform
// only through its ports (ports.go), so nothing it builds on, directly or
// through another package, is ours or a third party's, except
// golang.org/x/sync (singleflight). Test files are not counted: go list
// -deps without -test lists the package as it is built into the handler.
func TestBrokerImportsOnlyTheStandardLibrary(t *testing.T) {
	// go test puts its own go first on PATH.
	out, err := exec.Command("go", "list", "-deps", "-json=ImportPath,Standard,Error", ".").Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("go list -deps .: %v\n%s", err, exit.Stderr)
		}
		t.Fatalf("go list -deps .: %v", err)
	}
	self, deps := listed(t, out)
	if self == "" {
		t.Fatal("go list listed no packages")
	}
	var outside []string
	for _, p := range deps {
		switch {
		case p.Standard, p.ImportPath == self:
		case p.ImportPath == "golang.org/x/sync" || strings.HasPrefix(p.ImportPath, "golang.org/x/sync/"):
		default:
			outside = append(outside, p.ImportPath)
		}
	}
	if len(outside) > 0 {
		t.Errorf("%s depends on %s; it may depend only on the standard library and golang.org/x/sync: "+
			"reach other code through a port (ports.go) that the caller implements", self, strings.Join(outside, ", "))
	}
}

type listedPackage struct {
	ImportPath string
	Standard   bool
	Error      *struct{ Err string }
}

// listed decodes go list -json's stream of objects; the last one is the
// package listed itself (-deps lists dependencies first).
func listed(t *testing.T, out []byte) (self string, deps []listedPackage) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list's output: %v", err)
		}
		if p.Error != nil {
			t.Fatalf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		deps = append(deps, p)
		self = p.ImportPath
	}
	return self, deps
}
