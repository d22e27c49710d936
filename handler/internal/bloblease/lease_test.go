package bloblease

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/azurite"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// storage is the Azurite the tests share; each test works in containers
// of its own, with names that differ from run to run, so that tests and
// repeated runs against an external Azurite do not meet.
var storage azurite.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	storage.Close()
	os.Exit(code)
}

// lease15 is the shortest lease the service grants; tests of expiry and
// renewal take at least this long. TestLeaseLifetimes runs them at once.
const lease15 = 15 * time.Second

// TestLeaseLifetimes runs the tests that wait out a lease period side by
// side, so that the package takes one period rather than three. They run
// as concurrent subtests, not t.Parallel ones, because -parallel defaults
// to GOMAXPROCS, which is 2 on a small machine; they mostly wait.
func TestLeaseLifetimes(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out 15 s leases")
	}
	t.Parallel()
	tests := map[string]func(*testing.T){
		"takeover after expiry":  testTakeoverAfterExpiry,
		"renewal outlasts lease": testRenewalOutlastsLease,
		"storage down":           testStorageDown,
	}
	var wg sync.WaitGroup
	for name, test := range tests {
		wg.Go(func() { t.Run(name, test) })
	}
	wg.Wait()
}

func uniqueContainer(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	rand.Read(b)
	return "t-" + hex.EncodeToString(b)
}

// newLocker returns a Locker with a client of its own, as another instance
// would have, on container of az.
func newLocker(t *testing.T, az *azurite.Instance, container string, o Options) *Locker {
	t.Helper()
	c, err := azblob.NewClientFromConnectionString(az.ConnectionString(), ClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	o.Container = container
	l, err := New(c, o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// lockFor tries to take name for d.
func lockFor(l *Locker, name string, d time.Duration) (broker.Lock, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return l.Lock(ctx, name)
}

func mustLock(t *testing.T, l *Locker, name string) *heldLock {
	t.Helper()
	lock, err := lockFor(l, name, 10*time.Second)
	if err != nil {
		t.Fatalf("Lock(%s) = %v", name, err)
	}
	return lock.(*heldLock)
}

func record(h *heldLock, s broker.SharedStatus) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return h.RecordStatus(ctx, s)
}

func release(h *heldLock) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return h.Release(ctx)
}

func readStatus(t *testing.T, l *Locker, name string) broker.SharedStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := l.ReadStatus(ctx, name)
	if err != nil {
		t.Fatalf("ReadStatus(%s) = %v", name, err)
	}
	return s
}

// closedWithin reports whether ch is closed within d.
func closedWithin(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// logBuffer collects a Locker's log for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestMutualExclusion has instances (a Locker and a client each) take one
// lock in turns. Each reads a counter, records status through storage
// while holding, and writes the counter back: if two ever held the lock at
// once, one increment would be lost, and the holder count would show it.
func TestMutualExclusion(t *testing.T) {
	t.Parallel()
	az := storage.Instance(t)
	container := uniqueContainer(t) // created by whichever instance comes first
	const instances, rounds = 6, 3
	var holders, maxHolders atomic.Int32
	var counter atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, instances*rounds)
	for i := range instances {
		l := newLocker(t, az, container, Options{PollInterval: 20 * time.Millisecond, Instance: "i" + string(rune('0'+i))})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				lock, err := lockFor(l, "shared", 30*time.Second)
				if err != nil {
					errs <- err
					return
				}
				n := holders.Add(1)
				for m := maxHolders.Load(); n > m && !maxHolders.CompareAndSwap(m, n); m = maxHolders.Load() {
				}
				c := counter.Load()
				if err := record(lock.(*heldLock), broker.SharedStatus{Failures: int(c)}); err != nil {
					errs <- err
				}
				counter.Store(c + 1)
				holders.Add(-1)
				if err := release(lock.(*heldLock)); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if m := maxHolders.Load(); m != 1 {
		t.Errorf("%d holders at once; want 1", m)
	}
	if got := counter.Load(); got != instances*rounds {
		t.Errorf("counter = %d after %d exclusive increments", got, instances*rounds)
	}
}

// TestWaiterTimesOut checks that a waiter gives up at its deadline with
// ErrLockTimeout, leaves the holder's lease alone, and gets the lock once
// it is released.
func TestWaiterTimesOut(t *testing.T) {
	t.Parallel()
	az := storage.Instance(t)
	container := uniqueContainer(t)
	a := newLocker(t, az, container, Options{})
	b := newLocker(t, az, container, Options{PollInterval: 100 * time.Millisecond})
	held := mustLock(t, a, "xero")

	const wait = time.Second
	start := time.Now()
	lock, err := lockFor(b, "XERO", wait) // the same lock: names are case-insensitive
	elapsed := time.Since(start)
	if !errors.Is(err, broker.ErrLockTimeout) || errors.Is(err, broker.ErrLockUnavailable) {
		t.Fatalf("Lock while held = %v, %v; want ErrLockTimeout", lock, err)
	}
	var e *Error
	if !errors.As(err, &e) || !e.Timeout || e.Name != "XERO" || e.Container != container || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %#v; want a Timeout *Error naming the lock and container, wrapping the deadline", err)
	}
	if elapsed < wait || elapsed > wait+time.Second {
		t.Errorf("Lock gave up after %v; want at its %v deadline", elapsed, wait)
	}
	if e.Waited < wait {
		t.Errorf("Waited = %v; want at least %v", e.Waited, wait)
	}
	if err := record(held, broker.SharedStatus{Instance: "a"}); err != nil {
		t.Errorf("holder's write after the waiter gave up = %v; want its lease intact", err)
	}
	if err := release(held); err != nil {
		t.Fatal(err)
	}
	lock, err = lockFor(b, "xero", 2*time.Second)
	if err != nil {
		t.Fatalf("Lock after release = %v", err)
	}
	release(lock.(*heldLock))
}

// TestMissingContainerCreated checks that Lock creates the container and
// the blob, and that creating them again (as a racing instance would)
// neither fails nor replaces the blob with its lease and status.
func TestMissingContainerCreated(t *testing.T) {
	t.Parallel()
	az := storage.Instance(t)
	container := uniqueContainer(t)
	l := newLocker(t, az, container, Options{Instance: "creator"})
	ctx := context.Background()
	if _, err := l.container.GetProperties(ctx, nil); !bloberror.HasCode(err, bloberror.ContainerNotFound) {
		t.Fatalf("container before Lock: %v; want ContainerNotFound", err)
	}
	if s := readStatus(t, l, "xero"); s != (broker.SharedStatus{}) {
		t.Errorf("status without a container = %+v; want zero", s)
	}
	held := mustLock(t, l, "xero")
	if _, err := l.container.NewBlobClient("xero.lock").GetProperties(ctx, nil); err != nil {
		t.Fatalf("lock blob after Lock: %v", err)
	}
	if s := readStatus(t, l, "never-locked"); s != (broker.SharedStatus{}) {
		t.Errorf("status of a lock never taken = %+v; want zero", s)
	}
	if err := record(held, broker.SharedStatus{Failures: 2}); err != nil {
		t.Fatal(err)
	}
	if err := l.create(ctx, "xero.lock"); err != nil {
		t.Fatalf("creating an existing, leased blob = %v; want nil", err)
	}
	if s := readStatus(t, l, "xero"); s.Failures != 2 || s.Instance != "creator" {
		t.Errorf("status after a second create = %+v; want it kept", s)
	}
	if err := record(held, broker.SharedStatus{Failures: 3}); err != nil {
		t.Errorf("holder's write after a second create = %v; want its lease kept", err)
	}
	release(held)
}

// TestNonOwnerCannotRelease releases and writes with a lease id that is
// not the holder's, as a holder whose lease was taken over would, and
// checks the real holder keeps its lock.
func TestNonOwnerCannotRelease(t *testing.T) {
	t.Parallel()
	az := storage.Instance(t)
	container := uniqueContainer(t)
	a := newLocker(t, az, container, Options{})
	held := mustLock(t, a, "xero")

	stale := newLocker(t, az, container, Options{})
	stale.noRenew = true
	lc, err := lease.NewBlobClient(stale.container.NewBlobClient("xero.lock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	other := stale.hold("xero", "xero.lock", stale.container.NewBlobClient("xero.lock"), lc, time.Now())

	err = record(other, broker.SharedStatus{LastError: "x"})
	if !errors.Is(err, ErrNotHeld) {
		t.Errorf("RecordStatus with a stale lease id = %v; want ErrNotHeld", err)
	}
	err = release(other)
	var e *Error
	if !errors.Is(err, ErrNotHeld) || !errors.As(err, &e) || !e.NotHeld || e.Op != "release" || e.Code == "" {
		t.Fatalf("Release with a stale lease id = %#v; want an *Error wrapping ErrNotHeld with the service's code", err)
	}
	if err := release(other); err != nil {
		t.Errorf("second Release = %v; want nil", err)
	}

	if lock, err := lockFor(newLocker(t, az, container, Options{}), "xero", 500*time.Millisecond); !errors.Is(err, broker.ErrLockTimeout) {
		t.Fatalf("Lock after a stale release = %v, %v; want ErrLockTimeout: the holder still holds", lock, err)
	}
	if err := record(held, broker.SharedStatus{Instance: "a"}); err != nil {
		t.Errorf("holder's write after a stale release = %v", err)
	}
	if err := release(held); err != nil {
		t.Errorf("holder's Release = %v", err)
	}
}

// TestReleaseIsIdempotent checks Release twice, and use after Release.
func TestReleaseIsIdempotent(t *testing.T) {
	t.Parallel()
	az := storage.Instance(t)
	container := uniqueContainer(t)
	l := newLocker(t, az, container, Options{})
	held := mustLock(t, l, "xero")
	for i := range 2 {
		if err := release(held); err != nil {
			t.Fatalf("Release #%d = %v", i+1, err)
		}
	}
	if err := record(held, broker.SharedStatus{}); !errors.Is(err, ErrNotHeld) {
		t.Errorf("RecordStatus after Release = %v; want ErrNotHeld", err)
	}
	select {
	case <-held.Lost():
		t.Error("Lost closed by Release; want it closed only for a lease lost before Release")
	default:
	}
	lock, err := lockFor(newLocker(t, az, container, Options{}), "xero", time.Second)
	if err != nil {
		t.Fatalf("Lock right after Release = %v", err)
	}
	release(lock.(*heldLock))
}

// TestStatusSharedWithNonHolders records a status under the lock and
// reads it from another instance, while the lock is held and after.
func TestStatusSharedWithNonHolders(t *testing.T) {
	t.Parallel()
	az := storage.Instance(t)
	container := uniqueContainer(t)
	holder := newLocker(t, az, container, Options{Instance: "web-1"})
	reader := newLocker(t, az, container, Options{})
	held := mustLock(t, holder, "xero")

	ok := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	failed := broker.SharedStatus{
		LastRefresh: ok,
		LastError:   "invalid grant: the refresh token was revoked\n",
		Failures:    2,
		RecordedOn:  ok.Add(time.Minute),
	}
	if err := record(held, failed); err != nil {
		t.Fatal(err)
	}
	got := readStatus(t, reader, "xero")
	want := failed
	want.LastError = "invalid_grant__the_refresh_token_was_revoked_"
	want.Instance = "web-1" // from Options, as the status named none
	if !got.LastRefresh.Equal(want.LastRefresh) || !got.RecordedOn.Equal(want.RecordedOn) ||
		got.LastError != want.LastError || got.Failures != want.Failures || got.Instance != want.Instance {
		t.Errorf("status read by a non-holder = %+v; want %+v", got, want)
	}

	// A success replaces the whole record: no stale error survives it.
	success := broker.SharedStatus{LastRefresh: ok.Add(time.Hour), Instance: "web-2", RecordedOn: ok.Add(time.Hour)}
	if err := record(held, success); err != nil {
		t.Fatal(err)
	}
	if err := release(held); err != nil {
		t.Fatal(err)
	}
	got = readStatus(t, reader, "xero")
	if !got.LastRefresh.Equal(success.LastRefresh) || got.LastError != "" || got.Failures != 0 || got.Instance != "web-2" {
		t.Errorf("status after success and release = %+v; want %+v", got, success)
	}
	// Taking the lock again keeps the record.
	again := mustLock(t, reader, "xero")
	if got := readStatus(t, holder, "xero"); got.Instance != "web-2" {
		t.Errorf("status after a new Lock = %+v; want it kept", got)
	}
	release(again)
}

// TestBrokenLeaseClosesLost breaks the holder's lease from outside: its
// next renewal is refused and Lost closes.
func TestBrokenLeaseClosesLost(t *testing.T) {
	t.Parallel()
	az := storage.Instance(t)
	container := uniqueContainer(t)
	var logs logBuffer
	l := newLocker(t, az, container, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	l.renewEvery = 100 * time.Millisecond
	held := mustLock(t, l, "xero")
	breaker, err := lease.NewBlobClient(l.container.NewBlobClient("xero.lock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := breaker.BreakLease(context.Background(), &lease.BlobBreakOptions{BreakPeriod: to[int32](0)}); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(held.Lost(), 5*time.Second) {
		t.Fatal("Lost not closed after the lease was broken")
	}
	if !strings.Contains(logs.String(), "event=lock.lost") {
		t.Errorf("log = %q; want a lock.lost event", logs.String())
	}
	if err := record(held, broker.SharedStatus{}); !errors.Is(err, ErrNotHeld) {
		t.Errorf("RecordStatus on a broken lease = %v; want ErrNotHeld", err)
	}
	lock, err := lockFor(newLocker(t, az, container, Options{}), "xero", 2*time.Second)
	if err != nil {
		t.Fatalf("Lock after the break = %v", err)
	}
	release(lock.(*heldLock))
}

// testTakeoverAfterExpiry has a holder stop renewing, as a killed instance
// does. Another instance gets the lock when the lease expires, not
// before, and the old holder can then neither write nor release.
func testTakeoverAfterExpiry(t *testing.T) {
	az := storage.Instance(t)
	container := uniqueContainer(t)
	dead := newLocker(t, az, container, Options{LeaseDuration: lease15})
	dead.noRenew = true
	heir := newLocker(t, az, container, Options{LeaseDuration: lease15, PollInterval: 250 * time.Millisecond})

	start := time.Now()
	old := mustLock(t, dead, "xero")
	lock, err := lockFor(heir, "xero", 30*time.Second)
	if err != nil {
		t.Fatalf("Lock after the holder died = %v; want the lock once the lease expired", err)
	}
	took := time.Since(start)
	held := lock.(*heldLock)
	if took < lease15-500*time.Millisecond {
		t.Fatalf("took the lock after %v, before the %v lease could have expired", took, lease15)
	}

	err = record(old, broker.SharedStatus{LastError: "stale"})
	var e *Error
	if !errors.As(err, &e) || !e.NotHeld || e.StatusCode == 0 {
		t.Errorf("old holder's RecordStatus = %v; want the service to refuse it (ErrNotHeld)", err)
	}
	if err := release(old); !errors.Is(err, ErrNotHeld) {
		t.Errorf("old holder's Release = %v; want ErrNotHeld", err)
	}
	if lock, err := lockFor(newLocker(t, az, container, Options{}), "xero", 500*time.Millisecond); !errors.Is(err, broker.ErrLockTimeout) {
		t.Errorf("Lock after the old holder's release = %v, %v; want ErrLockTimeout: the new holder still holds", lock, err)
	}
	if err := record(held, broker.SharedStatus{Instance: "heir"}); err != nil {
		t.Errorf("new holder's write = %v", err)
	}
	if s := readStatus(t, heir, "xero"); s.LastError != "" || s.Instance != "heir" {
		t.Errorf("status = %+v; want the new holder's only", s)
	}
	if err := release(held); err != nil {
		t.Error(err)
	}
}

// testRenewalOutlastsLease holds a 15 s lease for longer than 15 s while
// another instance keeps trying to take it. The Lock call's context ends
// at once: renewal must not depend on it.
func testRenewalOutlastsLease(t *testing.T) {
	az := storage.Instance(t)
	container := uniqueContainer(t)
	holder := newLocker(t, az, container, Options{LeaseDuration: lease15})
	ctx, cancel := context.WithCancel(context.Background())
	lock, err := holder.Lock(ctx, "xero")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	held := lock.(*heldLock)

	const wait = lease15 + 2*time.Second
	other := newLocker(t, az, container, Options{LeaseDuration: lease15})
	if lock, err := lockFor(other, "xero", wait); !errors.Is(err, broker.ErrLockTimeout) {
		t.Fatalf("Lock for %v against a renewing holder = %v, %v; want ErrLockTimeout", wait, lock, err)
	}
	select {
	case <-held.Lost():
		t.Fatal("Lost closed while renewals succeed")
	default:
	}
	if err := record(held, broker.SharedStatus{Instance: "holder"}); err != nil {
		t.Errorf("holder's write after %v = %v; want the lease still its own", wait, err)
	}
	if err := release(held); err != nil {
		t.Fatal(err)
	}
	lock, err = lockFor(other, "xero", 2*time.Second)
	if err != nil {
		t.Fatalf("Lock after release = %v", err)
	}
	release(lock.(*heldLock))
}

// testStorageDown stops Azurite under a held lock: Lock and ReadStatus
// report ErrLockUnavailable within seconds, and the held lock's Lost
// closes before its lease could have expired. When storage comes back
// (empty), locking works again.
func testStorageDown(t *testing.T) {
	az := azurite.Start(t) // its own: this test stops it
	container := uniqueContainer(t)
	var logs logBuffer
	l := newLocker(t, az, container, Options{LeaseDuration: lease15, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	acquired := time.Now()
	held := mustLock(t, l, "held")

	if err := az.Stop(); errors.Is(err, azurite.ErrExternal) {
		t.Skip("cannot stop the Azurite at AZURITE_BLOB_ENDPOINT")
	}
	start := time.Now()
	lock, err := lockFor(l, "other", 30*time.Second)
	if !errors.Is(err, broker.ErrLockUnavailable) {
		t.Fatalf("Lock with storage down = %v, %v; want ErrLockUnavailable", lock, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Lock with storage down took %v; want a few seconds at most", d)
	}
	if _, err := l.ReadStatus(context.Background(), "held"); !errors.Is(err, broker.ErrLockUnavailable) {
		t.Errorf("ReadStatus with storage down = %v; want ErrLockUnavailable", err)
	}

	if !closedWithin(held.Lost(), lease15+5*time.Second) {
		t.Fatal("Lost not closed although no renewal can succeed")
	}
	lostAfter := time.Since(acquired)
	if lostAfter >= lease15 {
		t.Errorf("Lost closed %v after Lock; want before the %v lease could expire", lostAfter, lease15)
	}
	if lostAfter < lease15/2 {
		t.Errorf("Lost closed %v after Lock; want renewals retried for most of the lease", lostAfter)
	}
	log := logs.String()
	if !strings.Contains(log, "event=lock.renew_failed") || !strings.Contains(log, "event=lock.lost") {
		t.Errorf("log = %q; want renew_failed and lost events", log)
	}
	if strings.Contains(log, azurite.AccountKey) || strings.Contains(log, "comp=lease") {
		t.Errorf("log shows the key or request URLs: %q", log)
	}
	err = release(held)
	if !errors.Is(err, broker.ErrLockUnavailable) {
		t.Errorf("Release with storage down = %v; want ErrLockUnavailable", err)
	}

	if err := az.Restart(); err != nil {
		t.Fatal(err)
	}
	// The blob is gone with the old process: the release, tried again,
	// finds nothing to release.
	if err := release(held); !errors.Is(err, ErrNotHeld) {
		t.Errorf("Release after storage came back empty = %v; want ErrNotHeld", err)
	}
	lock = mustLock(t, l, "other")
	release(lock.(*heldLock))
}
