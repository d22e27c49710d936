// Package azurite starts a private Azurite blob service for tests, the way
// net/http/httptest starts an HTTP server: each Instance listens on its own
// loopback port, keeps everything in memory, and is killed when the test
// that started it ends.
//
// Azurite is a Node.js program. `make test` installs it under
// .tools/azurite in the module root; where it is missing, Start skips the
// test, except when the environment variable CI is "true": a CI run must
// fail rather than pass by skipping.
//
// Environment:
//
//   - AZURITE_BIN: path to the azurite-blob program, used instead of
//     looking for it.
//   - AZURITE_BLOB_ENDPOINT: the blob endpoint of an Azurite that is
//     already running (http://127.0.0.1:10000/devstoreaccount1); nothing is
//     started and tests share that service.
//   - CI: "true" turns a missing Azurite from a skip into a failure.
package azurite

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// AccountName is the storage account Azurite serves.
	AccountName = "devstoreaccount1"
	// AccountKey is AccountName's key. Azurite publishes it in its
	// documentation: it is not a secret, and Azurite accepts no other.
	AccountKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
	// Version is the Azurite release `make test` installs and these tests
	// are known to work with.
	Version = "3.37.0"
)

// startTimeout bounds how long an Azurite may take to listen. It starts in
// about two seconds; the rest is room for a machine busy with other tests.
const startTimeout = 60 * time.Second

// ErrExternal is returned by Stop and Restart on an Instance that this
// package did not start (AZURITE_BLOB_ENDPOINT): it is not ours to stop.
var ErrExternal = errors.New("azurite: the Azurite at AZURITE_BLOB_ENDPOINT was not started by this test and cannot be stopped")

// NotFoundError reports that Azurite cannot be started because a program
// it needs is not installed.
type NotFoundError struct {
	// Program is "azurite-blob" or "node".
	Program string
	// Tried lists where Program was looked for.
	Tried []string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("azurite: %s not found (looked in: %s)", e.Program, strings.Join(e.Tried, ", "))
}

// Instance is a running Azurite blob service, or an external one named by
// AZURITE_BLOB_ENDPOINT. Its methods may be called from any goroutine.
type Instance struct {
	bin      string // empty for an external service
	endpoint string // blob endpoint, without a trailing slash

	mu      sync.Mutex
	port    int      // kept so that Restart comes back at the same address
	proc    *process // nil while stopped
	stopped bool     // set by Close; Restart is refused afterwards
}

// Start starts an Azurite for t and kills it when t and its subtests have
// finished. Where Azurite is not installed, Start skips t (fails it when
// CI is "true"); any other failure fails t.
func Start(t testing.TB) *Instance {
	t.Helper()
	i, err := New()
	if err != nil {
		skipOrFatal(t, err, os.Getenv)
	}
	t.Cleanup(i.Close)
	return i
}

// New starts an Azurite that is not tied to a test, for a TestMain or a
// Shared; the caller must Close it. The error is a *NotFoundError when
// Azurite or Node.js is not installed.
func New() (*Instance, error) {
	if ep := os.Getenv("AZURITE_BLOB_ENDPOINT"); ep != "" {
		return external(ep, externalWait)
	}
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	bin, err := locate(os.Getenv, exec.LookPath, wd)
	if err != nil {
		return nil, err
	}
	i := &Instance{bin: bin}
	// Port 0: Azurite binds a port the kernel picks and reports it, so
	// nothing can take the port between choosing it and listening on it.
	if err := i.start(0); err != nil {
		return nil, err
	}
	return i, nil
}

// externalWait is how long an external Azurite may take to answer: a CI
// job may start it in the background just before the tests.
const externalWait = 10 * time.Second

// external wraps an Azurite someone else runs, after checking it answers
// within wait: a typo in AZURITE_BLOB_ENDPOINT should fail here, not as a
// storage error in the middle of a test.
func external(endpoint string, wait time.Duration) (*Instance, error) {
	endpoint = strings.TrimRight(endpoint, "/")
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("azurite: AZURITE_BLOB_ENDPOINT %q is not a URL such as http://127.0.0.1:10000/%s", endpoint, AccountName)
	}
	if err := waitAnswer(endpoint, time.Now().Add(wait), nil); err != nil {
		return nil, fmt.Errorf("azurite: AZURITE_BLOB_ENDPOINT %s: %w", endpoint, err)
	}
	return &Instance{endpoint: endpoint}, nil
}

// ConnectionString returns a storage connection string for the instance,
// with AccountKey, for azblob.NewClientFromConnectionString. (The Go SDK
// does not understand UseDevelopmentStorage=true.)
func (i *Instance) ConnectionString() string {
	return ConnectionString(i.BlobEndpoint())
}

// ConnectionString returns the connection string of the Azurite blob
// service at blobEndpoint.
func ConnectionString(blobEndpoint string) string {
	return "DefaultEndpointsProtocol=http;AccountName=" + AccountName + ";AccountKey=" + AccountKey +
		";BlobEndpoint=" + blobEndpoint + ";"
}

// BlobEndpoint returns the service URL, such as
// http://127.0.0.1:41234/devstoreaccount1. It stays the same across Stop
// and Restart.
func (i *Instance) BlobEndpoint() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.endpoint
}

// Stop kills Azurite now, without a shutdown: requests in flight fail and
// new connections are refused, as when a storage account becomes
// unreachable. Everything it stored is gone. Stopping a stopped instance
// does nothing. It returns ErrExternal for an external service.
func (i *Instance) Stop() error {
	if i.bin == "" {
		return ErrExternal
	}
	i.mu.Lock()
	p := i.proc
	i.proc = nil
	i.mu.Unlock()
	if p != nil {
		p.kill()
	}
	return nil
}

// Restart starts a stopped instance again at the same address, empty (it
// keeps nothing in between), and waits until it answers. It stops a
// running instance first. It fails if another program took the port in
// the meantime, and returns ErrExternal for an external service.
func (i *Instance) Restart() error {
	if i.bin == "" {
		return ErrExternal
	}
	if err := i.Stop(); err != nil {
		return err
	}
	i.mu.Lock()
	closed, port := i.stopped, i.port
	i.mu.Unlock()
	if closed {
		return errors.New("azurite: Restart after Close")
	}
	return i.start(port)
}

// Close stops the instance for good. It is what Start registers with
// t.Cleanup, and what the owner of an Instance from New must call. Closing
// an external service forgets it and leaves it running.
func (i *Instance) Close() {
	i.mu.Lock()
	i.stopped = true
	i.mu.Unlock()
	_ = i.Stop()
}

// start runs Azurite on port (0: any free port) and waits until it
// answers HTTP.
func (i *Instance) start(port int) error {
	p, err := startProcess(i.bin, port)
	if err != nil {
		return err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.stopped {
		p.kill()
		return errors.New("azurite: closed while starting")
	}
	i.proc, i.port = p, p.port
	i.endpoint = "http://127.0.0.1:" + strconv.Itoa(p.port) + "/" + AccountName
	return nil
}

// Shared is one Instance for all the tests of a package that ask for it,
// started on first use: Azurite takes a couple of seconds to start, and
// tests that use distinct container or blob names do not disturb each
// other. A test that stops storage must Start its own Instance instead.
// The zero value is ready to use; stop it from TestMain:
//
//	var storage azurite.Shared
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		storage.Close()
//		os.Exit(code)
//	}
type Shared struct {
	once sync.Once
	i    *Instance
	err  error
}

// Instance returns the shared Instance, starting it on the first call.
// It skips or fails t as Start does when Azurite cannot be started, on
// every call, not only the first.
func (s *Shared) Instance(t testing.TB) *Instance {
	t.Helper()
	s.once.Do(func() { s.i, s.err = New() })
	if s.err != nil {
		skipOrFatal(t, s.err, os.Getenv)
	}
	return s.i
}

// Close stops the shared Instance, if one was started.
func (s *Shared) Close() {
	s.once.Do(func() {}) // no Instance may start after this
	if s.i != nil {
		s.i.Close()
	}
}

// skipOrFatal ends t because err kept Azurite from starting.
func skipOrFatal(t testing.TB, err error, getenv func(string) string) {
	t.Helper()
	if mustFail(err, getenv) {
		t.Fatal(err)
	}
	t.Skipf("%v; `make test` installs Azurite (or set AZURITE_BIN, or AZURITE_BLOB_ENDPOINT to a running one)", err)
}

// mustFail reports whether err should fail a test rather than skip it:
// anything but a missing program fails, and so does a missing program
// under CI, where a skipped storage test would pass unnoticed.
func mustFail(err error, getenv func(string) string) bool {
	var nf *NotFoundError
	return !errors.As(err, &nf) || getenv("CI") == "true"
}

// locate finds the azurite-blob program, and checks that node, which runs
// it, is on PATH.
func locate(getenv func(string) string, lookPath func(string) (string, error), wd string) (string, error) {
	bin, err := locateBlob(getenv, lookPath, wd)
	if err != nil {
		return "", err
	}
	if _, err := lookPath("node"); err != nil {
		return "", &NotFoundError{Program: "node", Tried: []string{"PATH"}}
	}
	return bin, nil
}

func locateBlob(getenv func(string) string, lookPath func(string) (string, error), wd string) (string, error) {
	if p := getenv("AZURITE_BIN"); p != "" {
		// Asked for explicitly: a wrong path is a mistake to report, not a
		// reason to run some other Azurite or to skip.
		if !isFile(p) {
			return "", fmt.Errorf("azurite: AZURITE_BIN=%s: no such file", p)
		}
		return p, nil
	}
	name := "azurite-blob"
	if runtime.GOOS == "windows" {
		name += ".cmd" // what npm puts in node_modules/.bin there
	}
	var tried []string
	if root := moduleRoot(wd); root != "" {
		p := filepath.Join(root, ".tools", "azurite", "node_modules", ".bin", name)
		if isFile(p) {
			return p, nil
		}
		tried = append(tried, p)
	}
	if p, err := lookPath("azurite-blob"); err == nil {
		return p, nil
	}
	return "", &NotFoundError{Program: "azurite-blob", Tried: append(tried, "PATH")}
}

// moduleRoot returns the nearest directory at or above dir that holds a
// go.mod, or "" if there is none.
func moduleRoot(dir string) string {
	for {
		if isFile(filepath.Join(dir, "go.mod")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// process is one run of azurite-blob.
type process struct {
	cmd    *exec.Cmd
	port   int
	out    *output
	exited chan struct{} // closed once the process has been waited for
}

// startProcess starts azurite-blob on port and returns once it answers
// HTTP there, or has failed.
func startProcess(bin string, port int) (*process, error) {
	out := newOutput()
	cmd := exec.Command(bin,
		"--blobHost", "127.0.0.1",
		"--blobPort", strconv.Itoa(port),
		"--inMemoryPersistence", // nothing on disk, nothing to clean up
		// azblob sends a newer x-ms-version than Azurite 3.37.0 knows
		// and Azurite refuses those unless told not to check.
		"--skipApiVersionCheck",
		"--disableTelemetry", // it would otherwise call out to Microsoft
		"--silent",           // no access log
	)
	// With in-memory persistence Azurite writes nothing, but its
	// workspace defaults to the working directory; keep it out of the
	// source tree all the same. (--location cannot be combined with
	// --inMemoryPersistence.)
	cmd.Dir = os.TempDir()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = 2 * time.Second // don't hang on a grandchild holding the pipes
	p := &process{cmd: cmd, out: out, exited: make(chan struct{})}

	started := make(chan error, 1)
	go func() {
		defer close(p.exited)
		// On Linux the child is killed when the thread that started it
		// exits (Pdeathsig, which catches a test binary that dies without
		// running its cleanups). Keep this goroutine on that thread until
		// the child is gone, so that the runtime cannot retire the thread
		// under a live child.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("azurite: starting %s: %w", bin, err)
	}

	deadline := time.Now().Add(startTimeout)
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case addr := <-out.listening:
		u, err := url.Parse(addr)
		if err == nil {
			p.port, err = strconv.Atoi(u.Port())
		}
		if err != nil {
			p.kill()
			return nil, fmt.Errorf("azurite: cannot tell the port from %q", addr)
		}
	case <-p.exited:
		return nil, fmt.Errorf("azurite: %s exited before listening: %s", bin, out.String())
	case <-timer.C:
		p.kill()
		return nil, fmt.Errorf("azurite: %s did not listen within %v: %s", bin, startTimeout, out.String())
	}
	endpoint := "http://127.0.0.1:" + strconv.Itoa(p.port) + "/" + AccountName
	if err := waitAnswer(endpoint, deadline, p.exited); err != nil {
		p.kill()
		return nil, fmt.Errorf("azurite: %s: %w: %s", endpoint, err, out.String())
	}
	return p, nil
}

// kill ends the process and any children at once and waits for it.
func (p *process) kill() {
	killGroup(p.cmd.Process)
	<-p.exited
}

// waitAnswer polls endpoint until it answers HTTP, with any status: an
// unsigned request gets 403, which proves the blob service is serving.
func waitAnswer(endpoint string, deadline time.Time, exited <-chan struct{}) error {
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get(endpoint + "?comp=list")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer: %w", err)
		}
		select {
		case <-exited:
			return errors.New("exited while starting")
		case <-tick.C:
		}
	}
}

// output keeps the start of what Azurite prints, for error messages, and
// reports the address from its "successfully listens on" line: that line
// is the one sign that this process, and not whatever else might hold the
// port, is listening.
type output struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	found     bool
	listening chan string
}

const (
	maxOutput    = 16 << 10
	listenMarker = "successfully listens on "
)

func newOutput() *output { return &output{listening: make(chan string, 1)} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if room := maxOutput - o.buf.Len(); room > 0 {
		o.buf.Write(p[:min(len(p), room)])
	}
	if !o.found {
		s := o.buf.String()
		if i := strings.Index(s, listenMarker); i >= 0 {
			rest := s[i+len(listenMarker):]
			if j := strings.IndexAny(rest, "\r\n"); j >= 0 {
				o.found = true
				o.listening <- strings.TrimSpace(rest[:j])
			}
		}
	}
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.TrimSpace(o.buf.String())
}
