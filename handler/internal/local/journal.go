package local

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// A held fileLock is a broker.WriteAheadLog: a journal file beside the lock
// file, <dir>/locks/<name>.journal, 0600 in the 0700 locks directory.
//
// Writing a record is one append of one line (the record in base64) and one
// fsync of the file: the fastest durable write a file system offers, and
// the first write of every rotation. The directory is fsync'd only when the
// append created the file; clearing truncates it rather than removing it,
// so later appends need no directory fsync. A process killed in the middle
// of an append leaves a last line without its newline, which reading
// ignores: that record was never reported durable.
var (
	_ broker.WriteAheadLog     = (*fileLock)(nil)
	_ broker.WriteAheadChecker = (*Locker)(nil)
)

// maxJournal bounds what ReadWriteAhead reads. The journal is truncated at
// every clearing, so it holds a few records at most; anything larger is
// not ours.
const maxJournal = 1 << 20

func (l *Locker) journalPath(name string) string {
	return filepath.Join(l.dir, fileName(name, ".journal"))
}

// JournalError reports a failed journal operation. It names the file, never
// a record's content.
type JournalError struct {
	Op   string // "append", "read", "clear" or "check"
	Path string
	Err  error
}

func (e *JournalError) Error() string {
	return fmt.Sprintf("local: write-ahead journal %s: %s: %v", e.Path, e.Op, e.Err)
}

func (e *JournalError) Unwrap() error { return e.Err }

// WriteAhead appends rec to the journal and fsyncs it.
func (l *fileLock) WriteAhead(ctx context.Context, rec []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p := l.journalPath
	created := false
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0) // #nosec G304 -- the path is built from a validated name.
	if errors.Is(err, fs.ErrNotExist) {
		// #nosec G304 -- the path is built from a validated name.
		f, err = os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
		created = err == nil
	}
	if err != nil {
		return &JournalError{Op: "append", Path: p, Err: err}
	}
	line := make([]byte, base64.StdEncoding.EncodedLen(len(rec))+1)
	base64.StdEncoding.Encode(line, rec)
	line[len(line)-1] = '\n'
	err = func() error {
		if created {
			// The umask may have narrowed 0600.
			if err := f.Chmod(0o600); err != nil {
				return err
			}
		}
		if _, err := f.Write(line); err != nil {
			return err
		}
		return f.Sync()
	}()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && created {
		err = syncDir(filepath.Dir(p))
	}
	if err != nil {
		return &JournalError{Op: "append", Path: p, Err: err}
	}
	return nil
}

// ReadWriteAhead returns the journal's last complete record, nil when it
// has none.
func (l *fileLock) ReadWriteAhead(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return readJournal(l.journalPath)
}

func readJournal(p string) ([]byte, error) {
	f, err := os.Open(p) // #nosec G304 -- the path is built from a validated name.
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &JournalError{Op: "read", Path: p, Err: err}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJournal+1))
	if err != nil {
		return nil, &JournalError{Op: "read", Path: p, Err: err}
	}
	if len(data) > maxJournal {
		return nil, &JournalError{Op: "read", Path: p, Err: fmt.Errorf("larger than %d bytes", maxJournal)}
	}
	// Only lines that end in a newline were completely written.
	end := bytes.LastIndexByte(data, '\n')
	if end < 0 {
		return nil, nil
	}
	data = data[:end]
	last := data[bytes.LastIndexByte(data, '\n')+1:]
	if len(last) == 0 {
		return nil, nil
	}
	rec := make([]byte, base64.StdEncoding.DecodedLen(len(last)))
	m, err := base64.StdEncoding.Decode(rec, last)
	if err != nil {
		return nil, &JournalError{Op: "read", Path: p, Err: errors.New("the last record is not base64; the file was edited")}
	}
	return rec[:m], nil
}

// ClearWriteAhead truncates the journal and fsyncs it.
func (l *fileLock) ClearWriteAhead(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p := l.journalPath
	f, err := os.OpenFile(p, os.O_WRONLY, 0) // #nosec G304 -- the path is built from a validated name.
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return &JournalError{Op: "clear", Path: p, Err: err}
	}
	err = f.Truncate(0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return &JournalError{Op: "clear", Path: p, Err: err}
	}
	return nil
}

// HasWriteAhead reports whether the named lock's journal is not empty,
// without taking the lock.
func (l *Locker) HasWriteAhead(ctx context.Context, name string) (bool, error) {
	if err := ValidateName(name); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	fi, err := os.Stat(l.journalPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, &JournalError{Op: "check", Path: l.journalPath(name), Err: err}
	}
	return fi.Size() > 0, nil
}
