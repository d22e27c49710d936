package azurite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
)

var shared Shared

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Close()
	os.Exit(code)
}

// client connects to i without retries, so that a stopped Azurite shows
// as an error at once.
func client(t *testing.T, i *Instance) *azblob.Client {
	t.Helper()
	c, err := azblob.NewClientFromConnectionString(i.ConnectionString(), &azblob.ClientOptions{
		ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1, TryTimeout: 5 * time.Second}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// unique makes container names differ between runs of a test (-count)
// on one shared Azurite.
func unique(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

func createContainer(c *azblob.Client, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.CreateContainer(ctx, name, nil)
	return err
}

// TestLifeCycle checks what a storage-outage test relies on: the
// connection string works, Stop makes requests fail at once, Restart
// brings an empty service back at the same address, and the Azurite is
// gone once the test that started it has ended.
func TestLifeCycle(t *testing.T) {
	t.Parallel()
	var host string
	var sub *testing.T
	t.Run("stop and restart", func(t *testing.T) {
		sub = t
		az := Start(t)
		endpoint := az.BlobEndpoint()
		u, err := url.Parse(endpoint)
		if err != nil || u.Hostname() != "127.0.0.1" || u.Path != "/"+AccountName {
			t.Fatalf("BlobEndpoint = %q; want http://127.0.0.1:<port>/%s", endpoint, AccountName)
		}
		host = u.Host
		c := client(t, az)
		if err := createContainer(c, "before"); err != nil {
			t.Fatalf("create container through ConnectionString: %v", err)
		}

		if err := az.Stop(); errors.Is(err, ErrExternal) {
			t.Skip("stops its Azurite: needs one of its own, not AZURITE_BLOB_ENDPOINT's")
		} else if err != nil {
			t.Fatal(err)
		}
		if err := az.Stop(); err != nil {
			t.Fatalf("second Stop = %v; want nil", err)
		}
		start := time.Now()
		err = createContainer(c, "during")
		if err == nil {
			t.Fatal("create container succeeded on a stopped Azurite")
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("a request to the stopped Azurite took %v to fail; want a refused connection at once", d)
		}
		var re *azcore.ResponseError
		if errors.As(err, &re) {
			t.Fatalf("stopped Azurite answered %d; want no answer", re.StatusCode)
		}

		if err := az.Restart(); err != nil {
			t.Fatal(err)
		}
		if got := az.BlobEndpoint(); got != endpoint {
			t.Errorf("after Restart BlobEndpoint = %q; want the same %q", got, endpoint)
		}
		// "before" is gone with the old process: creating it again succeeds.
		if err := createContainer(c, "before"); err != nil {
			t.Fatalf("after Restart, create container = %v; want an empty service", err)
		}
	})
	if sub.Skipped() {
		// Start skipped it (Azurite is not installed) and said why; what
		// follows checks the Azurite it would have started.
		t.Skip("the subtest skipped; see its message")
	}
	if host == "" {
		t.Fatal("subtest did not start Azurite")
	}
	if conn, err := net.DialTimeout("tcp", host, time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after the test that started Azurite ended", host)
	}
}

func TestShared(t *testing.T) {
	t.Parallel()
	a, b := shared.Instance(t), shared.Instance(t)
	if a != b {
		t.Fatal("Shared.Instance started a second Azurite")
	}
	if err := createContainer(client(t, a), unique("shared")); err != nil {
		t.Fatal(err)
	}
}

// TestExternal checks AZURITE_BLOB_ENDPOINT: the named service is used,
// checked, and never stopped.
func TestExternal(t *testing.T) {
	running := shared.Instance(t)
	t.Setenv("AZURITE_BLOB_ENDPOINT", running.BlobEndpoint()+"/")
	ext, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	if got, want := ext.ConnectionString(), running.ConnectionString(); got != want {
		t.Errorf("ConnectionString = %q; want %q", got, want)
	}
	for name, op := range map[string]func() error{"Stop": ext.Stop, "Restart": ext.Restart} {
		if err := op(); !errors.Is(err, ErrExternal) {
			t.Errorf("%s = %v; want ErrExternal", name, err)
		}
	}
	ext.Close()
	if err := createContainer(client(t, running), unique("still-running")); err != nil {
		t.Fatalf("Close of the external instance stopped it: %v", err)
	}

	// Nothing listens on a port that was just closed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := external("http://"+l.Addr().String()+"/"+AccountName, 200*time.Millisecond); err == nil || !mustFail(err, func(string) string { return "" }) {
		t.Fatalf("New with an endpoint nobody serves = %v; want an error that fails the test", err)
	}
}

func TestLocate(t *testing.T) {
	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "go.mod"), "module x\n")
	wd := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(wd, 0o755); err != nil {
		t.Fatal(err)
	}
	noModule := t.TempDir()
	tools := filepath.Join(root, ".tools", "azurite", "node_modules", ".bin", "azurite-blob")
	explicit := filepath.Join(t.TempDir(), "my-azurite")
	mustWrite(t, explicit, "")

	const onPath = "/usr/bin/azurite-blob"
	type lookup map[string]string // program -> path; absent: not on PATH
	tests := []struct {
		name      string
		env       map[string]string
		wd        string
		withTools bool
		path      lookup
		want      string
		notFound  string // Program of the *NotFoundError wanted
		wantErr   bool   // an error that is not a *NotFoundError
	}{
		{name: "AZURITE_BIN wins", env: map[string]string{"AZURITE_BIN": explicit}, wd: wd, withTools: true,
			path: lookup{"node": "n", "azurite-blob": onPath}, want: explicit},
		{name: "AZURITE_BIN missing is an error, not a skip", env: map[string]string{"AZURITE_BIN": explicit + ".nope"}, wd: wd,
			withTools: true, path: lookup{"node": "n"}, wantErr: true},
		{name: "module .tools from a subdirectory", wd: wd, withTools: true, path: lookup{"node": "n", "azurite-blob": onPath}, want: tools},
		{name: "PATH when .tools is empty", wd: wd, path: lookup{"node": "n", "azurite-blob": onPath}, want: onPath},
		{name: "PATH outside a module", wd: noModule, path: lookup{"node": "n", "azurite-blob": onPath}, want: onPath},
		{name: "nowhere", wd: wd, path: lookup{"node": "n"}, notFound: "azurite-blob"},
		{name: "no node", wd: wd, withTools: true, path: lookup{"azurite-blob": onPath}, notFound: "node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.RemoveAll(filepath.Join(root, ".tools"))
			if tt.withTools {
				mustWrite(t, tools, "")
			}
			getenv := func(k string) string { return tt.env[k] }
			lookPath := func(p string) (string, error) {
				if r, ok := tt.path[p]; ok {
					return r, nil
				}
				return "", errors.New("not on PATH")
			}
			got, err := locate(getenv, lookPath, tt.wd)
			var nf *NotFoundError
			switch {
			case tt.notFound != "":
				if !errors.As(err, &nf) || nf.Program != tt.notFound {
					t.Fatalf("locate = %q, %v; want a *NotFoundError for %s", got, err, tt.notFound)
				}
				if tt.notFound == "azurite-blob" && (len(nf.Tried) != 2 || nf.Tried[0] != tools) {
					t.Errorf("Tried = %q; want [%s PATH]", nf.Tried, tools)
				}
			case tt.wantErr:
				if err == nil || errors.As(err, &nf) {
					t.Fatalf("locate = %q, %v; want an error other than *NotFoundError", got, err)
				}
			default:
				if err != nil || got != tt.want {
					t.Fatalf("locate = %q, %v; want %q", got, err, tt.want)
				}
			}
		})
	}
}

func TestMustFail(t *testing.T) {
	missing := &NotFoundError{Program: "azurite-blob", Tried: []string{"PATH"}}
	tests := []struct {
		name string
		err  error
		ci   string
		want bool
	}{
		{"missing, developer machine: skip", missing, "", false},
		{"missing, CI: fail", missing, "true", true},
		{"missing, CI not exactly true: skip", missing, "1", false},
		{"wrapped missing: skip", errors.Join(errors.New("context"), missing), "", false},
		{"broken install: fail", errors.New("exited before listening"), "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == "CI" {
					return tt.ci
				}
				return ""
			}
			if got := mustFail(tt.err, getenv); got != tt.want {
				t.Errorf("mustFail = %v; want %v", got, tt.want)
			}
		})
	}
}

func TestOutputFindsListenAddress(t *testing.T) {
	o := newOutput()
	// Written in pieces, as a pipe may deliver it.
	for _, s := range []string{"Azurite Blob service is starting on 127.0.0.1:0\nAzurite Blob service successfully ", "listens on http://127.0.0.1:4", "6069", "\nmore\n"} {
		o.Write([]byte(s))
	}
	select {
	case got := <-o.listening:
		if got != "http://127.0.0.1:46069" {
			t.Fatalf("listening = %q", got)
		}
	default:
		t.Fatal("no listen address reported")
	}
	if !strings.Contains(o.String(), "more") {
		t.Errorf("output kept = %q; want everything printed", o.String())
	}
}

func mustWrite(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o755); err != nil {
		t.Fatal(err)
	}
}
