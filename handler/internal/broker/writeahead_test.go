package broker_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// testKey is the write-ahead key of every test broker.
var testKey broker.KeySource = func(context.Context) ([]byte, error) {
	return bytes.Repeat([]byte{7}, 32), nil
}

// journal is the local lock's write-ahead journal of connection c.
func (e *env) journal(c broker.Connection) string {
	return filepath.Join(e.dir, "locks", strings.ToLower(c.Name)+".journal")
}

func (e *env) hasRecord(c broker.Connection) bool {
	e.t.Helper()
	has, err := e.locker.(broker.WriteAheadChecker).HasWriteAhead(context.Background(), c.Name)
	if err != nil {
		e.t.Fatal(err)
	}
	return has
}

// failRefreshTokenWrites makes the store refuse every write of c's refresh
// token (and only that) until the returned function is called.
func (e *env) failRefreshTokenWrites(c broker.Connection) (recover func()) {
	rt := c.Secrets.RefreshToken
	e.store.failOnly.Store(&rt)
	e.store.failSets.Store(1 << 30)
	return func() { e.store.failSets.Store(0); e.store.failOnly.Store(nil) }
}

// TestStoreRefusesTheRotatedRefreshToken: the store refuses the rotated
// refresh token. The token is served, the write-ahead record keeps the
// refresh token, and no lock is held afterwards: another instance (a
// restarted one: nothing of the first is in its memory) redeems the
// record's token, not the spent one, and the sweep moves it into the store
// once the store takes writes again. Before the write-ahead record, the
// token lived in the first instance's memory only, behind a lock the
// background writer held.
func TestStoreRefusesTheRotatedRefreshToken(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true, AccessTokenLifetime: time.Hour})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	seeded := e.storedRefreshToken(c)
	ctx := context.Background()
	recover := e.failRefreshTokenWrites(c)

	var logs syncBuffer
	first := e.broker([]broker.Connection{c}, withLogs(&logs))
	if _, err := first.Token(ctx, "xero", 0); err != nil {
		t.Fatalf("the token issued must be served once its refresh token is durable: %v", err)
	}
	if !e.hasRecord(c) {
		t.Fatal("no write-ahead record after the store refused the refresh token")
	}
	if e.storedRefreshToken(c) != seeded {
		t.Fatal("the store changed although it refused every write")
	}
	if st, _ := first.ConnectionStatus(ctx, "xero"); !st.PersistPending || st.State != broker.StateFailing {
		t.Fatalf("status %+v, want persistPending and failing", st)
	}
	if !strings.Contains(logs.String(), `"event":"persist.pending"`) {
		t.Errorf("no persist.pending line in the log:\n%s", logs.String())
	}

	// A restarted instance, with the store still refusing.
	e.clock.Advance(2 * time.Hour)
	second := e.broker([]broker.Connection{c}, func(o *broker.Options) { o.LockWait = 200 * time.Millisecond })
	if _, err := second.Token(ctx, "xero", 0); err != nil {
		t.Fatalf("restarted instance: %v", err)
	}
	if st := e.provider.Stats(); st.TokenRequests != 2 || st.Rejected != 0 || st.ReuseDetected != 0 {
		t.Fatalf("provider %+v: want 2 requests, none rejected", st)
	}
	if !e.hasRecord(c) {
		t.Fatal("the newest refresh token is not in the record")
	}

	// The store recovers; the sweep reconciles.
	recover()
	second.Sweep(ctx, time.Minute)
	if e.hasRecord(c) {
		t.Fatal("the record is still there after the sweep")
	}
	stored := e.storedRefreshToken(c)
	if live, ok := e.provider.CurrentRefreshToken(seeded.Reveal()); !ok || live != stored.Reveal() {
		t.Fatal("the store does not hold the provider's current refresh token")
	}
	if st, _ := second.ConnectionStatus(ctx, "xero"); st.PersistPending {
		t.Fatal("still pending after the sweep")
	}
	for _, secret := range []broker.Secret{seeded, stored} {
		if strings.Contains(logs.String(), secret.Reveal()) {
			t.Fatal("a refresh token reached the log")
		}
	}
}

// failingRecordLocker hands out locks whose write-ahead record refuses
// writes.
type failingRecordLocker struct{ broker.Locker }

type failingRecordLock struct{ broker.Lock }

func (l failingRecordLocker) Lock(ctx context.Context, name string) (broker.Lock, error) {
	k, err := l.Locker.Lock(ctx, name)
	if err != nil {
		return nil, err
	}
	return failingRecordLock{k}, nil
}

var errRecordDown = errors.New("lock storage refuses writes (injected)")

func (failingRecordLock) WriteAhead(context.Context, []byte) error       { return errRecordDown }
func (failingRecordLock) ReadWriteAhead(context.Context) ([]byte, error) { return nil, nil }
func (failingRecordLock) ClearWriteAhead(context.Context) error          { return nil }

// TestNeitherRecordNorStoreAccepts: the one case left where the rotated
// refresh token is lost. The caller gets 503 with what to do, and an ERROR
// line says the connection needs consent; no token is served (it used to
// be, with the refresh token in memory only).
func TestNeitherRecordNorStoreAccepts(t *testing.T) {
	tests := []struct {
		name   string
		locker func(*env) broker.Locker
		key    broker.KeySource
	}{
		{name: "record refuses", locker: func(e *env) broker.Locker { return failingRecordLocker{e.locker} }, key: testKey},
		{name: "no key", locker: func(e *env) broker.Locker { return e.locker },
			key: func(context.Context) ([]byte, error) { return nil, errors.New("key vault down (injected)") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testprovider.Config{Rotate: true})
			c := e.conn("xero", broker.GrantRefreshToken)
			e.seed(c)
			e.failRefreshTokenWrites(c)
			var logs syncBuffer
			b := e.broker([]broker.Connection{c}, withLogs(&logs), func(o *broker.Options) {
				o.Locker, o.WriteAheadKey = tt.locker(e), tt.key
			})
			_, err := b.Token(context.Background(), "xero", 0)
			var be *broker.Error
			if !errors.As(err, &be) || be.Code != broker.CodeUnavailable || !strings.Contains(be.Remediation, "re-authorize connection \"xero\"") {
				t.Fatalf("got %v; want 503 telling to re-authorize", err)
			}
			var line struct{ Level, Msg, Event string }
			for l := range strings.SplitSeq(logs.String(), "\n") {
				if strings.Contains(l, `"event":"persist.lost"`) {
					_ = json.Unmarshal([]byte(l), &line)
				}
			}
			if line.Level != "ERROR" || !strings.Contains(line.Msg, "needs consent") {
				t.Fatalf("no ERROR persist.lost line saying the connection needs consent:\n%s", logs.String())
			}
		})
	}
}

// TestNonRotatingAnswerAfterTheRecord: the answer to the record's refresh
// token does not rotate it (QuickBooks rotates once a day). That token
// stays current and is not only in memory: the record keeps it while the
// store refuses, and the store gets it as soon as it takes writes.
func TestNonRotatingAnswerAfterTheRecord(t *testing.T) {
	e := newEnv(t, testprovider.Config{})
	c := e.conn("qbo", broker.GrantRefreshToken)
	e.seed(c)
	seeded := e.storedRefreshToken(c)
	g := &scriptedGrant{answers: []broker.Secret{"rt-1", "", ""}, now: e.clock.Now}
	recover := e.failRefreshTokenWrites(c)
	ctx := context.Background()
	withGrant := func(o *broker.Options) { o.Grant = g }

	if _, err := e.broker([]broker.Connection{c}, withGrant).Token(ctx, "qbo", 0); err != nil {
		t.Fatal(err)
	}
	// A restarted instance; the answer keeps rt-1.
	e.clock.Advance(2 * time.Hour)
	if _, err := e.broker([]broker.Connection{c}, withGrant).Token(ctx, "qbo", 0); err != nil {
		t.Fatal(err)
	}
	if !e.hasRecord(c) || e.storedRefreshToken(c) != seeded {
		t.Fatal("want rt-1 still in the record and the store unchanged")
	}
	recover()
	e.clock.Advance(2 * time.Hour)
	if _, err := e.broker([]broker.Connection{c}, withGrant).Token(ctx, "qbo", 0); err != nil {
		t.Fatal(err)
	}
	if e.hasRecord(c) || e.storedRefreshToken(c) != "rt-1" {
		t.Fatal("want rt-1 moved into the store and the record cleared")
	}
	if want := []broker.Secret{seeded, "rt-1", "rt-1"}; !equalSecrets(g.sent(), want) {
		t.Fatalf("refresh tokens sent %d, want seeded, rt-1, rt-1", len(g.sent()))
	}
}

// TestStaleRecordYieldsToAConsent: an operator stored a new refresh token
// after the record was written: the store's token wins and the record is
// cleared.
func TestStaleRecordYieldsToAConsent(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	recover := e.failRefreshTokenWrites(c)
	ctx := context.Background()
	if _, err := e.broker([]broker.Connection{c}).Token(ctx, "xero", 0); err != nil {
		t.Fatal(err)
	}
	recover()
	consented := e.provider.IssueRefreshToken()
	if err := e.store.SecretStore.Set(ctx, c.Secrets.RefreshToken, broker.StoredSecret{Value: broker.Secret(consented)}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Hour)
	if _, err := e.broker([]broker.Connection{c}).Token(ctx, "xero", 0); err != nil {
		t.Fatal(err)
	}
	if r, ok := e.provider.LastRequest(); !ok || r.Form.Get("refresh_token") != consented {
		t.Fatal("the refresh did not redeem the consented token")
	}
	if e.hasRecord(c) {
		t.Fatal("the stale record was not cleared")
	}
}

// TestRecordIsSealedAndNeedsItsKey: the journal does not hold the refresh
// token in a readable form, and a broker with another key refuses to
// redeem (503 naming the key's secret) rather than send the spent token.
func TestRecordIsSealedAndNeedsItsKey(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	seeded := e.storedRefreshToken(c)
	e.failRefreshTokenWrites(c)
	ctx := context.Background()
	if _, err := e.broker([]broker.Connection{c}).Token(ctx, "xero", 0); err != nil {
		t.Fatal(err)
	}
	live, _ := e.provider.CurrentRefreshToken(seeded.Reveal())
	raw, err := os.ReadFile(e.journal(c))
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if len(dec) == 0 || bytes.Contains(raw, []byte(live)) || bytes.Contains(dec, []byte(live)) {
		t.Fatal("the journal holds the refresh token in the clear (or holds nothing)")
	}
	e.clock.Advance(2 * time.Hour)
	other := func(context.Context) ([]byte, error) { return bytes.Repeat([]byte{9}, 32), nil }
	_, err = e.broker([]broker.Connection{c}, func(o *broker.Options) { o.WriteAheadKey = other }).Token(ctx, "xero", 0)
	var be *broker.Error
	if !errors.As(err, &be) || be.Code != broker.CodeUnavailable || !strings.Contains(be.Remediation, broker.WriteAheadKeySecret) {
		t.Fatalf("got %v; want 503 naming %s", err, broker.WriteAheadKeySecret)
	}
	if n := e.provider.Stats().TokenRequests; n != 1 {
		t.Fatalf("%d token requests; the spent refresh token must not be sent", n)
	}
}

// TestStoredKeyIsCreatedOnce: instances starting together agree on one key.
func TestStoredKeyIsCreatedOnce(t *testing.T) {
	e := newEnv(t, testprovider.Config{})
	var wg sync.WaitGroup
	keys := make([][]byte, 8)
	errs := make([]error, 8)
	for i := range keys {
		wg.Go(func() { keys[i], errs[i] = broker.StoredKey(e.store, e.locker)(context.Background()) })
	}
	wg.Wait()
	for i := range keys {
		if errs[i] != nil || len(keys[i]) != 32 || !bytes.Equal(keys[i], keys[0]) {
			t.Fatalf("source %d: %d-byte key, err %v; want all the same 32 bytes", i, len(keys[i]), errs[i])
		}
	}
	s, err := e.store.SecretStore.Get(context.Background(), broker.WriteAheadKeySecret)
	if k, _ := base64.StdEncoding.DecodeString(s.Value.Reveal()); err != nil || !bytes.Equal(k, keys[0]) {
		t.Fatal("the key in the store is not the one handed out")
	}
}

// scriptedGrant answers each request with the next refresh token of its
// script ("" for none), and records which refresh token each request sent.
type scriptedGrant struct {
	mu      sync.Mutex
	answers []broker.Secret
	got     []broker.Secret
	now     func() time.Time
}

func (g *scriptedGrant) Token(_ context.Context, c *broker.Connection, cred broker.Credentials) (*broker.Token, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := len(g.got)
	g.got = append(g.got, cred.RefreshToken)
	var rt broker.Secret
	if n < len(g.answers) {
		rt = g.answers[n]
	}
	now := g.now()
	return &broker.Token{AccessToken: broker.Secret("at-" + string(rune('a'+n))), RefreshToken: rt, Expiry: now.Add(time.Hour), IssuedAt: now}, nil
}

func (g *scriptedGrant) sent() []broker.Secret {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]broker.Secret(nil), g.got...)
}

func equalSecrets(a, b []broker.Secret) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
