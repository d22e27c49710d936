package local

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

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

// A held fileLock is a broker.RedemptionMarker: the mark is a small JSON
// file beside the lock file, <dir>/locks/<name>.mark, written (and
// fsync'd) before each redemption and emptied once it is settled. It is a
// file of its own rather than the lock file's content: on Windows the lock
// is a byte-range lock that would refuse writes through another handle.
// The mark holds a hash prefix of the refresh token, never the token.
var _ broker.RedemptionMarker = (*fileLock)(nil)

// markFile is the JSON of a mark file.
type markFile struct {
	Token    string    `json:"token"`
	Instance string    `json:"instance,omitempty"`
	At       time.Time `json:"at"`
}

func (l *fileLock) markPath() string {
	return strings.TrimSuffix(l.journalPath, ".journal") + ".mark"
}

// MarkRedemption writes r to the mark file and fsyncs it. It also creates
// the journal when it does not exist yet (and fsyncs the directory then),
// so that the write-ahead record after the provider's answer is one
// append and one fsync, never a file creation.
func (l *fileLock) MarkRedemption(ctx context.Context, r broker.Redemption) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ensureFile(l.journalPath); err != nil {
		return &JournalError{Op: "create", Path: l.journalPath, Err: err}
	}
	data, err := json.Marshal(markFile(r))
	if err != nil {
		return err
	}
	p := l.markPath()
	if err := ensureFile(p); err != nil {
		return &JournalError{Op: "mark", Path: p, Err: err}
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0) // #nosec G304 -- the path is built from a validated name.
	if err != nil {
		return &JournalError{Op: "mark", Path: p, Err: err}
	}
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt(append(data, '\n'), 0)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return &JournalError{Op: "mark", Path: p, Err: err}
	}
	return nil
}

// PendingRedemption reads the mark file. A file that does not parse (a
// kill between its truncation and its write) is no mark.
func (l *fileLock) PendingRedemption(ctx context.Context) (broker.Redemption, bool, error) {
	if err := ctx.Err(); err != nil {
		return broker.Redemption{}, false, err
	}
	data, err := os.ReadFile(l.markPath())
	if errors.Is(err, fs.ErrNotExist) {
		return broker.Redemption{}, false, nil
	}
	if err != nil {
		return broker.Redemption{}, false, &JournalError{Op: "read mark", Path: l.markPath(), Err: err}
	}
	var m markFile
	if len(bytes.TrimSpace(data)) == 0 || json.Unmarshal(data, &m) != nil || m.Token == "" {
		return broker.Redemption{}, false, nil
	}
	return broker.Redemption(m), true, nil
}

// ClearRedemption empties the mark file, without an fsync: a mark that
// survives a machine crash names a spent token, which the broker ignores.
func (l *fileLock) ClearRedemption(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := os.Truncate(l.markPath(), 0)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return &JournalError{Op: "clear mark", Path: l.markPath(), Err: err}
	}
	return nil
}

// ensureFile creates p (0600) when it does not exist, and then fsyncs its
// directory so that the file's name is durable too.
func ensureFile(p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) // #nosec G304 -- the path is built from a validated name.
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = f.Chmod(0o600) // the umask may have narrowed 0600
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return syncDir(filepath.Dir(p))
}
