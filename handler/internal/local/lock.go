package local

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/gofrs/flock"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// DefaultPollInterval is the mean wait between attempts to take a held lock
// when LockerOptions.PollInterval is zero.
const DefaultPollInterval = 50 * time.Millisecond

// LockerOptions configure a Locker.
type LockerOptions struct {
	// PollInterval is the mean wait between attempts to take a lock that
	// someone else holds. Each wait is drawn from ±50% around it, so
	// waiters that started together do not retry in step. Zero means
	// DefaultPollInterval.
	PollInterval time.Duration
}

// Locker is a broker.Locker on operating-system file locks: one lock file
// per name, at <dir>/locks/<name>.lock. The lock belongs to an open file, not
// to a process, so it excludes other goroutines of this process as well as
// other processes, and the operating system drops it when its holder exits,
// crashed or not: there is no lease to expire and no stale lock to clean up.
//
// It only coordinates processes that see the same file system on one
// machine; file locks over network file systems are not to be trusted.
type Locker struct {
	dir  string
	poll time.Duration
}

var _ broker.Locker = (*Locker)(nil)

// LockError reports a lock that could not be taken. It wraps
// broker.ErrLockTimeout when someone else held the lock until the caller's
// context was done, broker.ErrLockUnavailable when the operating system
// refused, and, either way, the cause (the context's error, or the OS error).
type LockError struct {
	Name string
	Path string
	// Timeout is true when the lock was held by another holder throughout.
	Timeout bool
	// Waited is how long Lock tried.
	Waited time.Duration
	Err    error
}

func (e *LockError) Error() string {
	if e.Timeout {
		return fmt.Sprintf("local: lock %q still held by another refresh after %v: %v", e.Name, e.Waited.Round(time.Millisecond), e.Err)
	}
	return fmt.Sprintf("local: lock %q (%s): %v", e.Name, e.Path, e.Err)
}

// Unwrap returns the broker sentinel and the cause.
func (e *LockError) Unwrap() []error {
	if e.Timeout {
		return []error{broker.ErrLockTimeout, e.Err}
	}
	return []error{broker.ErrLockUnavailable, e.Err}
}

// NewLocker returns a Locker keeping its lock files under dir/locks. It
// creates dir (0700) if it is missing, and locks/ (always set to 0700).
func NewLocker(dir string, o LockerOptions) (*Locker, error) {
	p, err := prepareDir(dir, "locks")
	if err != nil {
		return nil, err
	}
	poll := o.PollInterval
	if poll <= 0 {
		poll = DefaultPollInterval
	}
	return &Locker{dir: p, poll: poll}, nil
}

// Lock takes the named lock, trying again at jittered intervals while
// someone else holds it, until ctx is done. Names follow the same rules as
// secret names (a *NameError otherwise). Lock files are never removed:
// removing one while another process waits on it would let two holders in
// (each locking a different file under the same name).
func (l *Locker) Lock(ctx context.Context, name string) (broker.Lock, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	p := filepath.Join(l.dir, fileName(name, ".lock"))
	start := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, &LockError{Name: name, Path: p, Timeout: true, Err: err}
	}
	// Each Lock call opens its own file, and the OS lock belongs to that
	// open file (flock on Unix, a handle on Windows), so two calls in one
	// process exclude each other just as two processes do.
	fl := flock.New(p, flock.SetPermissions(0o600))
	poll := broker.NewLockPoller(l.poll)
	defer poll.Stop()
	for {
		ok, err := fl.TryLock()
		if err != nil {
			return nil, &LockError{Name: name, Path: p, Waited: time.Since(start), Err: err}
		}
		if ok {
			if err := fixMode(fl); err != nil {
				_ = fl.Unlock() // fixMode's error is the one to report
				return nil, &LockError{Name: name, Path: p, Waited: time.Since(start), Err: err}
			}
			return &fileLock{name: name, fl: fl, statusPath: l.statusPath(name), journalPath: l.journalPath(name)}, nil
		}
		if err := poll.Wait(ctx); err != nil {
			return nil, &LockError{Name: name, Path: p, Timeout: true, Waited: time.Since(start), Err: err}
		}
	}
}

// fixMode sets a lock file to 0600 when the umask made it narrower (a
// 0277 umask gives 0400). The file is empty and its directory 0700, so
// this is for consistency with the secret files, not for secrecy. Windows
// file modes only say read-only or not, so there is nothing to fix.
func fixMode(fl *flock.Flock) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	fi, err := fl.Stat()
	if err != nil || fi.Mode().Perm() == 0o600 {
		return err
	}
	return os.Chmod(fl.Path(), 0o600)
}

// neverLost is what every fileLock's Lost returns. It is never closed: an
// OS file lock is held until released or until the process exits, and in
// the second case nobody is left to notice.
var neverLost = make(chan struct{})

type fileLock struct {
	name        string
	fl          *flock.Flock
	statusPath  string
	journalPath string
	released    atomic.Bool
}

// Lost returns a channel that is never closed.
func (l *fileLock) Lost() <-chan struct{} { return neverLost }

// Held reports whether Release has not yet run: the OS holds a file lock
// for its open file until then, however long it takes.
func (l *fileLock) Held() bool { return !l.released.Load() }

// Release unlocks and closes the lock file. Releasing twice is harmless:
// the second call finds its own file already unlocked and returns nil. It
// cannot touch another holder's lock, which lives on another open file.
func (l *fileLock) Release(context.Context) error {
	l.released.Store(true)
	if err := l.fl.Unlock(); err != nil {
		return &LockError{Name: l.name, Path: l.fl.Path(), Err: err}
	}
	return nil
}
