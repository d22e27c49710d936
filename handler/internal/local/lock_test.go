package local_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// fastPoll keeps contended tests short; the production default is 50ms.
var fastPoll = local.LockerOptions{PollInterval: 2 * time.Millisecond}

func newLocker(t *testing.T, dir string) *local.Locker {
	t.Helper()
	l, err := local.NewLocker(dir, fastPoll)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// lockFor tries to take name for d and returns the error.
func lockFor(l *local.Locker, name string, d time.Duration) (broker.Lock, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return l.Lock(ctx, name)
}

// TestLockExcludesWithinProcess checks what the Locker relies on rather
// than assuming it: two Lock calls in one process, through the same Locker
// or two Lockers on the same directory, open two files, and the OS lock on
// one keeps the other out.
func TestLockExcludesWithinProcess(t *testing.T) {
	dir := t.TempDir()
	l1, l2 := newLocker(t, dir), newLocker(t, dir)
	ctx := context.Background()
	held, err := l1.Lock(ctx, "conn")
	if err != nil {
		t.Fatal(err)
	}
	for name, l := range map[string]*local.Locker{"same Locker": l1, "other Locker": l2} {
		if lock, err := lockFor(l, "conn", 30*time.Millisecond); !errors.Is(err, broker.ErrLockTimeout) {
			t.Errorf("%s: second Lock = %v, %v; want ErrLockTimeout while the first is held", name, lock, err)
		}
		// Names are case-insensitive, as secret names are.
		if lock, err := lockFor(l, "CONN", 30*time.Millisecond); !errors.Is(err, broker.ErrLockTimeout) {
			t.Errorf("%s: Lock(CONN) = %v, %v; want ErrLockTimeout while conn is held", name, lock, err)
		}
	}
	other, err := lockFor(l2, "other-conn", time.Second)
	if err != nil {
		t.Fatalf("a different name is a different lock, but Lock = %v", err)
	}
	other.Release(ctx)
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	again, err := lockFor(l2, "conn", time.Second)
	if err != nil {
		t.Fatalf("Lock after Release = %v", err)
	}
	again.Release(ctx)
}

// TestLockMutualExclusion has goroutines do unprotected read-modify-write
// on a file under the lock. Any overlap loses an increment or trips the
// in-section counter.
func TestLockMutualExclusion(t *testing.T) {
	dir := t.TempDir()
	lockers := []*local.Locker{newLocker(t, dir), newLocker(t, dir)}
	counter := filepath.Join(dir, "counter")
	if err := os.WriteFile(counter, []byte("0"), 0o600); err != nil {
		t.Fatal(err)
	}
	const goroutines, iterations = 8, 25
	var inside atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for range iterations {
				lock, err := lockers[g%2].Lock(ctx, "counter")
				if err != nil {
					errs <- err
					return
				}
				if n := inside.Add(1); n != 1 {
					err = errors.New("two holders inside the lock at once")
				}
				var b []byte
				if err == nil {
					b, err = os.ReadFile(counter)
				}
				if err == nil {
					var n int
					n, err = strconv.Atoi(string(b))
					if err == nil {
						err = os.WriteFile(counter, []byte(strconv.Itoa(n+1)), 0o600)
					}
				}
				inside.Add(-1)
				if rerr := lock.Release(ctx); err == nil {
					err = rerr
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	b, err := os.ReadFile(counter)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), strconv.Itoa(goroutines*iterations); got != want {
		t.Errorf("counter = %s, want %s (lost updates)", got, want)
	}
}

func TestLockTimeout(t *testing.T) {
	l := newLocker(t, t.TempDir())
	held, err := l.Lock(context.Background(), "conn")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(context.Background())

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	deadline, cancel2 := context.WithTimeout(context.Background(), 40*time.Millisecond)
	defer cancel2()
	tests := []struct {
		name  string
		ctx   context.Context
		cause error
	}{
		{"deadline passes while held", deadline, context.DeadlineExceeded},
		{"already canceled", canceled, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			lock, err := l.Lock(tt.ctx, "conn")
			if lock != nil {
				t.Fatal("Lock returned a lock while another holder has it")
			}
			if !errors.Is(err, broker.ErrLockTimeout) || !errors.Is(err, tt.cause) {
				t.Errorf("Lock = %v, want ErrLockTimeout and %v", err, tt.cause)
			}
			if errors.Is(err, broker.ErrLockUnavailable) {
				t.Errorf("Lock = %v: a held lock is not an unavailable backend", err)
			}
			var le *local.LockError
			if !errors.As(err, &le) || le.Name != "conn" || !le.Timeout {
				t.Errorf("Lock = %#v, want a *LockError for conn with Timeout", err)
			}
			if d, ok := tt.ctx.Deadline(); ok && time.Now().Before(d) {
				t.Errorf("Lock gave up after %v, before the deadline", time.Since(start))
			}
		})
	}
}

func TestLockUnavailable(t *testing.T) {
	dir := t.TempDir()
	l := newLocker(t, dir)
	// With its directory gone the lock file cannot be opened: an OS
	// failure, not someone else's hold.
	if err := os.RemoveAll(filepath.Join(dir, "locks")); err != nil {
		t.Fatal(err)
	}
	_, err := lockFor(l, "conn", time.Second)
	if !errors.Is(err, broker.ErrLockUnavailable) || errors.Is(err, broker.ErrLockTimeout) {
		t.Fatalf("Lock = %v, want ErrLockUnavailable only", err)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Lock = %v, want the OS error wrapped too", err)
	}
}

func TestLockInvalidName(t *testing.T) {
	l := newLocker(t, t.TempDir())
	for _, name := range []string{"", "../x", "a/b", "x.lock", "-x"} {
		var ne *local.NameError
		if _, err := lockFor(l, name, time.Second); !errors.As(err, &ne) {
			t.Errorf("Lock(%q) = %v, want a *NameError", name, err)
		}
	}
}

// TestLockReleaseTwice checks that a second Release of a lock someone else
// has taken since leaves their hold alone.
func TestLockReleaseTwice(t *testing.T) {
	l := newLocker(t, t.TempDir())
	ctx := context.Background()
	first, err := l.Lock(ctx, "conn")
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	second, err := lockFor(l, "conn", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Release(ctx)
	if err := first.Release(ctx); err != nil {
		t.Errorf("second Release = %v, want nil", err)
	}
	if lock, err := lockFor(l, "conn", 30*time.Millisecond); !errors.Is(err, broker.ErrLockTimeout) {
		t.Errorf("after a stale Release, Lock = %v, %v; want ErrLockTimeout (the second holder still has it)", lock, err)
	}
}

func TestLockLostIsNeverClosed(t *testing.T) {
	l := newLocker(t, t.TempDir())
	ctx := context.Background()
	lock, err := l.Lock(ctx, "conn")
	if err != nil {
		t.Fatal(err)
	}
	lost := lock.Lost()
	if lost == nil {
		t.Fatal("Lost() = nil")
	}
	lock.Release(ctx)
	select {
	case <-lost:
		t.Error("Lost is closed; an OS lock cannot be lost, and the broker would abort a refresh")
	default:
	}
}
