package azurite

import (
	"bufio"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestAzuriteDiesWithTestBinary runs this test binary again as a child
// that starts Azurite and exits without any cleanup, as a test timeout
// does, and checks that Azurite went with it.
func TestAzuriteDiesWithTestBinary(t *testing.T) {
	if os.Getenv("AZURITE_TEST_ORPHAN") == "1" {
		i, err := New()
		if err != nil {
			os.Stdout.WriteString("error: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("endpoint: " + i.BlobEndpoint() + "\n")
		os.Exit(0) // no Close
	}
	t.Parallel()
	shared.Instance(t) // skips or fails as everywhere else when Azurite is missing

	cmd := exec.Command(os.Args[0], "-test.run=^TestAzuriteDiesWithTestBinary$", "-test.count=1")
	cmd.Env = append(os.Environ(), "AZURITE_TEST_ORPHAN=1", "AZURITE_BLOB_ENDPOINT=")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	var endpoint string
	for sc := bufio.NewScanner(strings.NewReader(string(out))); sc.Scan(); {
		if s, ok := strings.CutPrefix(sc.Text(), "endpoint: "); ok {
			endpoint = s
		}
	}
	u, err := url.Parse(endpoint)
	if endpoint == "" || err != nil {
		t.Fatalf("child printed no endpoint: %s", out)
	}
	// The kernel kills Azurite as the child exits; give that a moment.
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		conn, err := net.DialTimeout("tcp", u.Host, time.Second)
		if err != nil {
			return
		}
		conn.Close()
		select {
		case <-deadline:
			t.Fatalf("Azurite at %s outlived the test binary that started it", u.Host)
		case <-tick.C:
		}
	}
}
