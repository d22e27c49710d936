package azurite

import (
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// TestWithoutAzurite runs this package's tests again, in a child where
// Azurite cannot be found (no AZURITE_BIN, no AZURITE_BLOB_ENDPOINT, a
// working directory outside any module, so no .tools, and an empty PATH),
// as plain `go test ./...` runs them on a machine where `make` never
// installed it. Without CI they must all pass or skip, saying how to run
// them; with CI=true the run must fail.
func TestWithoutAzurite(t *testing.T) {
	if os.Getenv("AZURITE_TEST_CHILD") == "1" {
		t.Skip("already the child")
	}
	t.Parallel()
	tests := []struct {
		name     string
		ci       string
		wantFail bool
	}{
		{"developer machine: skip with a how-to", "", false},
		{"CI=true: fail", "true", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.v", "-test.count=1", "-test.run=^Test")
			cmd.Dir = t.TempDir()
			cmd.Env = []string{"PATH=" + t.TempDir(), "HOME=" + t.TempDir(), "TMPDIR=" + os.TempDir(),
				"AZURITE_TEST_CHILD=1", "CI=" + tt.ci}
			out, err := cmd.CombinedOutput()
			failed := err != nil
			if _, ok := err.(*exec.ExitError); err != nil && !ok {
				t.Fatalf("running the child: %v", err)
			}
			if failed != tt.wantFail {
				t.Fatalf("child failed = %v, want %v; its output:\n%s", failed, tt.wantFail, out)
			}
			if tt.wantFail {
				return
			}
			skips := regexp.MustCompile(`(?m)^\s*--- SKIP: (\S+)`).FindAllStringSubmatch(string(out), -1)
			var names []string
			for _, m := range skips {
				names = append(names, m[1])
			}
			want := []string{"TestLifeCycle", "TestShared", "TestExternal"}
			if runtime.GOOS == "linux" {
				want = append(want, "TestAzuriteDiesWithTestBinary")
			}
			for _, name := range want {
				if !strings.Contains(" "+strings.Join(names, " ")+" ", " "+name+" ") {
					t.Errorf("%s did not skip (skipped: %v)", name, names)
				}
			}
			if !strings.Contains(string(out), "`make test` installs Azurite") {
				t.Errorf("no skip message says how to run the tests:\n%s", out)
			}
		})
	}
}
