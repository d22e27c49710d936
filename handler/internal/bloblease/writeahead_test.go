package bloblease

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

func ctx10s(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func hasRecord(t *testing.T, l *Locker, name string) bool {
	t.Helper()
	has, err := l.HasWriteAhead(ctx10s(t), name)
	if err != nil {
		t.Fatalf("HasWriteAhead(%s) = %v", name, err)
	}
	return has
}

// TestWriteAheadRecord: the record is the lock blob's content, written
// and read under the lease; the next holder (another instance) reads it;
// clearing empties it; and the status in the blob's metadata survives each
// write of the content.
func TestWriteAheadRecord(t *testing.T) {
	t.Parallel()
	az := storage.Instance(t)
	container := uniqueContainer(t)
	a := newLocker(t, az, container, Options{})
	if hasRecord(t, a, "xero") {
		t.Fatal("a lock that does not exist yet has a record")
	}
	held := mustLock(t, a, "xero")
	ctx := ctx10s(t)
	if rec, err := held.ReadWriteAhead(ctx); err != nil || rec != nil {
		t.Fatalf("ReadWriteAhead on a new lock = %q, %v; want nil, nil", rec, err)
	}
	status := broker.SharedStatus{Instance: "instance-a", Failures: 2, LastError: "invalid_grant"}
	if err := record(held, status); err != nil {
		t.Fatal(err)
	}
	rec := []byte("TRWAL1 sealed bytes \x00\xff")
	if err := held.WriteAhead(ctx, rec); err != nil {
		t.Fatalf("WriteAhead = %v", err)
	}
	if got := readStatus(t, a, "xero"); got.Instance != status.Instance || got.Failures != 2 || got.LastError != status.LastError {
		t.Fatalf("status after WriteAhead = %+v; want %+v kept", got, status)
	}
	if !hasRecord(t, newLocker(t, az, container, Options{}), "xero") {
		t.Fatal("HasWriteAhead = false after WriteAhead")
	}
	// The lease is still ours after writing the content: renew and
	// release work.
	if _, err := held.lease.RenewLease(ctx, nil); err != nil {
		t.Fatalf("renewing after WriteAhead = %v", err)
	}
	if err := release(held); err != nil {
		t.Fatal(err)
	}

	// The next holder, another instance, reads it and clears it.
	b := newLocker(t, az, container, Options{})
	next := mustLock(t, b, "xero")
	got, err := next.ReadWriteAhead(ctx)
	if err != nil || !bytes.Equal(got, rec) {
		t.Fatalf("next holder's ReadWriteAhead = %q, %v; want the record", got, err)
	}
	if err := next.ClearWriteAhead(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := next.ReadWriteAhead(ctx); err != nil || got != nil {
		t.Fatalf("after ClearWriteAhead = %q, %v; want nil", got, err)
	}
	if hasRecord(t, b, "xero") {
		t.Fatal("HasWriteAhead = true after ClearWriteAhead")
	}
	if got := readStatus(t, b, "xero"); got.Instance != status.Instance || got.Failures != 2 {
		t.Fatalf("status after ClearWriteAhead = %+v; want it kept", got)
	}
	if err := release(next); err != nil {
		t.Fatal(err)
	}
}

// TestWriteAheadRefusedWithoutTheLease: a holder whose lease is gone (a
// stale lease id, or a released lock) cannot write or clear the record of
// whoever holds the lock now.
func TestWriteAheadRefusedWithoutTheLease(t *testing.T) {
	t.Parallel()
	az := storage.Instance(t)
	container := uniqueContainer(t)
	a := newLocker(t, az, container, Options{})
	held := mustLock(t, a, "xero")
	ctx := ctx10s(t)
	if err := held.WriteAhead(ctx, []byte("the holder's record")); err != nil {
		t.Fatal(err)
	}

	stale := newLocker(t, az, container, Options{})
	stale.noRenew = true
	lc, err := lease.NewBlobClient(stale.container.NewBlobClient("xero.lock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	other := stale.hold("xero", "xero.lock", stale.container.NewBlobClient("xero.lock"), lc, time.Now())
	for name, op := range map[string]func() error{
		"WriteAhead":      func() error { return other.WriteAhead(ctx, []byte("stale")) },
		"ClearWriteAhead": func() error { return other.ClearWriteAhead(ctx) },
		"ReadWriteAhead":  func() error { _, err := other.ReadWriteAhead(ctx); return err },
	} {
		var e *Error
		if err := op(); !errors.Is(err, ErrNotHeld) || !errors.As(err, &e) || e.Code == "" {
			t.Errorf("%s with a stale lease id = %v; want an *Error wrapping ErrNotHeld with the service's code", name, err)
		}
	}
	if got, err := held.ReadWriteAhead(ctx); err != nil || string(got) != "the holder's record" {
		t.Fatalf("the holder's record after stale writes = %q, %v", got, err)
	}
	if err := release(held); err != nil {
		t.Fatal(err)
	}
	if err := held.WriteAhead(ctx, []byte("late")); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("WriteAhead after Release = %v; want ErrNotHeld", err)
	}
}
