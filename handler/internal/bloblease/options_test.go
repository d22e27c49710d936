package bloblease

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/azurite"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// offlineClient is a client for a service nobody runs: enough for what
// does not reach storage, and for a refused connection.
func offlineClient(t *testing.T) *azblob.Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := azblob.NewClientFromConnectionString(azurite.ConnectionString("http://"+addr+"/"+azurite.AccountName), ClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewOptions(t *testing.T) {
	c := offlineClient(t)
	tests := []struct {
		name          string
		client        *azblob.Client
		o             Options
		wantErr       string // substring; "" for success
		wantContainer string
		wantDuration  time.Duration
		wantPoll      time.Duration
	}{
		{name: "defaults", client: c, wantContainer: DefaultContainer, wantDuration: DefaultLeaseDuration, wantPoll: DefaultPollInterval},
		{name: "shortest lease", client: c, o: Options{LeaseDuration: 15 * time.Second, Container: "locks-1", PollInterval: time.Second},
			wantContainer: "locks-1", wantDuration: 15 * time.Second, wantPoll: time.Second},
		{name: "longest lease", client: c, o: Options{LeaseDuration: time.Minute}, wantContainer: DefaultContainer, wantDuration: time.Minute, wantPoll: DefaultPollInterval},
		{name: "lease too short", client: c, o: Options{LeaseDuration: 14 * time.Second}, wantErr: "whole seconds from 15s to 1m0s"},
		{name: "lease too long", client: c, o: Options{LeaseDuration: 61 * time.Second}, wantErr: "lease duration 1m1s"},
		{name: "lease not whole seconds", client: c, o: Options{LeaseDuration: 15500 * time.Millisecond}, wantErr: "lease duration 15.5s"},
		{name: "negative lease", client: c, o: Options{LeaseDuration: -time.Second}, wantErr: "lease duration"},
		{name: "container upper case", client: c, o: Options{Container: "Token-Locks"}, wantErr: `container "Token-Locks"`},
		{name: "container too short", client: c, o: Options{Container: "ab"}, wantErr: "3-63 characters"},
		{name: "container double hyphen", client: c, o: Options{Container: "a--b"}, wantErr: `"--"`},
		{name: "container leading hyphen", client: c, o: Options{Container: "-abc"}, wantErr: "starting and ending"},
		{name: "container too long", client: c, o: Options{Container: strings.Repeat("a", 64)}, wantErr: "3-63"},
		{name: "nil client", wantErr: "nil client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := New(tt.client, tt.o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New = %v; want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.containerName != tt.wantContainer || l.duration != tt.wantDuration || l.poll != tt.wantPoll {
				t.Errorf("container, lease, poll = %q, %v, %v; want %q, %v, %v", l.containerName, l.duration, l.poll, tt.wantContainer, tt.wantDuration, tt.wantPoll)
			}
		})
	}
}

func TestBlobName(t *testing.T) {
	tests := []struct {
		name string
		want string // "" for a *NameError
	}{
		{"xero", "xero.lock"},
		{"Xero", "xero.lock"}, // the same lock as "xero", as in Key Vault
		{"a", "a.lock"},
		{"conn-1_a.b", "conn-1_a.b.lock"},
		{"9lives", "9lives.lock"},
		{strings.Repeat("a", 200), strings.Repeat("a", 200) + ".lock"},
		{strings.Repeat("a", 201), ""},
		{"", ""},
		{".hidden", ""},
		{"../etc", ""},
		{"a/b", ""},
		{"a b", ""},
		{"café", ""},
	}
	for _, tt := range tests {
		got, err := blobName(tt.name)
		if tt.want == "" {
			var ne *NameError
			if !errors.As(err, &ne) || ne.Name != tt.name {
				t.Errorf("blobName(%q) = %q, %v; want a *NameError", tt.name, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("blobName(%q) = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

// TestLockRefusedFast checks that an unreachable account is reported as
// unavailable within a second or so, not after the SDK's default minutes of
// retries and not as a timeout, and that the message leaves out the
// request URL.
func TestLockRefusedFast(t *testing.T) {
	l, err := New(offlineClient(t), Options{Container: "locks"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	lock, err := l.Lock(ctx, "xero")
	elapsed := time.Since(start)
	if !errors.Is(err, broker.ErrLockUnavailable) || errors.Is(err, broker.ErrLockTimeout) {
		t.Fatalf("Lock = %v, %v; want ErrLockUnavailable and not ErrLockTimeout", lock, err)
	}
	if elapsed > 3*time.Second {
		t.Errorf("Lock took %v to report a refused connection; want seconds at most", elapsed)
	}
	var e *Error
	if !errors.As(err, &e) || e.Op != "lock" || e.Name != "xero" || e.Container != "locks" || e.StatusCode != 0 || e.Timeout {
		t.Fatalf("error = %#v; want an *Error for lock xero in locks, with no HTTP status", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "connection refused") || strings.Contains(msg, "comp=") || strings.Contains(msg, "http://") {
		t.Errorf("message = %q; want the cause without the request URL", msg)
	}
	if _, err := l.ReadStatus(ctx, "xero"); !errors.Is(err, broker.ErrLockUnavailable) {
		t.Errorf("ReadStatus = %v; want ErrLockUnavailable", err)
	}
}

func TestLockRejectsBadName(t *testing.T) {
	l, err := New(offlineClient(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var ne *NameError
	if _, err := l.Lock(context.Background(), "a/b"); !errors.As(err, &ne) {
		t.Errorf("Lock(a/b) = %v; want a *NameError", err)
	}
	if _, err := l.ReadStatus(context.Background(), "a/b"); !errors.As(err, &ne) {
		t.Errorf("ReadStatus(a/b) = %v; want a *NameError", err)
	}
}

func TestErrorClassification(t *testing.T) {
	cause := errors.New("cause")
	tests := []struct {
		name    string
		e       *Error
		want    error
		notWant []error
		msg     string
	}{
		{"timeout", &Error{Op: "lock", Name: "x", Container: "c", Timeout: true, Waited: 1500 * time.Millisecond, Err: context.DeadlineExceeded},
			broker.ErrLockTimeout, []error{broker.ErrLockUnavailable, ErrNotHeld}, `lock "x" (container "c") still held by another refresh after 1.5s`},
		{"not held", &Error{Op: "release", Name: "x", Container: "c", NotHeld: true, Code: "LeaseIdMismatchWithLeaseOperation", StatusCode: 409, Err: cause},
			ErrNotHeld, []error{broker.ErrLockUnavailable, broker.ErrLockTimeout}, "release \"x\" (container \"c\"): lease no longer held by this lock (HTTP 409 LeaseIdMismatchWithLeaseOperation)"},
		{"unavailable", &Error{Op: "lock", Name: "x", Container: "c", Code: "AuthorizationFailure", StatusCode: 403, Err: cause},
			broker.ErrLockUnavailable, []error{broker.ErrLockTimeout, ErrNotHeld}, "HTTP 403 AuthorizationFailure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.e, tt.want) || !errors.Is(tt.e, tt.e.Err) {
				t.Errorf("error does not wrap %v and its cause", tt.want)
			}
			for _, w := range tt.notWant {
				if errors.Is(tt.e, w) {
					t.Errorf("error wraps %v", w)
				}
			}
			if !strings.Contains(tt.e.Error(), tt.msg) {
				t.Errorf("message %q; want it to contain %q", tt.e.Error(), tt.msg)
			}
		})
	}
}
