package keyvault

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// Key Vault's documented limits for secrets, per vault per region, in any
// 10 seconds: 300 secret writes (CREATE secret; each Set writes a new
// version) and 4,000 transactions of every other kind
// (https://learn.microsoft.com/azure/key-vault/general/service-limits,
// "Secrets, managed storage account keys, and vault transactions"). Beyond
// them Key Vault answers 429 with Retry-After, and a 429 does not count
// towards the limit
// (https://learn.microsoft.com/azure/key-vault/general/overview-throttling).
const (
	VaultWritesPer10s = 300
	VaultOtherPer10s  = 4000
)

// DefaultWriteShare is the share of VaultWritesPer10s a Pacer uses unless
// told otherwise: half. The budget belongs to the vault, not to one
// instance; the other half is room for the on-demand refreshes of other
// instances and for operators.
const DefaultWriteShare = 0.5

// PacerOptions configure a Pacer.
type PacerOptions struct {
	// WritesPer10s is the most writes the Pacer lets through in any 10
	// seconds; zero means DefaultWriteShare of VaultWritesPer10s.
	WritesPer10s int
	// MaxThrottledRetries is how many times one Set answered 429 is tried
	// again, after the Retry-After, before the 429 reaches the caller.
	// Zero means 4.
	MaxThrottledRetries int
}

// Pacer is a broker.SecretStore that passes every write to the store it
// wraps through one token bucket, so that the sweep, on-demand refreshes,
// consent and the write-ahead key all share one budget of Key Vault
// writes. Reads and lists pass through unpaced: their limit (4,000 per
// 10 s) is thirteen times the writes', and a refresh makes at most five.
//
// The bucket holds WritesPer10s/10 writes and refills so that no 10-second
// window sees more than WritesPer10s. A 429 (another instance, or an
// operator, used the vault's budget) halves the rate, stops every write
// until its Retry-After has passed, and the write is tried again; the
// rate then climbs back by a tenth of the configured one per 10 seconds
// without a 429.
//
// The sweep asks for room with AwaitSweepRoom, which waits until the
// bucket holds a reserve for callers besides what the sweep takes: an
// on-demand refresh is never queued behind a sweep.
type Pacer struct {
	store      broker.SecretStore
	lim        *rate.Limiter
	full       rate.Limit // the configured rate
	burst      int
	reserve    float64
	maxRetries int

	mu          sync.Mutex
	pausedUntil time.Time
	lastChange  time.Time
	// credit is writes the sweep has paid for in AwaitSweepRoom that no
	// Set has made yet; a Set spends it before waiting on the bucket.
	credit    int
	throttled int
}

var (
	_ broker.SecretStore  = (*Pacer)(nil)
	_ broker.SecretLister = (*Pacer)(nil)
	_ broker.SweepPacer   = (*Pacer)(nil)
)

// NewPacer wraps store. A store that can list (Store can) keeps listing
// through the Pacer.
func NewPacer(store broker.SecretStore, o PacerOptions) *Pacer {
	per10 := o.WritesPer10s
	if per10 <= 0 {
		per10 = int(DefaultWriteShare * VaultWritesPer10s)
	}
	burst := max(1, per10/10)
	// Tokens at the start of a window plus what refills within it never
	// exceed per10: burst + 10 s × rate = per10.
	full := rate.Limit(float64(per10-burst) / 10)
	if per10 <= burst {
		full = rate.Limit(float64(per10) / 10)
	}
	p := &Pacer{
		store:      store,
		lim:        rate.NewLimiter(full, burst),
		full:       full,
		burst:      burst,
		reserve:    math.Max(1, float64(burst)/3),
		maxRetries: o.MaxThrottledRetries,
	}
	if p.maxRetries <= 0 {
		p.maxRetries = 4
	}
	return p
}

// Get reads through the wrapped store.
func (p *Pacer) Get(ctx context.Context, name string) (broker.StoredSecret, error) {
	return p.store.Get(ctx, name)
}

// List lists through the wrapped store; one that cannot list lists nothing.
func (p *Pacer) List(ctx context.Context) ([]broker.SecretInfo, error) {
	l, ok := p.store.(broker.SecretLister)
	if !ok {
		return nil, errors.New("keyvault: the paced store cannot list its secrets")
	}
	return l.List(ctx)
}

// Set waits for the bucket, then writes. A 429 is absorbed: the rate comes
// down, every writer waits out the Retry-After, and the write is tried
// again, up to MaxThrottledRetries times or until ctx ends.
func (p *Pacer) Set(ctx context.Context, name string, s broker.StoredSecret) error {
	for attempt := 0; ; attempt++ {
		if err := p.wait(ctx); err != nil {
			return err
		}
		err := p.store.Set(ctx, name, s)
		var kerr *Error
		if err == nil || !errors.As(err, &kerr) || kerr.StatusCode != 429 || attempt >= p.maxRetries {
			if err == nil {
				p.recover()
			}
			return err
		}
		p.throttle(kerr.RetryAfter)
	}
}

// wait blocks until a write may be made: past any Retry-After, then one
// token from the sweep's credit or the bucket.
func (p *Pacer) wait(ctx context.Context) error {
	p.mu.Lock()
	pause := time.Until(p.pausedUntil)
	if pause <= 0 && p.credit > 0 {
		p.credit--
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	if pause > 0 {
		t := time.NewTimer(pause)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return p.lim.Wait(ctx)
}

// throttle answers a 429: half the rate (never below a write a second, or
// the configured rate if lower), and no write until retryAfter has passed
// (one second when Key Vault gave none).
func (p *Pacer) throttle(retryAfter time.Duration) {
	if retryAfter <= 0 {
		retryAfter = time.Second
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.throttled++
	if until := now.Add(retryAfter); until.After(p.pausedUntil) {
		p.pausedUntil = until
	}
	p.credit = 0
	p.lim.SetLimitAt(now, max(min(p.full, 1), p.lim.Limit()/2))
	p.lastChange = now
}

// recover raises a lowered rate by a tenth of the configured one, at most
// once per 10 seconds.
func (p *Pacer) recover() {
	if p.lim.Limit() >= p.full {
		return
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(p.lastChange) < 10*time.Second {
		return
	}
	p.lim.SetLimitAt(now, min(p.full, p.lim.Limit()+p.full/10))
	p.lastChange = now
}

// AwaitSweepRoom blocks until the bucket holds n writes for the sweep with
// the callers' reserve left over, then takes them: the next n Sets, of
// whatever caller, spend them instead of waiting. It gives up when ctx
// ends.
//
// A bucket too small for both (a budget under 30 writes per 10 s holds
// one to two) is asked for what it can hold: n at most a bucketful, and
// the reserve only what the bucket holds beyond n. Asking for more than it
// can ever hold would stop the sweep for good.
func (p *Pacer) AwaitSweepRoom(ctx context.Context, n int) error {
	n = min(n, p.burst)
	for {
		p.mu.Lock()
		pause := time.Until(p.pausedUntil)
		var wait time.Duration
		if pause <= 0 {
			now := time.Now()
			have := p.lim.TokensAt(now)
			need := math.Min(p.reserve+float64(n), float64(p.burst))
			if have >= need {
				// Credit beyond a bucketful is not kept: writes the sweep
				// paid for and never made (a peer had refreshed) must not
				// add up to a burst.
				r := p.lim.ReserveN(now, n)
				if r.OK() && r.DelayFrom(now) == 0 {
					p.credit = min(p.credit+n, p.burst)
					p.mu.Unlock()
					return nil
				}
				r.CancelAt(now)
			}
			wait = time.Duration((need - have) / math.Max(float64(p.lim.Limit()), 1e-3) * float64(time.Second))
		} else {
			wait = pause
		}
		p.mu.Unlock()
		wait = max(wait, time.Millisecond)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// WriteRate is the writes per second the Pacer allows now.
func (p *Pacer) WriteRate() float64 { return float64(p.lim.Limit()) }

// Throttled counts the 429s the Pacer has absorbed.
func (p *Pacer) Throttled() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.throttled
}
