package local_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// TestStatusBesideTheLock: what a holder records, another process's Locker
// reads; a lock never recorded reads as zero.
func TestStatusBesideTheLock(t *testing.T) {
	dir := t.TempDir()
	a, err := local.NewLocker(dir, local.LockerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := local.NewLocker(dir, local.LockerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if s, err := b.ReadStatus(ctx, "xero"); err != nil || s != (broker.SharedStatus{}) {
		t.Fatalf("never recorded: %+v, %v; want zero", s, err)
	}
	lock, err := a.Lock(ctx, "xero")
	if err != nil {
		t.Fatal(err)
	}
	want := broker.SharedStatus{LastRefresh: time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC), LastRefreshDuration: 1500 * time.Microsecond, LastError: "invalid_grant", Failures: 2, Instance: "pid-1",
		RecordedOn: time.Date(2026, 11, 23, 3, 1, 0, 0, time.UTC)}
	if err := lock.(broker.StatusRecorder).RecordStatus(ctx, want); err != nil {
		t.Fatal(err)
	}
	if err := lock.Release(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := b.ReadStatus(ctx, "XERO")
	if err != nil || got != want {
		t.Fatalf("read %+v, %v; want %+v", got, err, want)
	}
	if _, err := b.ReadStatus(ctx, "../etc"); err == nil {
		t.Fatal("a bad name was read")
	}
}
