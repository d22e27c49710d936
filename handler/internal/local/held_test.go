package local_test

import (
	"context"
	"testing"
	"time"
)

// TestHeldUntilRelease: an OS file lock is held until Release, however
// long, so Held is true until then and false after (issue 15, defect 1).
func TestHeldUntilRelease(t *testing.T) {
	l := newLocker(t, t.TempDir())
	lock, err := lockFor(l, "xero", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !lock.Held() {
		t.Fatal("Held = false right after Lock")
	}
	if err := lock.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if lock.Held() {
		t.Fatal("Held = true after Release")
	}
}
