package bloblease

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"
)

// TestHeld (issue 15, defect 1): Held vouches for the lease only while the
// latest successful acquire or renewal covers the moment with a sixth of
// the lease to spare, without waiting for the renewal goroutine to close
// Lost; and not after the lease was broken or released.
func TestHeld(t *testing.T) {
	t.Parallel()
	az := storage.Instance(t)
	margin := DefaultLeaseDuration - DefaultLeaseDuration/6 // what an acquire or renewal covers
	tests := []struct {
		name  string
		renew bool
		// then runs with the lock held and a clock Held reads that runs
		// skew ahead of the real one.
		then func(t *testing.T, l *Locker, h *heldLock, skew *atomic.Int64)
	}{
		{"not renewed: held until the margin, then not, Lost still open", false,
			func(t *testing.T, _ *Locker, h *heldLock, skew *atomic.Int64) {
				if !h.Held() {
					t.Fatal("Held = false right after Lock")
				}
				skew.Store(int64(margin))
				if h.Held() {
					t.Fatal("Held = true past the time the acquire covers")
				}
				if closedWithin(h.Lost(), 0) {
					t.Fatal("Lost closed: the case under test is a renewal that has not noticed yet")
				}
			}},
		{"renewed: each renewal moves the margin", true,
			func(t *testing.T, _ *Locker, h *heldLock, skew *atomic.Int64) {
				until := func() time.Time {
					h.mu.Lock()
					defer h.mu.Unlock()
					return h.heldUntil
				}
				first := until()
				deadline := time.Now().Add(10 * time.Second)
				for !until().After(first.Add(50 * time.Millisecond)) {
					if time.Now().After(deadline) {
						t.Fatal("no renewal moved the time the lease is held until")
					}
					time.Sleep(20 * time.Millisecond)
				}
				// A moment the acquire alone no longer covers.
				skew.Store(int64(time.Until(first) + time.Millisecond))
				if !h.Held() {
					t.Fatal("Held = false though a renewal covers the moment")
				}
			}},
		{"broken: not held once Lost closes", true,
			func(t *testing.T, l *Locker, h *heldLock, _ *atomic.Int64) {
				breaker, err := lease.NewBlobClient(l.container.NewBlobClient(h.name+".lock"), nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := breaker.BreakLease(context.Background(), &lease.BlobBreakOptions{BreakPeriod: to[int32](0)}); err != nil {
					t.Fatal(err)
				}
				if !closedWithin(h.Lost(), 5*time.Second) {
					t.Fatal("Lost not closed after the lease was broken")
				}
				if h.Held() {
					t.Fatal("Held = true after Lost closed")
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLocker(t, az, uniqueContainer(t), Options{})
			l.noRenew = !tt.renew
			l.renewEvery = 100 * time.Millisecond
			var skew atomic.Int64
			l.now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
			h := mustLock(t, l, "conn")
			tt.then(t, l, h, &skew)
			skew.Store(0)
			_ = h.Release(context.Background())
			if h.Held() {
				t.Fatal("Held = true after Release")
			}
		})
	}
}
