package keyvault_test

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault/kvtest"
)

// The capacity benchmark runs only when asked (make bench): it simulates
// hours of sweeps over tens of thousands of connections.
var (
	capacityConns   = flag.String("capacity.conns", "10000,45000", "connection counts the capacity benchmark simulates")
	capacityLatency = flag.String("capacity.latency", "50ms,200ms", "provider latencies the capacity benchmark simulates")
	capacityBudget  = flag.Int("capacity.budget", 0, "the pacer's writes per 10 s (0: the default, half the vault's 300)")
	capacityHours   = flag.Int("capacity.hours", 3, "simulated hours")
	capacityRotate  = flag.Bool("capacity.rotating", true, "the provider rotates refresh tokens (two writes a refresh)")
	capacityTrace   = flag.Bool("capacity.trace", false, "print one line per sweep: its start, length, list walk, actions, writes and the pacer's rate")
	capacityAccess  = flag.String("capacity.accesstokens", "keyvault", `where access tokens are kept: "keyvault" (a vault write each refresh) or "blob" (ACCESS_TOKEN_STORE=blob: beside each lock, simulated in memory)`)
)

// TestCapacity is the capacity benchmark, not a test of its own: set
// CAPACITY=1 (make bench does). For each connection count and provider
// latency it starts every connection as one cohort (tokens of one hour,
// all issued at t=0, kept warm), then runs the Functions timer's sweep
// every 5 minutes (horizon 10 minutes, 29 minutes to finish) for three
// hours on synctest's fake clock, against the Key Vault double enforcing
// the vault's limits, through the real azsecrets client, the real
// keyvault.Store and the Pacer. The double answers gets in 10 ms, writes
// in 20 ms and list pages of 25 in 50 ms.
//
// It prints the busiest 10 seconds of writes (overall, and after the first
// cycle), the 429s Key Vault answered and how many reached a caller, the
// connections whose token expired unrefreshed at any moment (found
// expired when a sweep started, refreshed only after the token had
// expired, or expired at the end), the least time a token had left when
// it was refreshed, the sweep's time per invocation (checked to end
// within the timer's period and one refresh timeout), and the heap in use
// at the end (the double's secrets included).
func TestCapacity(t *testing.T) {
	if os.Getenv("CAPACITY") == "" {
		t.Skip("the capacity benchmark runs with CAPACITY=1 (make bench)")
	}
	budget := *capacityBudget
	if budget == 0 {
		budget = int(keyvault.DefaultWriteShare * keyvault.VaultWritesPer10s)
	}
	blob := *capacityAccess == "blob"
	if !blob && *capacityAccess != "keyvault" {
		t.Fatalf("-capacity.accesstokens %q: keyvault or blob", *capacityAccess)
	}
	fmt.Printf("capacity: %d h simulated, one-hour tokens, rotating %t, access tokens in %s, pacer budget %d writes/10 s (vault: %d)\n",
		*capacityHours, *capacityRotate, *capacityAccess, budget, keyvault.VaultWritesPer10s)
	fmt.Printf("%-7s %-8s %-10s %-14s %-16s %-6s %-10s %-8s %-10s %-18s %-8s %-8s\n",
		"conns", "provider", "refreshes", "busiest 10 s", "after 1st cycle", "429s", "to caller", "expired", "least left", "sweep mean / max", "heap MB", "wall")
	for _, ns := range strings.Split(*capacityConns, ",") {
		n, err := strconv.Atoi(ns)
		if err != nil {
			t.Fatal(err)
		}
		for _, ls := range strings.Split(*capacityLatency, ",") {
			lat, err := time.ParseDuration(ls)
			if err != nil {
				t.Fatal(err)
			}
			t.Run(fmt.Sprintf("%d/%v", n, lat), func(t *testing.T) {
				start := time.Now()
				var r capacityResult
				synctest.Test(t, func(t *testing.T) {
					r = simulate(t, n, lat, budget, *capacityRotate, blob, time.Duration(*capacityHours)*time.Hour)
				})
				fmt.Printf("%-7d %-8v %-10d %-14d %-16d %-6d %-10d %-8d %-10v %-18s %-8.0f %-8v\n",
					n, lat, r.refreshes, r.busiest, r.busiestAfter, r.throttled, r.failed, r.expired, r.leastLeft.Round(time.Second),
					fmt.Sprintf("%v / %v", r.sweepMean.Round(time.Second), r.sweepMax.Round(time.Second)),
					float64(r.heap)/(1<<20), time.Since(start).Round(time.Second))
				if r.busiestAfter > budget {
					t.Errorf("%d writes in 10 s after the first cycle; the budget is %d", r.busiestAfter, budget)
				}
				// A timer invocation starts no refresh after its period
				// (5 minutes here); the ones started end within a
				// RefreshTimeout.
				if limit := 5*time.Minute + broker.DefaultRefreshTimeout; r.sweepMax > limit {
					t.Errorf("a sweep took %v; an invocation should end within its 5-minute period and one refresh timeout (%v)", r.sweepMax, limit)
				}
			})
		}
	}
}

type capacityResult struct {
	busiest, busiestAfter int
	throttled, failed     int
	expired               int
	refreshes             int
	leastLeft             time.Duration
	sweepMean, sweepMax   time.Duration
	heap                  uint64
}

// With blob, access tokens are kept beside each lock
// (broker.Options.AccessTokensBesideLock): the lock blob is simulated in
// memory (memBlob: Get Blob 5 ms, Put Blob 10 ms, sealed records under the
// write-ahead key), the vault side is
// the real client against the double as before.
func simulate(t *testing.T, n int, latency time.Duration, budget int, rotating, blob bool, span time.Duration) capacityResult {
	v := kvtest.New(t, &kvtest.Options{Limits: true, InProcess: true, LatestOnly: true, PageSize: 25})
	v.Delay(kvtest.OpGet, 10*time.Millisecond)
	v.Delay(kvtest.OpSet, 20*time.Millisecond)
	v.Delay(kvtest.OpList, 50*time.Millisecond)
	t0 := time.Now()
	g := &cohortGrant{latency: latency, rotating: rotating, current: make(map[string]string, n),
		expires: make(map[string]time.Time, n), late: map[string]bool{}}
	mb := newMemBlob()
	conns := make([]broker.Connection, n)
	for i := range conns {
		name := fmt.Sprintf("conn-%05d", i)
		c := broker.Connection{Name: name, Provider: "bench", Grant: broker.GrantRefreshToken, TokenURL: "https://provider.invalid/token",
			AuthStyle: broker.AuthBasic, ClientID: "client", Secrets: broker.DefaultSecretNames(name), Rotating: rotating,
			RefreshBefore: 5 * time.Minute, DefaultLifetime: time.Hour, KeepWarm: true}
		conns[i] = c
		v.Put(c.Secrets.ClientSecret, "secret", time.Time{})
		v.Put(c.Secrets.RefreshToken, name+"-rt-0", time.Time{})
		if !blob {
			v.Put(c.Secrets.AccessToken, name+"-at-0", t0.Add(time.Hour))
		} else if err := mb.seed(name, name+"-at-0", t0); err != nil {
			t.Fatal(err)
		}
		g.current[name] = name + "-rt-0"
		g.expires[name] = t0.Add(time.Hour)
	}
	log := &writeLog{SecretStore: keyvault.New(v.Client, keyvault.Options{})}
	lt := &listTimer{writeLog: log}
	pacer := keyvault.NewPacer(lt, keyvault.PacerOptions{WritesPer10s: budget})
	bo := broker.Options{Store: pacer, Locker: memLocker{&sync.Map{}}, Grant: g, Connections: conns}
	if blob {
		// The key as broker.StoredKey would cache it after its one read:
		// its mutex, held across a vault read on the fake clock, is not a
		// durable block, so synctest's clock would never advance.
		bo.Locker = mb
		bo.WriteAheadKey = func(context.Context) ([]byte, error) { return mb.key, nil }
		bo.AccessTokensBesideLock = true
	}
	b, err := broker.New(bo)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())

	var r capacityResult
	expired := map[string]bool{}
	sweeps := 0
	var total time.Duration
	for next := t0.Add(5 * time.Minute); next.Sub(t0) <= span; {
		time.Sleep(time.Until(next))
		now := time.Now()
		for _, c := range conns {
			if blob {
				if exp, ok := mb.expiry(c.Name); !ok || !exp.After(now) {
					expired[c.Name] = true
				}
			} else if ver, ok := v.Latest(c.Secrets.AccessToken); !ok || !ver.Expires.After(now) {
				expired[c.Name] = true
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 29*time.Minute)
		lt.reset()
		w0 := log.count()
		actions := map[broker.SweepAction]int{}
		for _, res := range b.Sweep(ctx, 10*time.Minute) {
			actions[res.Action]++
			if res.Err != nil {
				r.failed++
			}
		}
		cancel()
		took := time.Since(now)
		if *capacityTrace {
			listed := lt.took()
			writes := log.count() - w0
			perTen := 0.0
			if work := took - listed; work > 0 {
				perTen = float64(writes) / work.Seconds() * 10
			}
			fmt.Printf("  sweep t=%-8v took %-8v list %-7v refreshed %-5d fresh %-5d deferred %-5d failed %-3d writes %-5d (%.0f/10 s after the list) busiest-since-start %d rate %.1f/s 429s %d expired so far %d\n",
				now.Sub(t0), took.Round(time.Second), listed.Round(time.Second), actions[broker.SweepRefreshed], actions[broker.SweepFresh],
				actions[broker.SweepDeferred], actions[broker.SweepFailed], writes, perTen, log.busiestSince(now), pacer.WriteRate(),
				v.Counts().Throttled, len(expired))
		}
		total += took
		r.sweepMax = max(r.sweepMax, took)
		sweeps++
		// The host runs one invocation of the timer at a time, and
		// schedules the next at the occurrence after the one that
		// started this sweep: after a sweep that overran its period it
		// starts one at once (TimerListener.InvokeJobFunction sets
		// ScheduleStatus.Next from the invocation's time, and
		// GetNextTimerInterval makes a past Next one tick away; in
		// Azure/azure-webjobs-sdk-extensions,
		// src/WebJobs.Extensions/Extensions/Timers/Listener/TimerListener.cs).
		// The next one after that is on the schedule again.
		if next = now.Truncate(5 * time.Minute).Add(5 * time.Minute); next.Before(time.Now()) {
			next = time.Now()
		}
	}
	r.sweepMean = total / time.Duration(sweeps)
	g.mu.Lock()
	for name := range g.late {
		expired[name] = true
	}
	for name, exp := range g.expires {
		if !exp.After(time.Now()) {
			expired[name] = true
		}
	}
	r.leastLeft = g.leastLeft
	g.mu.Unlock()
	r.expired = len(expired)
	r.busiest = log.busiestSince(time.Time{})
	r.busiestAfter = log.busiestSince(t0.Add(time.Hour))
	r.throttled = v.Counts().Throttled
	r.refreshes = g.n
	if g.reused > 0 {
		t.Errorf("%d refresh tokens redeemed twice", g.reused)
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	r.heap = ms.HeapInuse
	return r
}

// count is how many writes have succeeded.
func (w *writeLog) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.at)
}

// listTimer times the list walks a sweep makes.
type listTimer struct {
	*writeLog
	mu    sync.Mutex
	spent time.Duration
}

func (l *listTimer) List(ctx context.Context) ([]broker.SecretInfo, error) {
	start := time.Now()
	defer func() {
		l.mu.Lock()
		l.spent += time.Since(start)
		l.mu.Unlock()
	}()
	return l.writeLog.List(ctx)
}

func (l *listTimer) reset() {
	l.mu.Lock()
	l.spent = 0
	l.mu.Unlock()
}

func (l *listTimer) took() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.spent
}

// busiestSince is the most writes in any 10 seconds from since on.
func (w *writeLog) busiestSince(since time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	most, j := 0, 0
	for i := range w.at {
		if w.at[i].Before(since) {
			j = i + 1
			continue
		}
		for w.at[i].Sub(w.at[j]) >= 10*time.Second {
			j++
		}
		most = max(most, i-j+1)
	}
	return most
}

// cohortGrant answers every refresh after latency with a one-hour token
// and, when rotating, a new refresh token; it counts refresh tokens
// redeemed twice.
type cohortGrant struct {
	latency  time.Duration
	rotating bool
	mu       sync.Mutex
	current  map[string]string
	n        int
	reused   int
	// expires is when each connection's newest token expires; late
	// names the connections refreshed after it had, and leastLeft is the
	// least time a token had left when its successor was issued: the
	// sweeps' checks see only the moment they start.
	expires   map[string]time.Time
	late      map[string]bool
	leastLeft time.Duration
}

func (g *cohortGrant) Token(ctx context.Context, c *broker.Connection, cred broker.Credentials) (*broker.Token, error) {
	select {
	case <-time.After(g.latency):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if cred.RefreshToken.Reveal() != g.current[c.Name] {
		g.reused++
		return nil, &broker.ProviderError{StatusCode: 400, Code: "invalid_grant", Permanent: true}
	}
	g.n++
	if left := time.Until(g.expires[c.Name]); left <= 0 {
		g.late[c.Name] = true
	} else if g.leastLeft == 0 || left < g.leastLeft {
		g.leastLeft = left
	}
	g.expires[c.Name] = time.Now().Add(time.Hour)
	tok := &broker.Token{AccessToken: broker.Secret(fmt.Sprintf("at-%d", g.n)), TokenType: "Bearer",
		Expiry: time.Now().Add(time.Hour), IssuedAt: time.Now()}
	if g.rotating {
		g.current[c.Name] = fmt.Sprintf("rt-%d", g.n)
		tok.RefreshToken = broker.Secret(g.current[c.Name])
	}
	return tok, nil
}

// memLocker is a lock in memory, one instance's worth. Its locks are
// channels, on which a synctest bubble's goroutines block durably.
type memLocker struct{ locks *sync.Map }

type memLock chan struct{}

func (m memLocker) Lock(ctx context.Context, name string) (broker.Lock, error) {
	l, _ := m.locks.LoadOrStore(name, make(memLock, 1))
	select {
	case l.(memLock) <- struct{}{}:
		return l.(memLock), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", broker.ErrLockTimeout, ctx.Err())
	}
}

func (l memLock) Lost() <-chan struct{}         { return nil }
func (l memLock) Held() bool                    { return true }
func (l memLock) Release(context.Context) error { <-l; return nil }

// memBlob simulates the blob lease as ACCESS_TOKEN_STORE=blob uses it: a
// lock per connection (a memLock) whose content is the write-ahead record
// or the sealed access-token record, read without the lock by other
// callers. Reads take 5 ms, writes 10 ms (a Put Blob).
type memBlob struct {
	memLocker
	key     []byte
	content *sync.Map // name -> []byte
}

func newMemBlob() *memBlob {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return &memBlob{memLocker: memLocker{&sync.Map{}}, key: k, content: &sync.Map{}}
}

func (m *memBlob) seed(name, at string, issued time.Time) error {
	raw, err := broker.SealAccessToken(m.key, name, broker.AccessToken{Value: broker.Secret(at), TokenType: "Bearer", Expiry: issued.Add(time.Hour)}, issued)
	m.content.Store(name, raw)
	return err
}

// expiry opens the connection's content as any instance would.
func (m *memBlob) expiry(name string) (time.Time, bool) {
	raw, ok := m.content.Load(name)
	if !ok {
		return time.Time{}, false
	}
	at, ok, err := broker.OpenAccessToken(m.key, name, raw.([]byte))
	return at.Expiry, ok && err == nil
}

func (m *memBlob) Lock(ctx context.Context, name string) (broker.Lock, error) {
	l, err := m.memLocker.Lock(ctx, name)
	if err != nil {
		return nil, err
	}
	return &memBlobLock{memLock: l.(memLock), m: m, name: name}, nil
}

func (m *memBlob) ReadBesideLock(ctx context.Context, name string) ([]byte, error) {
	time.Sleep(5 * time.Millisecond)
	raw, ok := m.content.Load(name)
	if !ok {
		return nil, nil
	}
	return raw.([]byte), nil
}

type memBlobLock struct {
	memLock
	m    *memBlob
	name string
}

func (l *memBlobLock) put(rec []byte) error {
	time.Sleep(10 * time.Millisecond)
	if rec == nil {
		l.m.content.Delete(l.name)
	} else {
		l.m.content.Store(l.name, rec)
	}
	return nil
}

func (l *memBlobLock) WriteAhead(_ context.Context, rec []byte) error      { return l.put(rec) }
func (l *memBlobLock) ClearWriteAhead(context.Context) error               { return l.put(nil) }
func (l *memBlobLock) KeepAccessToken(_ context.Context, rec []byte) error { return l.put(rec) }
func (l *memBlobLock) ReadWriteAhead(ctx context.Context) ([]byte, error) {
	return l.m.ReadBesideLock(ctx, l.name)
}

// TestSweepKeepsACohortWarmNearItsBudget is the capacity benchmark at a
// fifth of its scale, run with every test: 9,000 rotating connections in
// blob mode, issued as one cohort, need about 3.06 refreshes (vault
// writes) a second over a 49-minute cycle; a budget of 34 writes per 10 s
// lets the sweep write 3.1 a second, as 170 does for 45,000. The sweep
// must keep every token warm with it: a sweep that leaves the budget idle
// while connections are due (connections whose turn came while a long
// pass ran, left to the next one; a cold blob-mode sweep that reads every
// token and refreshes none; the hourly list walk before any refresh) lets
// tokens expire here (460 did before those were changed).
func TestSweepKeepsACohortWarmNearItsBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates two hours of sweeps")
	}
	var r capacityResult
	synctest.Test(t, func(t *testing.T) {
		r = simulate(t, 9000, 50*time.Millisecond, 34, true, true, 2*time.Hour)
	})
	if r.expired != 0 || r.failed != 0 || r.throttled != 0 {
		t.Errorf("%d tokens expired, %d sweep failures, %d 429s; want none", r.expired, r.failed, r.throttled)
	}
	if r.busiestAfter > 34 {
		t.Errorf("%d writes in 10 s after the first cycle; the budget is 34", r.busiestAfter)
	}
}
