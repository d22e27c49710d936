package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

var (
	_ broker.StatusReader   = (*Locker)(nil)
	_ broker.StatusRecorder = (*fileLock)(nil)
)

// statusFile is the JSON kept at <dir>/locks/<name>.status.json: the
// outcome of the connection's latest refresh, which every process on the
// machine reports (the blob lease keeps the same in the lock blob's
// metadata). It never holds a secret.
type statusFile struct {
	LastRefresh time.Time `json:"lastRefresh,omitzero"`
	// LastRefreshDuration is in nanoseconds (time.Duration's JSON).
	LastRefreshDuration time.Duration `json:"lastRefreshDurationNs,omitempty"`
	LastError           string        `json:"lastError,omitempty"`
	Failures            int           `json:"failures"`
	Instance            string        `json:"instance,omitempty"`
	RecordedOn          time.Time     `json:"recordedOn,omitzero"`
}

func (l *Locker) statusPath(name string) string {
	return filepath.Join(l.dir, fileName(name, ".status.json"))
}

// ReadStatus returns what the last holder of the named lock recorded; a
// zero status when nothing was.
func (l *Locker) ReadStatus(ctx context.Context, name string) (broker.SharedStatus, error) {
	if err := ValidateName(name); err != nil {
		return broker.SharedStatus{}, err
	}
	if err := ctx.Err(); err != nil {
		return broker.SharedStatus{}, err
	}
	data, err := os.ReadFile(l.statusPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return broker.SharedStatus{}, nil
	}
	if err != nil {
		return broker.SharedStatus{}, fmt.Errorf("local: reading the status of %q: %w", name, err)
	}
	var f statusFile
	if err := json.Unmarshal(data, &f); err != nil {
		return broker.SharedStatus{}, fmt.Errorf("local: the status file of %q is not valid JSON; delete it", name)
	}
	return broker.SharedStatus(f), nil
}

// RecordStatus writes s beside the held lock, atomically: readers see the
// old record or the new one.
func (l *fileLock) RecordStatus(ctx context.Context, s broker.SharedStatus) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	data, err := json.Marshal(statusFile(s))
	if err != nil {
		return err
	}
	return writeFileAtomic(l.statusPath, append(data, '\n'))
}
