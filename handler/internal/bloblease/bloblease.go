// Package bloblease implements broker.Locker with Azure Blob Storage
// leases: one empty blob per lock name in one container, and a lease on
// that blob for as long as the lock is held.
//
// The storage service grants a blob's lease to one lease id at a time and
// checks that id on every renewal, release and write, so holders on any
// number of machines exclude each other without trusting each other's
// clocks. A lease lasts 15 to 60 seconds unless renewed: a holder renews it
// in the background, and a holder that crashed keeps others waiting only
// until its lease runs out.
//
// The lock blob's metadata also keeps the connection's broker.SharedStatus
// (a held lock is a broker.StatusRecorder, the Locker a
// broker.StatusReader), so that every instance reports what the latest
// refresh did, whichever instance made it.
package bloblease

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

const (
	// DefaultContainer is the container of lock blobs when
	// Options.Container is empty.
	DefaultContainer = "token-locks"
	// MinLeaseDuration and MaxLeaseDuration are the blob service's bounds
	// on a lease that expires.
	MinLeaseDuration = 15 * time.Second
	MaxLeaseDuration = 60 * time.Second
	// DefaultLeaseDuration is the lease duration when
	// Options.LeaseDuration is zero.
	DefaultLeaseDuration = 30 * time.Second
	// DefaultPollInterval is the mean wait between attempts to take a
	// lease someone else holds when Options.PollInterval is zero.
	DefaultPollInterval = 500 * time.Millisecond
)

// Options configure a Locker.
type Options struct {
	// Container holds the lock blobs. It is created on first use. Empty
	// means DefaultContainer.
	Container string
	// LeaseDuration is how long a lease lasts without renewal, in whole
	// seconds from MinLeaseDuration to MaxLeaseDuration; zero means
	// DefaultLeaseDuration. A holder renews its lease while it holds the
	// lock, so this bounds how long a crashed instance keeps the others
	// waiting, and also how long a live holder can go without reaching
	// storage before it must consider its lock lost.
	LeaseDuration time.Duration
	// PollInterval is the mean wait between attempts to take a lease that
	// someone else holds. Each wait is drawn from ±50% around it, so that
	// waiters that started together do not retry in step. Zero means
	// DefaultPollInterval.
	PollInterval time.Duration
	// Instance names this instance in recorded status when the
	// SharedStatus given to RecordStatus names none.
	Instance string
	// Logger receives what happens out of any caller's sight: a failed
	// renewal (Warn) and a lost lease (Error). Nil discards.
	Logger *slog.Logger
}

// Locker is a broker.Locker on blob leases. The lock named n is a lease on
// the blob <lower-case n>.lock in the container; names are case-insensitive,
// as the secret names they go with are in Key Vault. Lock blobs are never
// deleted: deleting one that another instance is about to lease would not
// break anything, but keeping them keeps the status recorded in their
// metadata.
//
// A Locker is safe for concurrent use. Two Lock calls exclude each other
// whether they share a Locker, a process or nothing but the storage
// account.
type Locker struct {
	container     *container.Client
	containerName string
	duration      time.Duration
	poll          time.Duration
	instance      string
	log           *slog.Logger

	// Test hooks. renewEvery overrides the renewal period, and noRenew
	// makes held locks never renew, as a holder that was killed would.
	// now, when set, is the clock Held reads.
	renewEvery time.Duration
	noRenew    bool
	now        func() time.Time
}

var (
	_ broker.Locker         = (*Locker)(nil)
	_ broker.StatusReader   = (*Locker)(nil)
	_ broker.StatusRecorder = (*heldLock)(nil)
)

// ClientOptions returns options for the azblob.Client given to New. With
// the SDK's default retry policy (four tries, no per-try timeout, delays up
// to a minute) a request to an unreachable account can take minutes to
// fail, longer than a caller waits for a token and longer than a lease
// lasts. These give three tries: a refused connection fails in about a
// second, a request nobody answers in about 16 seconds (three tries of 5).
// Lock reports ErrLockUnavailable as soon as a request fails, and a held
// lock retries a failed renewal while the lease lasts, so both depend on
// a request failing while there is time to act on it.
func ClientOptions() *azblob.ClientOptions {
	return &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{
		MaxRetries:    2,
		TryTimeout:    5 * time.Second,
		RetryDelay:    200 * time.Millisecond,
		MaxRetryDelay: time.Second,
	}}}
}

// New returns a Locker keeping its lock blobs in o.Container of client's
// storage account. Build client with ClientOptions. New does not contact
// storage; the container is created by the first Lock that needs it.
func New(client *azblob.Client, o Options) (*Locker, error) {
	if client == nil {
		return nil, errors.New("bloblease: nil client")
	}
	name := o.Container
	if name == "" {
		name = DefaultContainer
	}
	if !validContainer(name) {
		return nil, fmt.Errorf("bloblease: container %q: a container name is 3-63 characters of a-z, 0-9 and -, starting and ending with a letter or digit, without \"--\"", name)
	}
	d := o.LeaseDuration
	if d == 0 {
		d = DefaultLeaseDuration
	}
	if d < MinLeaseDuration || d > MaxLeaseDuration || d%time.Second != 0 {
		return nil, fmt.Errorf("bloblease: lease duration %v: the blob service takes whole seconds from %v to %v", d, MinLeaseDuration, MaxLeaseDuration)
	}
	poll := o.PollInterval
	if poll <= 0 {
		poll = DefaultPollInterval
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Locker{
		container:     client.ServiceClient().NewContainerClient(name),
		containerName: name,
		duration:      d,
		poll:          poll,
		instance:      o.Instance,
		log:           log,
	}, nil
}

// validContainer reports whether name is a valid blob container name.
func validContainer(name string) bool {
	if len(name) < 3 || len(name) > 63 || name[0] == '-' || name[len(name)-1] == '-' || strings.Contains(name, "--") {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// NameError reports a lock name that is not 1-200 characters of letters,
// digits, '-', '_' and '.', starting with a letter or digit. Such a name
// maps to one plain blob name, with no path separators or dots to be
// resolved away.
type NameError struct {
	Name string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("bloblease: invalid lock name %q: want 1-200 characters of letters, digits, '-', '_' and '.', starting with a letter or digit", e.Name)
}

// blobName maps a valid lock name to its blob's name.
func blobName(name string) (string, error) {
	if name == "" || len(name) > 200 || !isAlnum(name[0]) {
		return "", &NameError{Name: name}
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return "", &NameError{Name: name}
		}
	}
	return strings.ToLower(name) + ".lock", nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// ErrNotHeld is wrapped by the errors of a held lock's operations when its
// lease is no longer its own: it expired and was taken by another holder,
// was broken, or the blob was deleted.
var ErrNotHeld = errors.New("lease is no longer held by this lock")

// Error reports a failed operation on a lock blob. It wraps
// broker.ErrLockTimeout when Lock gave up on a lease someone else held,
// ErrNotHeld when a held lock's lease turned out to be gone, and
// broker.ErrLockUnavailable for everything else (storage unreachable,
// refused the credentials, or failed); and, always, the cause (the SDK's
// error, often an *azcore.ResponseError, or the context's).
//
// Error's message names the status and the storage error code but not the
// request URL, which could carry a SAS token.
type Error struct {
	// Op is what failed: "lock", "renew", "release", "record status",
	// "read status", or one of the write-ahead record's ("read write-ahead
	// record", "write write-ahead record", "clear write-ahead record",
	// "check write-ahead record").
	Op string
	// Name is the lock name.
	Name string
	// Container is the container of the lock blob.
	Container string
	// Code is the storage service's error code, such as
	// "LeaseAlreadyPresent" or "AuthorizationFailure"; empty when no
	// answer came.
	Code string
	// StatusCode is the HTTP status of the answer; zero when no answer
	// came.
	StatusCode int
	// Timeout is set when Lock found the lease held by another holder
	// until the caller's context was done.
	Timeout bool
	// NotHeld is set when the lease was no longer this lock's.
	NotHeld bool
	// Waited is how long Lock tried; zero for other operations.
	Waited time.Duration
	Err    error
}

func newError(op, name, container string, err error) *Error {
	e := &Error{Op: op, Name: name, Container: container, Err: err}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		e.Code, e.StatusCode = re.ErrorCode, re.StatusCode
	}
	return e
}

func (e *Error) Error() string {
	if e.Timeout {
		return fmt.Sprintf("bloblease: lock %q (container %q) still held by another refresh after %v", e.Name, e.Container, e.Waited.Round(time.Millisecond))
	}
	var cause string
	switch {
	case e.StatusCode != 0 && e.Code != "":
		cause = fmt.Sprintf("HTTP %d %s", e.StatusCode, e.Code)
	case e.StatusCode != 0:
		cause = fmt.Sprintf("HTTP %d", e.StatusCode)
	default:
		cause = describe(e.Err)
	}
	if e.NotHeld {
		cause = "lease no longer held by this lock (" + cause + ")"
	}
	return fmt.Sprintf("bloblease: %s %q (container %q): %s", e.Op, e.Name, e.Container, cause)
}

// describe says what went wrong with a request that got no answer, without
// the request URL a *url.Error would print.
func describe(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}

// Unwrap returns the sentinel that classifies e, and the cause.
func (e *Error) Unwrap() []error {
	switch {
	case e.Timeout:
		return []error{broker.ErrLockTimeout, e.Err}
	case e.NotHeld:
		return []error{ErrNotHeld, e.Err}
	}
	return []error{broker.ErrLockUnavailable, e.Err}
}

// notHeld reports whether a lease or write answer means the lease is not
// ours. Azure and Azurite differ on which code a lease in the Available or
// Expired state gets, so all of them count.
func notHeld(err error) bool {
	return bloberror.HasCode(err,
		bloberror.LeaseIDMismatchWithLeaseOperation,
		bloberror.LeaseNotPresentWithLeaseOperation,
		bloberror.LeaseIsBrokenAndCannotBeRenewed,
		bloberror.LeaseAlreadyBroken,
		bloberror.LeaseLost,
		bloberror.LeaseIDMismatchWithBlobOperation,
		bloberror.LeaseNotPresentWithBlobOperation,
		bloberror.BlobNotFound,
		bloberror.ContainerNotFound,
	)
}

// Lock takes the named lock: it acquires the lease on the lock blob,
// creating the container and the blob if they are missing, and while
// someone else holds the lease tries again at jittered intervals until ctx
// is done. It returns an *Error (or a *NameError): Timeout when the lease
// was held by another throughout, otherwise at the first failure of
// storage, without waiting, so that a caller can fall back at once.
//
// ctx bounds only the wait: the returned lock renews its lease until
// Release, whatever becomes of ctx.
func (l *Locker) Lock(ctx context.Context, name string) (broker.Lock, error) {
	bn, err := blobName(name)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	b := l.container.NewBlobClient(bn)
	lc, err := lease.NewBlobClient(b, nil) // a fresh random lease id
	if err != nil {
		return nil, newError("lock", name, l.containerName, err)
	}
	// #nosec G115 -- New checks the lease duration is 15-60 s
	seconds := int32(l.duration / time.Second)
	held := false // someone else held the lease at some attempt
	creates := 0
	poll := broker.NewLockPoller(l.poll)
	defer poll.Stop()
	for {
		sent := time.Now()
		_, err := lc.AcquireLease(ctx, seconds, nil)
		switch {
		case err == nil:
			return l.hold(name, bn, b, lc, sent), nil
		case bloberror.HasCode(err, bloberror.LeaseAlreadyPresent, bloberror.LeaseIsBreakingAndCannotBeAcquired):
			held = true
		case bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) && creates < 3:
			// Three rounds: someone may delete what was just created,
			// but not forever.
			creates++
			if err := l.create(ctx, bn); err != nil {
				return nil, l.lockError(ctx, name, start, held, err)
			}
			continue
		case ctx.Err() != nil:
			// The request itself may have been granted before ctx ended.
			// Release is owner-checked, so trying costs nothing if not,
			// and spares the next holder a full lease period if so.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_, _ = lc.ReleaseLease(rctx, nil)
			cancel()
			return nil, l.lockError(ctx, name, start, held, err)
		default:
			return nil, l.lockError(ctx, name, start, held, err)
		}
		if err := poll.Wait(ctx); err != nil {
			return nil, l.lockError(ctx, name, start, held, err)
		}
	}
}

// lockError is Lock's failure. Running out of time is a timeout only if
// someone held the lease: if storage never answered, the caller should
// hear that storage is the trouble.
func (l *Locker) lockError(ctx context.Context, name string, start time.Time, held bool, err error) *Error {
	e := newError("lock", name, l.containerName, err)
	e.Waited = time.Since(start)
	e.Timeout = held && ctx.Err() != nil
	return e
}

// create makes the lock blob, and its container if need be. Both may be
// created concurrently by other instances, which is fine. The upload is
// conditional on the blob not existing, so that it never replaces a blob
// with its lease and recorded status.
func (l *Locker) create(ctx context.Context, bn string) error {
	bb := l.container.NewBlockBlobClient(bn)
	upload := func() error {
		_, err := bb.Upload(ctx, streaming.NopCloser(bytes.NewReader(nil)), &blockblob.UploadOptions{
			AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to(azcore.ETagAny)}},
		})
		// Azure answers a leased blob with LeaseIdMissing before looking
		// at the condition; Azurite with BlobAlreadyExists.
		if bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet, bloberror.LeaseIDMissing) {
			return nil
		}
		return err
	}
	err := upload()
	if !bloberror.HasCode(err, bloberror.ContainerNotFound) {
		return err
	}
	if _, err := l.container.Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return err
	}
	return upload()
}

func to[T any](v T) *T { return &v }

// ReadStatus returns the status last recorded beside the named lock, read
// without taking the lock. A lock whose blob or container does not exist
// yet has a zero status. Values that do not parse read as zero: the
// metadata can be edited by hand.
func (l *Locker) ReadStatus(ctx context.Context, name string) (broker.SharedStatus, error) {
	bn, err := blobName(name)
	if err != nil {
		return broker.SharedStatus{}, err
	}
	props, err := l.container.NewBlobClient(bn).GetProperties(ctx, nil)
	if err != nil {
		var re *azcore.ResponseError
		if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) ||
			errors.As(err, &re) && re.StatusCode == 404 { // HEAD: some answers carry no code
			return broker.SharedStatus{}, nil
		}
		return broker.SharedStatus{}, newError("read status", name, l.containerName, err)
	}
	return decodeStatus(props.Metadata), nil
}

// hold starts keeping a freshly acquired lease. sent is when the acquire
// request left: the lease runs for the lease duration from some moment
// after that, so counting from sent never overestimates what is left.
func (l *Locker) hold(name, bn string, b *blob.Client, lc *lease.BlobClient, sent time.Time) *heldLock {
	ctx, cancel := context.WithCancel(context.Background())
	h := &heldLock{
		l:           l,
		name:        name,
		blob:        b,
		block:       l.container.NewBlockBlobClient(bn),
		lease:       lc,
		lost:        make(chan struct{}),
		stopRenewal: cancel,
		renewed:     make(chan struct{}),
		heldUntil:   sent.Add(l.duration - l.duration/6),
	}
	if l.noRenew {
		close(h.renewed)
		return h
	}
	go h.renew(ctx, sent)
	return h
}

// heldLock is a held lease.
type heldLock struct {
	l     *Locker
	name  string
	blob  *blob.Client
	block *blockblob.Client // the same blob, for writing its content
	lease *lease.BlobClient

	lost        chan struct{}
	lostOnce    sync.Once
	stopRenewal context.CancelFunc
	renewed     chan struct{} // closed when the renewal goroutine has returned

	releaseMu sync.Mutex // one release request at a time
	mu        sync.Mutex
	released  bool // the lease was released, or found not ours, by Release
	// meta is the blob's metadata (the recorded status) as last read or
	// written under this lease; writing the blob's content replaces its
	// metadata, so the write-ahead record carries it along. metaKnown is
	// false until it has been read or written.
	meta      map[string]*string
	metaKnown bool
	// heldUntil is when the renewal gives up unless a renewal succeeds
	// first: a sixth of the lease before the earliest time the lease,
	// counted from the latest acquire or renewal request that succeeded,
	// can expire.
	heldUntil time.Time
}

// Lost returns a channel that is closed when the lease is lost before
// Release: a renewal was refused because the lease is no longer this
// lock's, or no renewal succeeded while the lease had more than a sixth of
// its duration left. In the second case the lease may still be held; the
// lock closes Lost before the lease could expire so that its holder stops
// while no one else can yet have taken over.
func (h *heldLock) Lost() <-chan struct{} { return h.lost }

func (h *heldLock) markLost() { h.lostOnce.Do(func() { close(h.lost) }) }

// Held reports whether the lease is this lock's now: not released, Lost
// not closed, and the latest successful renewal (or the acquire) still
// covers this moment with a sixth of the lease to spare. The last
// condition needs no request and does not wait for the renewal goroutine:
// a renewal stuck in a slow request has not closed Lost yet when the
// margin is already gone.
func (h *heldLock) Held() bool {
	select {
	case <-h.lost:
		return false
	default:
	}
	now := time.Now()
	if h.l.now != nil {
		now = h.l.now()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.released && now.Before(h.heldUntil)
}

// renew renews the lease until ctx is cancelled or the lease is lost.
//
// It renews at a third of the lease duration: a renewal that fails for a
// passing reason (a timeout, a 503) then leaves two thirds of the lease to
// try again, every fifteenth of the duration, before the holder must give
// up. It gives up, closing Lost, when less than a sixth is left: that
// margin covers the time between the holder's last look at Lost and its
// last action under the lock.
func (h *heldLock) renew(ctx context.Context, sent time.Time) {
	defer close(h.renewed)
	d := h.l.duration
	every := d / 3
	if h.l.renewEvery > 0 {
		every = h.l.renewEvery
	}
	retry := d / 15
	giveUp := sent.Add(d - d/6)
	timer := time.NewTimer(every)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		rctx, cancel := context.WithDeadline(ctx, giveUp)
		sent := time.Now()
		_, err := h.lease.RenewLease(rctx, nil)
		cancel()
		switch {
		case err == nil:
			giveUp = sent.Add(d - d/6)
			h.mu.Lock()
			h.heldUntil = giveUp
			h.mu.Unlock()
			timer.Reset(every)
			continue
		case ctx.Err() != nil:
			return // released meanwhile
		case notHeld(err):
			e := newError("renew", h.name, h.l.containerName, err)
			h.l.log.Error("lease lost: renewal refused", "event", "lock.lost", "lock", h.name, "container", h.l.containerName, "code", e.Code, "error", e.Error())
			h.markLost()
			return
		}
		e := newError("renew", h.name, h.l.containerName, err)
		left := time.Until(giveUp)
		if left <= 0 {
			h.l.log.Error("lease lost: no renewal succeeded in time", "event", "lock.lost", "lock", h.name, "container", h.l.containerName, "code", e.Code, "error", e.Error())
			h.markLost()
			return
		}
		h.l.log.Warn("lease renewal failed; retrying", "event", "lock.renew_failed", "lock", h.name, "container", h.l.containerName, "code", e.Code, "error", e.Error(), "giveUpIn", left.Round(time.Millisecond).String())
		timer.Reset(min(retry/2+rand.N(retry), left)) // #nosec G404 -- jitter that spreads renewal retries; nothing depends on it being unpredictable
	}
}

// Release stops renewing and releases the lease, owner-checked by its
// lease id: if the lease has meanwhile gone to another holder, the blob
// service refuses the release and their hold is untouched. Release then
// returns an *Error wrapping ErrNotHeld, which tells the caller that
// someone else may have worked under the lock too. Once a Release has
// succeeded or reported ErrNotHeld, later calls return nil; after any
// other failure a later call tries again (the lease expires by itself
// meanwhile, renewal having stopped).
func (h *heldLock) Release(ctx context.Context) error {
	h.stopRenewal()
	<-h.renewed
	h.mu.Lock()
	h.heldUntil = time.Time{} // not renewed any more: Held is false from here
	h.mu.Unlock()
	h.releaseMu.Lock()
	defer h.releaseMu.Unlock()
	if h.isReleased() {
		return nil
	}
	_, err := h.lease.ReleaseLease(ctx, nil)
	if err == nil {
		h.setReleased()
		return nil
	}
	e := newError("release", h.name, h.l.containerName, err)
	if notHeld(err) {
		h.setReleased()
		e.NotHeld = true
	}
	return e
}

func (h *heldLock) isReleased() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.released
}

func (h *heldLock) setReleased() {
	h.mu.Lock()
	h.released = true
	h.mu.Unlock()
}

// RecordStatus writes s into the lock blob's metadata, replacing what was
// recorded before. The write carries the lease id, so the blob service
// accepts it only while this lock holds the lease: an *Error wrapping
// ErrNotHeld otherwise, without a request once Release has run. Text
// fields are cut down to letters, digits, '_', '.' and '-' (HTTP header
// values, which metadata is, allow little else) and to a bounded length.
func (h *heldLock) RecordStatus(ctx context.Context, s broker.SharedStatus) error {
	if h.isReleased() {
		return &Error{Op: "record status", Name: h.name, Container: h.l.containerName, NotHeld: true, Err: errReleased}
	}
	if s.Instance == "" {
		s.Instance = h.l.instance
	}
	md := encodeStatus(s)
	h.mu.Lock()
	for k, v := range h.meta {
		// A redemption mark stays until settled, and what the content is
		// stays with the content (writeahead.go).
		if isMarkKey(k) || isRecordKey(k) {
			md[k] = v
		}
	}
	h.mu.Unlock()
	_, err := h.blob.SetMetadata(ctx, md, &blob.SetMetadataOptions{
		AccessConditions: &blob.AccessConditions{LeaseAccessConditions: &blob.LeaseAccessConditions{LeaseID: h.lease.LeaseID()}},
	})
	if err != nil {
		e := newError("record status", h.name, h.l.containerName, err)
		e.NotHeld = notHeld(err)
		return e
	}
	h.mu.Lock()
	h.meta, h.metaKnown = md, true
	h.mu.Unlock()
	return nil
}

// errReleased is the cause of using a lock after Release.
var errReleased = errors.New("lock released")
