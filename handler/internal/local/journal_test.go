package local

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

func lockJournal(t *testing.T, l *Locker, name string) *fileLock {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	k, err := l.Lock(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Release(context.Background()) })
	return k.(*fileLock)
}

// TestJournal: records append and the last one reads back, in another
// holder too; clearing empties the journal; the file is 0600.
func TestJournal(t *testing.T) {
	dir := t.TempDir()
	l, err := NewLocker(dir, LockerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k := lockJournal(t, l, "xero")
	if rec, err := k.ReadWriteAhead(ctx); err != nil || rec != nil {
		t.Fatalf("new journal: %q, %v; want nil", rec, err)
	}
	if has, err := l.HasWriteAhead(ctx, "xero"); err != nil || has {
		t.Fatalf("HasWriteAhead on a new lock = %v, %v", has, err)
	}
	for _, rec := range [][]byte{[]byte("first\n\x00record"), []byte("second record")} {
		if err := k.WriteAhead(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.Release(ctx); err != nil {
		t.Fatal(err)
	}
	next := lockJournal(t, l, "XERO") // names are case-insensitive
	if rec, err := next.ReadWriteAhead(ctx); err != nil || string(rec) != "second record" {
		t.Fatalf("next holder reads %q, %v; want the last record", rec, err)
	}
	if has, err := l.HasWriteAhead(ctx, "xero"); err != nil || !has {
		t.Fatalf("HasWriteAhead = %v, %v; want true", has, err)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(next.journalPath)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("journal mode %v, %v; want 0600", fi.Mode().Perm(), err)
		}
	}
	if err := next.ClearWriteAhead(ctx); err != nil {
		t.Fatal(err)
	}
	if rec, err := next.ReadWriteAhead(ctx); err != nil || rec != nil {
		t.Fatalf("after clearing: %q, %v; want nil", rec, err)
	}
	if has, _ := l.HasWriteAhead(ctx, "xero"); has {
		t.Fatal("HasWriteAhead = true after clearing")
	}
}

// TestJournalTornAppend: a kill in the middle of an append leaves a last
// line without its newline; reading returns the record before it, which
// was the last one reported durable.
func TestJournalTornAppend(t *testing.T) {
	tests := []struct {
		name string
		tail string
		want []byte
	}{
		{name: "torn after a record", tail: "c2Vjb25k", want: []byte("first")},
		{name: "torn first record", tail: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := NewLocker(dir, LockerOptions{})
			if err != nil {
				t.Fatal(err)
			}
			k := lockJournal(t, l, "xero")
			if tt.want != nil {
				if err := k.WriteAhead(context.Background(), tt.want); err != nil {
					t.Fatal(err)
				}
			}
			f, err := os.OpenFile(filepath.Join(dir, "locks", "xero.journal"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(tt.tail + "dG9ybg"); err != nil { // no newline
				t.Fatal(err)
			}
			f.Close()
			rec, err := k.ReadWriteAhead(context.Background())
			if err != nil || !bytes.Equal(rec, tt.want) {
				t.Fatalf("read %q, %v; want %q", rec, err, tt.want)
			}
		})
	}
}

var _ broker.WriteAheadLog = (*fileLock)(nil)
