package bloblease

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// TestRedemptionMark: the mark a holder writes before it sends a refresh
// token (broker/redemption.go) is what the next holder, on any instance,
// reads back. A status recorded after it and a cleared write-ahead record
// leave it in place; a write-ahead record settles it in the same request
// (the record holds what the redemption returned), and ClearRedemption
// removes it; neither touches the recorded status. A released lock neither
// reads nor writes it.
func TestRedemptionMark(t *testing.T) {
	t.Parallel()
	az := storage.Instance(t)
	container := uniqueContainer(t)
	a, b := newLocker(t, az, container, Options{}), newLocker(t, az, container, Options{})
	ctx := ctx10s(t)
	mark := broker.Redemption{Token: "0123456789abcdef", Instance: "instance-a", At: time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC)}
	status := broker.SharedStatus{Instance: "instance-a", Failures: 1, LastError: "invalid_grant"}
	pending := func(h *heldLock) (broker.Redemption, bool) {
		t.Helper()
		r, ok, err := h.PendingRedemption(ctx)
		if err != nil {
			t.Fatalf("PendingRedemption = %v", err)
		}
		return r, ok
	}

	held := mustLock(t, a, "xero")
	if r, ok := pending(held); ok || r != (broker.Redemption{}) {
		t.Fatalf("a new lock has the mark %+v", r)
	}
	if err := held.ClearRedemption(ctx); err != nil {
		t.Fatalf("ClearRedemption without a mark = %v; want nil", err)
	}
	if err := record(held, status); err != nil {
		t.Fatal(err)
	}
	if err := held.MarkRedemption(ctx, mark); err != nil {
		t.Fatalf("MarkRedemption = %v", err)
	}
	status.Failures = 2
	if err := record(held, status); err != nil {
		t.Fatal(err)
	}
	if err := held.ClearWriteAhead(ctx); err != nil {
		t.Fatal(err)
	}
	if r, ok := pending(held); !ok || !equalMark(r, mark) {
		t.Fatalf("the writer reads %+v, %v; want %+v", r, ok, mark)
	}
	if err := release(held); err != nil {
		t.Fatal(err)
	}
	if _, _, err := held.PendingRedemption(ctx); !isNotHeld(err) {
		t.Errorf("PendingRedemption after Release = %v; want a NotHeld *Error", err)
	}
	if err := held.MarkRedemption(ctx, mark); !isNotHeld(err) {
		t.Errorf("MarkRedemption after Release = %v; want a NotHeld *Error", err)
	}

	// The next holder, on another instance, finds the mark; its
	// write-ahead record settles it.
	next := mustLock(t, b, "xero")
	if r, ok := pending(next); !ok || !equalMark(r, mark) {
		t.Fatalf("the next holder reads %+v, %v; want %+v", r, ok, mark)
	}
	if err := next.WriteAhead(ctx, []byte("TRWAL1 sealed")); err != nil {
		t.Fatal(err)
	}
	if r, ok := pending(next); ok {
		t.Errorf("the mark %+v outlived the write-ahead record", r)
	}
	if err := release(next); err != nil {
		t.Fatal(err)
	}

	// A third marks again and clears the mark itself.
	third := mustLock(t, a, "xero")
	if r, ok := pending(third); ok {
		t.Fatalf("the settled mark %+v came back", r)
	}
	if err := third.MarkRedemption(ctx, mark); err != nil {
		t.Fatal(err)
	}
	if err := third.ClearRedemption(ctx); err != nil {
		t.Fatalf("ClearRedemption = %v", err)
	}
	if r, ok := pending(mustLockAfter(t, a, third)); ok {
		t.Errorf("the cleared mark %+v is still in the blob", r)
	}
	if got := readStatus(t, b, "xero"); got.Failures != 2 || got.LastError != status.LastError {
		t.Errorf("status after the marks = %+v; want %+v kept", got, status)
	}
}

// TestRedemptionMarkIsSanitized: what goes into the blob's metadata is
// metadata-safe and bounded, whatever the caller passed.
func TestRedemptionMarkIsSanitized(t *testing.T) {
	t.Parallel()
	az := storage.Instance(t)
	l := newLocker(t, az, uniqueContainer(t), Options{})
	ctx := ctx10s(t)
	held := mustLock(t, l, "xero")
	defer release(held)
	if err := held.MarkRedemption(ctx, broker.Redemption{Token: "ab cd\n" + strings.Repeat("f", 100), Instance: "host/1 " + strings.Repeat("i", 200)}); err != nil {
		t.Fatal(err)
	}
	fresh := mustLockAfter(t, l, held)
	r, ok, err := fresh.PendingRedemption(ctx)
	if err != nil || !ok {
		t.Fatalf("PendingRedemption = %+v, %v, %v", r, ok, err)
	}
	if !strings.HasPrefix(r.Token, "ab_cd_fff") || len(r.Token) != 64 {
		t.Errorf("token %q; want the unsafe characters replaced and 64 characters at most", r.Token)
	}
	if !strings.HasPrefix(r.Instance, "host_1_iii") || len(r.Instance) != maxInstance {
		t.Errorf("instance %q; want the unsafe characters replaced and %d characters at most", r.Instance, maxInstance)
	}
	if !r.At.IsZero() {
		t.Errorf("at %v; want zero, as written", r.At)
	}
}

// mustLockAfter releases held and takes its lock again, so that what is
// read next comes from the service, not from held's copy.
func mustLockAfter(t *testing.T, l *Locker, held *heldLock) *heldLock {
	t.Helper()
	if err := release(held); err != nil {
		t.Fatal(err)
	}
	h := mustLock(t, l, held.name)
	t.Cleanup(func() { _ = release(h) })
	return h
}

func equalMark(a, b broker.Redemption) bool {
	return a.Token == b.Token && a.Instance == b.Instance && a.At.Equal(b.At)
}

func isNotHeld(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.NotHeld
}
