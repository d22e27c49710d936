package keyvault_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault/kvtest"
)

// writeLog is a SecretStore that records when each write succeeded.
type writeLog struct {
	broker.SecretStore
	mu sync.Mutex
	at []time.Time
}

func (w *writeLog) Set(ctx context.Context, name string, s broker.StoredSecret) error {
	err := w.SecretStore.Set(ctx, name, s)
	if err == nil {
		w.mu.Lock()
		w.at = append(w.at, time.Now())
		w.mu.Unlock()
	}
	return err
}

// List lists through the store it wraps, as the Pacer does.
func (w *writeLog) List(ctx context.Context) ([]broker.SecretInfo, error) {
	return w.SecretStore.(broker.SecretLister).List(ctx)
}

// busiest is the most writes in any 10 seconds.
func (w *writeLog) busiest() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	most, j := 0, 0
	for i := range w.at {
		for w.at[i].Sub(w.at[j]) >= 10*time.Second {
			j++
		}
		most = max(most, i-j+1)
	}
	return most
}

func pacedVault(t *testing.T, per10 int) (*kvtest.Vault, *writeLog, *keyvault.Pacer) {
	noRetry := &azsecrets.ClientOptions{}
	noRetry.Retry.MaxRetries = -1
	v := kvtest.New(t, &kvtest.Options{Limits: true, InProcess: true, LatestOnly: true, ClientOptions: noRetry})
	log := &writeLog{SecretStore: keyvault.New(v.Client, keyvault.Options{})}
	return v, log, keyvault.NewPacer(log, keyvault.PacerOptions{WritesPer10s: per10})
}

// TestPacerKeepsWritesInsideItsBudget: 50 writers as fast as they can for
// a minute; no 10 seconds see more than the pacer's 150 writes, and the
// budget is used (at least 90 % of it).
func TestPacerKeepsWritesInsideItsBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, log, p := pacedVault(t, 150)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				for p.Set(ctx, "s", broker.StoredSecret{Value: "v"}) == nil {
				}
			})
		}
		wg.Wait()
		if most := log.busiest(); most > 150 {
			t.Errorf("%d writes in the busiest 10 seconds; the budget is 150", most)
		}
		if n := len(log.at); n < 6*150*9/10 {
			t.Errorf("%d writes in a minute; the budget allows %d", n, 6*150)
		}
	})
}

// TestPacerAbsorbsThrottling: another instance takes 250 of the vault's 300
// writes per 10 s while this one's pacer allows 150. Key Vault answers
// 429s; the pacer slows down and retries after each Retry-After, so no
// caller sees one.
func TestPacerAbsorbsThrottling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, _, p := pacedVault(t, 150)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		wg.Go(func() { // the other instance, unpaced but steady
			value := "x"
			for ctx.Err() == nil {
				time.Sleep(40 * time.Millisecond)
				_, _ = v.Client.SetSecret(ctx, "other", azsecrets.SetSecretParameters{Value: &value}, nil)
			}
		})
		var failed []error
		var mu sync.Mutex
		for range 20 {
			wg.Go(func() {
				wctx, wcancel := context.WithTimeout(context.Background(), 50*time.Second)
				defer wcancel()
				for wctx.Err() == nil {
					if err := p.Set(ctx, "s", broker.StoredSecret{Value: "v"}); err != nil && ctx.Err() == nil {
						mu.Lock()
						failed = append(failed, err)
						mu.Unlock()
						return
					}
				}
			})
		}
		wg.Wait()
		if len(failed) > 0 {
			t.Fatalf("%d writes failed, the first: %v", len(failed), failed[0])
		}
		if p.Throttled() == 0 || v.Counts().Throttled == 0 {
			t.Fatalf("no 429 was absorbed (pacer %d, vault %d); the test did not exercise throttling", p.Throttled(), v.Counts().Throttled)
		}
		if p.WriteRate() >= 14 {
			t.Errorf("write rate %.1f/s after 429s; want it lowered", p.WriteRate())
		}
		t.Logf("%d 429s absorbed; rate now %.1f writes/s", p.Throttled(), p.WriteRate())
	})
}

// TestSweepLeavesAReserveForCallers: a sweep that takes every write it can
// get, through AwaitSweepRoom, still leaves a caller's write waiting no
// at all: the bucket keeps a reserve.
func TestSweepLeavesAReserveForCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, _, p := pacedVault(t, 150)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range 8 { // eight sweep workers, two writes a refresh
			wg.Go(func() {
				for p.AwaitSweepRoom(ctx, 2) == nil {
					_ = p.Set(ctx, "sweep", broker.StoredSecret{Value: "v"})
					_ = p.Set(ctx, "sweep", broker.StoredSecret{Value: "v"})
				}
			})
		}
		time.Sleep(30 * time.Second)
		var slowest time.Duration
		for range 5 {
			start := time.Now()
			if err := p.Set(context.Background(), "caller", broker.StoredSecret{Value: "v"}); err != nil {
				t.Fatal(err)
			}
			slowest = max(slowest, time.Since(start))
			time.Sleep(3 * time.Second)
		}
		cancel()
		wg.Wait()
		if slowest > 10*time.Millisecond {
			t.Errorf("a caller's write waited %v behind the sweep", slowest)
		}
	})
}

// TestSweepRoomInASmallBucket: a budget under 30 writes per 10 s makes a
// bucket of one or two writes, smaller than a rotating refresh's two
// writes plus the callers' reserve. The sweep still gets room, at the
// budget's rate, instead of waiting forever.
func TestSweepRoomInASmallBucket(t *testing.T) {
	tests := []struct {
		per10, n int
	}{
		{9, 1}, {15, 1}, {15, 2}, {25, 2}, {25, 3}, {150, 2},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d per 10 s, %d a refresh", tt.per10, tt.n), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				_, log, p := pacedVault(t, tt.per10)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				rooms := 0
				for p.AwaitSweepRoom(ctx, tt.n) == nil {
					rooms++
					for range tt.n {
						if err := p.Set(context.Background(), "sweep", broker.StoredSecret{Value: "v"}); err != nil {
							t.Fatal(err)
						}
					}
				}
				// A minute is six windows of the budget, less the reserve.
				if writes := rooms * tt.n; writes < 4*tt.per10 {
					t.Errorf("the sweep got room for %d writes in a minute; the budget is %d per 10 s", writes, tt.per10)
				}
				if got := log.busiest(); got > tt.per10 {
					t.Errorf("%d writes in 10 s; the budget is %d", got, tt.per10)
				}
			})
		})
	}
}
