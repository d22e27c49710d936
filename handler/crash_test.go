package main

// Crash tests: an instance killed at each point of a refresh, and what the
// next caller on another instance gets. The instance that dies is a child
// process (this test binary, re-run in crashChild mode) so that SIGKILL
// lands at an exact point of the protocol: a wrapper around the grant or
// the store kills the process there. Everything else is real: the local
// store on disk, blob leases on Azurite, the oauth client, the strict
// provider.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/azurite"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/bloblease"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// Where the child kills itself. The host ends a worker with
// Process.Kill() (azure-functions-host,
// src/WebJobs.Script/Workers/ProcessManagement/WorkerProcess.cs, Dispose):
// SIGKILL, so each point is a SIGKILL too.
const (
	crashBeforeProvider = "before-provider" // lock held, provider not called
	crashAfterProvider  = "after-provider"  // provider answered, nothing persisted
	// Both tokens stored, lock not released. With the access token
	// beside the lock: killed once the access-token record has replaced
	// the write-ahead record (killingKeep).
	crashAfterPersist = "after-persist"
	// The store refuses the refresh token; the child answers its caller
	// (the refresh token is in the write-ahead record) and is killed.
	crashStoreRefused = "store-refused"
	// The store refuses; killed during its retries, lock held, the
	// write-ahead record written.
	crashWhileRecord = "while-record"
	// Killed after the write-ahead record, before the store write.
	crashBeforeStore = "before-store"
	// The store refused, then came back; the sweep moved the record into
	// the store, and the child is killed before clearing the record.
	crashAfterOutage = "after-outage"

	// The loss window itself, and each point of the write-ahead write:
	//
	// The provider has committed the rotation and holds its answer
	// (testprovider.FaultCommitThenHold); the parent kills the child
	// there. No client can close this window.
	crashProviderCommitted = "provider-committed"
	// Killed as the write-ahead write begins: nothing of it written.
	crashRecordStart = "record-start"
	// Local journal only: killed in the middle of the append, half a
	// line written.
	crashRecordTorn = "record-torn"
	// Killed once the write-ahead write is done, before it returned.
	crashRecordWritten = "record-written"

	// The access token beside the lock only: the store has taken the
	// refresh token, and the kill lands as the access-token record is to
	// replace the write-ahead record (which carries the access token too).
	crashBeforeKeep = "before-keep"
)

// Lock backends of the crash tests.
const (
	lockBlob  = "blob"  // leases on Azurite, the record in the lock blob
	lockLocal = "local" // file locks, the record in the journal
)

// Instance names of the crash tests' two instances.
const (
	childInstance = "crash-child-1"
	nextInstance  = "next-2"
)

// crashEnv is the environment variable that turns the test binary into a
// crashing child; its value is the crash point.
const crashEnv = "TOKENREFRESHER_CRASH_CHILD"

// crashLease is the lease of the crash tests: the shortest Azure allows, so
// the next caller's wait for a dead holder's lease is short.
const crashLease = 15 * time.Second

// crashConnection is the connection both sides use.
func crashConnection(tokenURL string, grace time.Duration) broker.Connection {
	return broker.Connection{
		Name: "xero", Provider: "test", Grant: broker.GrantRefreshToken, TokenURL: tokenURL,
		AuthStyle: broker.AuthBasic, ClientID: "client", Secrets: broker.DefaultSecretNames("xero"),
		Rotating: true, ReuseGrace: grace, RefreshBefore: time.Minute, DefaultLifetime: time.Hour,
	}
}

// crashBroker builds an instance on the shared state directory and, with
// lockBlob, Azurite. beside keeps the access token beside the lock, as
// backends.NewBroker does for ACCESS_TOKEN_STORE=blob (blob lock only).
func crashBroker(lockKind string, beside bool, instance, stateDir, storage, container, tokenURL string, grace time.Duration, wrap func(broker.SecretStore, broker.Grant, broker.Locker) (broker.SecretStore, broker.Grant, broker.Locker), logger *slog.Logger) (*broker.Broker, error) {
	store, err := local.NewStore(stateDir)
	if err != nil {
		return nil, err
	}
	var locker broker.Locker
	if lockKind == lockLocal {
		locker, err = local.NewLocker(stateDir, local.LockerOptions{PollInterval: 20 * time.Millisecond})
	} else {
		var bc *azblob.Client
		bc, err = azblob.NewClientFromConnectionString(storage, bloblease.ClientOptions())
		if err == nil {
			locker, err = bloblease.New(bc, bloblease.Options{Container: container, LeaseDuration: crashLease, PollInterval: 100 * time.Millisecond})
		}
	}
	if err != nil {
		return nil, err
	}
	var s broker.SecretStore = store
	var g broker.Grant = oauth.New(oauth.Options{})
	l := locker
	if wrap != nil {
		s, g, l = wrap(s, g, locker)
	}
	return broker.New(broker.Options{
		Store: s, Locker: l, Grant: g, Instance: instance, Logger: logger,
		// The key is written to the store unwrapped: the faults are the
		// refresh token's.
		WriteAheadKey: broker.StoredKey(store, locker),
		Connections:   []broker.Connection{crashConnection(tokenURL, grace)},
		// Sealed under the same write-ahead key, in the lock blob.
		AccessTokensBesideLock: beside,
		// Long enough to outwait a dead holder's lease.
		LockWait: crashLease + 10*time.Second,
	})
}

// crashLocker is a locker on the crash test's container, for looking at
// the lock blob.
func crashLocker(t *testing.T, storage, container string) *bloblease.Locker {
	t.Helper()
	bc, err := azblob.NewClientFromConnectionString(storage, bloblease.ClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	l, err := bloblease.New(bc, bloblease.Options{Container: container, LeaseDuration: crashLease})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// killSelf ends the process the way SIGKILL does: no deferred function, no
// lease release, no flush.
func killSelf() {
	p, _ := os.FindProcess(os.Getpid())
	_ = p.Kill()
	select {} // the signal is asynchronous
}

type killingGrant struct {
	broker.Grant
	point string
}

func (g killingGrant) Token(ctx context.Context, c *broker.Connection, cred broker.Credentials) (*broker.Token, error) {
	if g.point == crashBeforeProvider {
		killSelf()
	}
	tok, err := g.Grant.Token(ctx, c, cred)
	if g.point == crashAfterProvider {
		killSelf()
	}
	return tok, err
}

// hookedLocker hands out locks whose write-ahead write runs through
// write, and whose keeping of an access-token record through keep (when
// not nil): the crash tests kill there, the benchmark times the first. It
// forwards every optional interface the broker looks for on a Locker and
// a Lock.
type hookedLocker struct {
	broker.Locker
	write writeHook
	keep  keepHook
}

// writeHook runs a write-ahead write of the lock name through wal.
type writeHook func(ctx context.Context, name string, wal broker.WriteAheadLog, rec []byte) error

// keepHook runs the keeping of an access-token record through log.
type keepHook func(ctx context.Context, log broker.AccessTokenLog, rec []byte) error

func (l hookedLocker) Lock(ctx context.Context, name string) (broker.Lock, error) {
	lk, err := l.Locker.Lock(ctx, name)
	if err != nil {
		return nil, err
	}
	return &hookedLock{Lock: lk, name: name, write: l.write, keep: l.keep}, nil
}

func (l hookedLocker) ReadBesideLock(ctx context.Context, name string) ([]byte, error) {
	return l.Locker.(broker.BesideLockReader).ReadBesideLock(ctx, name)
}

func (l hookedLocker) ReadStatus(ctx context.Context, name string) (broker.SharedStatus, error) {
	return l.Locker.(broker.StatusReader).ReadStatus(ctx, name)
}

func (l hookedLocker) HasWriteAhead(ctx context.Context, name string) (bool, error) {
	return l.Locker.(broker.WriteAheadChecker).HasWriteAhead(ctx, name)
}

type hookedLock struct {
	broker.Lock
	name  string
	write writeHook
	keep  keepHook
}

func (l *hookedLock) KeepAccessToken(ctx context.Context, rec []byte) error {
	log := l.Lock.(broker.AccessTokenLog)
	if l.keep == nil {
		return log.KeepAccessToken(ctx, rec)
	}
	return l.keep(ctx, log, rec)
}

func (l *hookedLock) WriteAhead(ctx context.Context, rec []byte) error {
	return l.write(ctx, l.name, l.Lock.(broker.WriteAheadLog), rec)
}
func (l *hookedLock) ReadWriteAhead(ctx context.Context) ([]byte, error) {
	return l.Lock.(broker.WriteAheadLog).ReadWriteAhead(ctx)
}
func (l *hookedLock) ClearWriteAhead(ctx context.Context) error {
	return l.Lock.(broker.WriteAheadLog).ClearWriteAhead(ctx)
}
func (l *hookedLock) RecordStatus(ctx context.Context, s broker.SharedStatus) error {
	return l.Lock.(broker.StatusRecorder).RecordStatus(ctx, s)
}
func (l *hookedLock) MarkRedemption(ctx context.Context, r broker.Redemption) error {
	return l.Lock.(broker.RedemptionMarker).MarkRedemption(ctx, r)
}
func (l *hookedLock) PendingRedemption(ctx context.Context) (broker.Redemption, bool, error) {
	return l.Lock.(broker.RedemptionMarker).PendingRedemption(ctx)
}
func (l *hookedLock) ClearRedemption(ctx context.Context) error {
	return l.Lock.(broker.RedemptionMarker).ClearRedemption(ctx)
}

// killingWrite kills the process at point inside the write-ahead write.
// journal is the local journal's path, for the torn append.
func killingWrite(point, journal string) writeHook {
	return func(ctx context.Context, _ string, wal broker.WriteAheadLog, rec []byte) error {
		switch point {
		case crashRecordStart:
			killSelf()
		case crashRecordTorn:
			// Half of the line the journal appends (base64, then a
			// newline), as a kill in the middle of write(2) leaves it.
			line := base64.StdEncoding.EncodeToString(rec)
			f, err := os.OpenFile(journal, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
			if err == nil {
				_, _ = f.WriteString(line[:len(line)/2])
				_ = f.Sync()
			}
			killSelf()
		}
		err := wal.WriteAhead(ctx, rec)
		if point == crashRecordWritten && err == nil {
			killSelf()
		}
		return err
	}
}

// killingKeep kills the process at point around the keeping of the
// access-token record.
func killingKeep(point string) keepHook {
	return func(ctx context.Context, log broker.AccessTokenLog, rec []byte) error {
		if point == crashBeforeKeep {
			killSelf()
		}
		err := log.KeepAccessToken(ctx, rec)
		if point == crashAfterPersist && err == nil {
			killSelf()
		}
		return err
	}
}

type killingStore struct {
	broker.SecretStore
	point        string
	accessToken  string
	refreshToken string
	// outage makes the store refuse refresh-token writes.
	outage   atomic.Bool
	rtWrites atomic.Int32
}

var errOutage = errors.New("store refuses writes (injected outage)")

func (s *killingStore) Set(ctx context.Context, name string, v broker.StoredSecret) error {
	if name == s.refreshToken {
		n := s.rtWrites.Add(1)
		switch {
		case s.point == crashBeforeStore,
			s.point == crashWhileRecord && n == 2:
			killSelf()
		case s.outage.Load():
			return errOutage
		}
	}
	err := s.SecretStore.Set(ctx, name, v)
	switch {
	case s.point == crashAfterPersist && name == s.accessToken,
		s.point == crashAfterOutage && name == s.refreshToken:
		killSelf()
	}
	return err
}

// crashChild is the child's main: one Token call that dies at the point
// named by crashEnv. It returns only if the crash did not happen.
func crashChild() int {
	point := os.Getenv(crashEnv)
	grace, _ := time.ParseDuration(os.Getenv("CRASH_GRACE"))
	stateDir := os.Getenv("CRASH_STATE_DIR")
	ks := &killingStore{point: point, accessToken: "xero-access-token", refreshToken: "xero-refresh-token"}
	switch point {
	case crashStoreRefused, crashWhileRecord, crashAfterOutage:
		ks.outage.Store(true)
	}
	b, err := crashBroker(os.Getenv("CRASH_LOCK"), os.Getenv("CRASH_BESIDE") == "true", childInstance, stateDir, os.Getenv("CRASH_STORAGE"), os.Getenv("CRASH_CONTAINER"), os.Getenv("CRASH_TOKEN_URL"), grace,
		func(s broker.SecretStore, g broker.Grant, l broker.Locker) (broker.SecretStore, broker.Grant, broker.Locker) {
			ks.SecretStore = s
			return ks, killingGrant{Grant: g, point: point}, hookedLocker{Locker: l, write: killingWrite(point, filepath.Join(stateDir, "locks", "xero.journal")), keep: killingKeep(point)}
		}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 3
	}
	ctx := context.Background()
	_, err = b.Token(ctx, "xero", 0)
	switch {
	case point == crashStoreRefused && err == nil:
		// The caller has its token; nothing of the refresh token is
		// left in this process that a kill could lose.
		killSelf()
	case point == crashAfterOutage && err == nil:
		ks.outage.Store(false)
		b.Sweep(ctx, 0) // reconciles the record, and is killed there
	}
	fmt.Fprintf(os.Stderr, "crash child: survived the %s point (Token: %v)\n", point, err)
	return 4
}

// TestKilledInstance kills an instance at each point of a refresh and
// checks what the next caller, on another instance, gets and how long it
// waits.
//
// The loss window opens when the provider commits the rotation
// (crashProviderCommitted: the provider holds its answer and the parent
// kills the child there) and closes when the write-ahead write is done
// (crashRecordWritten). A kill inside it without a reuse grace loses the
// chain, and the next caller is told precisely what happened: the
// redemption mark the dead instance left names when and where the refresh
// was interrupted. With a reuse grace the next refresh redeems the old
// token and nothing is lost.
//
// The points after the record (the store refused the refresh token, a
// kill while the record holds it, between the record and the store write,
// and after an outage that ended) all lose nothing: the next instance
// redeems the record's token, without reuse, against a provider that
// revokes the chain on any reuse, and leaves the store holding the
// provider's current refresh token and no record behind.
//
// With the access token kept beside the lock (ACCESS_TOKEN_STORE=blob,
// the beside-lock rows), every point from the write-ahead record on
// leaves the answer's access token sealed in the lock blob: the next
// instance is served that token from the blob at once, without a refresh
// and without waiting for the dead holder's lease, and its sweep (which
// does wait for the lease) moves a pending record's refresh token into
// the store, redeeming nothing, and leaves the access-token record in the
// blob.
func TestKilledInstance(t *testing.T) {
	t.Parallel()
	var az *azurite.Instance
	tests := []struct {
		point string
		lock  string // lockBlob when empty
		grace time.Duration
		// wantOK: the next caller gets a token; otherwise a 424 naming
		// the interrupted refresh.
		wantOK bool
		// wantCalls is the provider's token requests in all, the dead
		// instance's included.
		wantCalls int
		// waitsForLease: the next caller must wait for the dead holder's
		// lease to expire (it cannot be served from the store).
		waitsForLease bool
		// beside keeps the access token beside the lock
		// (ACCESS_TOKEN_STORE=blob; blob lock only).
		beside bool
		// fromBlob: the dead instance got as far as sealing its access
		// token into the lock blob (the write-ahead record, or the
		// access-token record), and the next caller is served that token
		// from the blob, without a refresh and without waiting for the
		// lease.
		fromBlob bool
	}{
		{point: crashBeforeProvider, wantOK: true, wantCalls: 1, waitsForLease: true},
		{point: crashProviderCommitted, grace: 30 * time.Minute, wantOK: true, wantCalls: 2, waitsForLease: true},
		{point: crashProviderCommitted, wantOK: false, wantCalls: 2, waitsForLease: true},
		{point: crashProviderCommitted, lock: lockLocal, wantOK: false, wantCalls: 2},
		{point: crashAfterProvider, grace: 30 * time.Minute, wantOK: true, wantCalls: 2, waitsForLease: true},
		{point: crashAfterProvider, wantOK: false, wantCalls: 2, waitsForLease: true},
		{point: crashRecordStart, wantOK: false, wantCalls: 2, waitsForLease: true},
		{point: crashRecordStart, lock: lockLocal, wantOK: false, wantCalls: 2},
		{point: crashRecordTorn, lock: lockLocal, wantOK: false, wantCalls: 2},
		{point: crashRecordTorn, lock: lockLocal, grace: 30 * time.Minute, wantOK: true, wantCalls: 2},
		{point: crashRecordWritten, wantOK: true, wantCalls: 2, waitsForLease: true},
		{point: crashRecordWritten, lock: lockLocal, wantOK: true, wantCalls: 2},
		{point: crashAfterPersist, wantOK: true, wantCalls: 1},
		{point: crashStoreRefused, wantOK: true, wantCalls: 2},
		{point: crashWhileRecord, wantOK: true, wantCalls: 2, waitsForLease: true},
		{point: crashBeforeStore, wantOK: true, wantCalls: 2, waitsForLease: true},
		{point: crashAfterOutage, wantOK: true, wantCalls: 2, waitsForLease: true},

		// The access token beside the lock. Before the write-ahead
		// record nothing of the answer is in the blob, and the rows
		// above tell what follows (after-provider, record-start); this
		// one has the next instance's own refresh keep its token there.
		{point: crashBeforeProvider, beside: true, wantOK: true, wantCalls: 1, waitsForLease: true},
		// From the write-ahead record on, the blob holds the access
		// token: before the store write (record-written), as it begins
		// (before-store), once the store refused it (store-refused),
		// once the store took the refresh token but before the record
		// was settled (before-keep), and once the access-token record
		// replaced the write-ahead record (after-persist). while-record
		// and after-outage leave the blob and the store as before-store
		// and before-keep do; each row whose dead holder keeps the lease
		// costs a lease (15 s) of the test's run time.
		{point: crashRecordWritten, beside: true, wantOK: true, wantCalls: 1, fromBlob: true},
		{point: crashBeforeStore, beside: true, wantOK: true, wantCalls: 1, fromBlob: true},
		{point: crashStoreRefused, beside: true, wantOK: true, wantCalls: 1, fromBlob: true},
		{point: crashBeforeKeep, beside: true, wantOK: true, wantCalls: 1, fromBlob: true},
		{point: crashAfterPersist, beside: true, wantOK: true, wantCalls: 1, fromBlob: true},
	}
	for i, tt := range tests {
		if tt.lock == "" {
			tt.lock = lockBlob
		}
		name := tt.point
		if tt.lock == lockLocal {
			name += "/local"
		}
		if tt.beside {
			name += "/beside-lock"
		}
		if tt.grace > 0 {
			name += "/reuse-grace"
		}
		if tt.lock == lockBlob && az == nil {
			az = azurite.Start(t)
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			clientSecret := "cs_" + rand.Text()
			provider := testprovider.New(testprovider.Config{ClientID: "client", ClientSecret: clientSecret,
				AuthStyle: broker.AuthBasic, Rotate: true, ReuseGrace: tt.grace})
			committed := make(chan struct{})
			if tt.point == crashProviderCommitted {
				provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultCommitThenHold, Committed: committed})
			}
			ps := httptest.NewServer(provider)
			t.Cleanup(ps.Close)
			state := t.TempDir()
			store, err := local.NewStore(state)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			firstRT := provider.IssueRefreshToken()
			for n, v := range map[string]string{"xero-client-secret": clientSecret, "xero-refresh-token": firstRT} {
				if err := store.Set(ctx, n, broker.StoredSecret{Value: broker.Secret(v)}); err != nil {
					t.Fatal(err)
				}
			}
			// Each subtest has its own lock: Azurite is shared, the
			// container is not.
			storage, container := "", fmt.Sprintf("crash-%d", i)
			if tt.lock == lockBlob {
				storage = az.ConnectionString()
			}

			child := exec.Command(os.Args[0], "-test.run=^$")
			child.Env = append(os.Environ(), crashEnv+"="+tt.point, "CRASH_GRACE="+tt.grace.String(), "CRASH_LOCK="+tt.lock, "CRASH_BESIDE="+fmt.Sprint(tt.beside),
				"CRASH_STATE_DIR="+state, "CRASH_STORAGE="+storage, "CRASH_CONTAINER="+container, "CRASH_TOKEN_URL="+ps.URL+"/token")
			var out strings.Builder
			child.Stdout, child.Stderr = &out, &out
			if err := child.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- child.Wait() }()
			if tt.point == crashProviderCommitted {
				// The provider has spent the old token and holds the new
				// one: the kill lands inside the window.
				select {
				case <-committed:
					_ = child.Process.Kill()
				case err := <-exited:
					t.Fatalf("the child ended before the provider committed: %v\n%s", err, out.String())
				}
			}
			err = <-exited
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != -1 {
				t.Fatalf("the child was not killed: %v\n%s", err, out.String())
			}
			killedAt := time.Now()

			// What the dead instance left in the lock blob.
			var kept broker.AccessToken
			if tt.fromBlob {
				kept = keptAccessToken(t, store, storage, container)
			}

			var logs lockedBuffer
			next, err := crashBroker(tt.lock, tt.beside, nextInstance, state, storage, container, ps.URL+"/token", tt.grace,
				func(s broker.SecretStore, g broker.Grant, l broker.Locker) (broker.SecretStore, broker.Grant, broker.Locker) {
					return s, g, l
				}, slog.New(slog.NewJSONHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = next.Close(context.Background()) })
			tok, err := next.Token(ctx, "xero", 0)
			waited := time.Since(killedAt)

			st := provider.Stats()
			if st.TokenRequests != tt.wantCalls {
				t.Errorf("%d token requests in all, want %d", st.TokenRequests, tt.wantCalls)
			}
			if !tt.wantOK {
				// The loss, reported precisely: the 424, the status and an
				// ERROR line all say which refresh was interrupted, when
				// and on which instance.
				const phrase = "was interrupted after the provider may have rotated the token"
				var be *broker.Error
				if !errors.As(err, &be) || be.Code != broker.CodeRejected || !strings.Contains(be.Message, phrase) ||
					!strings.Contains(be.Message, "on instance "+childInstance) || !strings.Contains(be.Remediation, "xero-refresh-token") {
					t.Fatalf("next caller: %v; want 424 provider_rejected saying the refresh on %s %s, naming the refresh-token secret", err, childInstance, phrase)
				}
				if cs := next.Status(ctx); len(cs) != 1 || cs[0].LastError == nil || !strings.Contains(cs[0].LastError.Message, phrase) {
					t.Errorf("status does not say the refresh was interrupted: %+v", cs)
				}
				if !strings.Contains(logs.String(), `"level":"ERROR","msg":"the refresh at `) || !strings.Contains(logs.String(), `"event":"refresh.interrupted_lost"`) {
					t.Errorf("no ERROR line refresh.interrupted_lost; logs:\n%s", logs.String())
				}
				if strings.Contains(logs.String(), firstRT) {
					t.Error("the logs carry the refresh token")
				}
				t.Logf("the loss window: %s (remediation: %s)", be.Message, be.Remediation)
				return
			}
			if err != nil {
				t.Fatalf("next caller after %v: %v", waited.Round(time.Millisecond), err)
			}
			if !provider.ValidAccessToken(tok.Value.Reveal()) {
				t.Error("the next caller's token is not valid at the provider")
			}
			if tt.fromBlob && (tok.Value != kept.Value || !tok.Expiry.Equal(kept.Expiry)) {
				t.Error("the next caller was not served the access token the dead instance kept beside the lock")
			}
			if tt.beside {
				// A caller served from the blob did not take the lock: the
				// sweep (which waits out the dead holder's lease) moves a
				// pending record's refresh token into the store. It
				// redeems nothing, and leaves the blob holding the served
				// token in an access-token record.
				next.Sweep(ctx, 0)
				if after := provider.Stats(); after.TokenRequests != st.TokenRequests {
					t.Errorf("the sweep made %d token requests, want none", after.TokenRequests-st.TokenRequests)
				}
				st = provider.Stats()
				if now := keptAccessToken(t, store, storage, container); now.Value != tok.Value {
					t.Error("the lock blob does not hold the served access token")
				}
			}
			if st.ReuseDetected != 0 || st.ChainsRevoked != 0 {
				t.Errorf("provider: %d reuses, %d chains revoked; want none", st.ReuseDetected, st.ChainsRevoked)
			}
			// The store ends up with the chain's current refresh token.
			cur, _ := provider.CurrentRefreshToken(firstRT)
			if rt, err := store.Get(ctx, "xero-refresh-token"); err != nil || rt.Value.Reveal() != cur {
				t.Errorf("the store's refresh token is not the provider's current one (err %v)", err)
			}
			// And no write-ahead record is left over.
			if has, err := crashChecker(t, tt.lock, state, storage, container).HasWriteAhead(ctx, "xero"); err != nil || has {
				t.Errorf("a write-ahead record is left (%v, err %v)", has, err)
			}
			// A dead holder blocks others for at most its lease.
			if limit := crashLease + 5*time.Second; waited > limit {
				t.Errorf("the next caller waited %v, more than the lease (%v) plus a margin", waited.Round(time.Millisecond), crashLease)
			}
			if !tt.waitsForLease && waited > 5*time.Second {
				t.Errorf("the next caller waited %v for a token the dead instance had stored", waited.Round(time.Millisecond))
			}
			t.Logf("next caller served %v after the kill", waited.Round(time.Millisecond))
		})
	}
}

// keptAccessToken opens the access token kept in a crash test's lock blob
// (the access-token record, or the one a write-ahead record carries) with
// the write-ahead key in the store.
func keptAccessToken(t *testing.T, store broker.SecretStore, storage, container string) broker.AccessToken {
	t.Helper()
	ctx := context.Background()
	raw, err := crashLocker(t, storage, container).ReadBesideLock(ctx, "xero")
	if err != nil || raw == nil {
		t.Fatalf("nothing beside the lock (err %v)", err)
	}
	ks, err := store.Get(ctx, broker.WriteAheadKeySecret)
	if err != nil {
		t.Fatal(err)
	}
	key, err := base64.StdEncoding.DecodeString(ks.Value.Reveal())
	if err != nil {
		t.Fatal(err)
	}
	at, ok, err := broker.OpenAccessToken(key, "xero", raw)
	if err != nil || !ok {
		t.Fatalf("the lock blob holds no access token this key opens (ok %v, err %v)", ok, err)
	}
	return at
}

// crashChecker looks at a crash test's lock from outside.
func crashChecker(t *testing.T, lockKind, stateDir, storage, container string) broker.WriteAheadChecker {
	t.Helper()
	if lockKind == lockLocal {
		l, err := local.NewLocker(stateDir, local.LockerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	return crashLocker(t, storage, container)
}
