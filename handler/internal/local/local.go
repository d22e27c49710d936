// Package local provides the embedded defaults used when no cloud service is
// configured: Store, a broker.SecretStore that keeps one file per secret in a
// directory, and Locker, a broker.Locker built on operating-system file locks
// (flock on Unix, LockFileEx on Windows) that excludes other goroutines and
// other processes on the same machine.
//
// Both live under one state directory:
//
//	<dir>/secrets/<name>.json   one secret: {"value","expiresOn","updatedOn"}
//	<dir>/locks/<name>.lock     one lock; the file's content is unused
//	<dir>/locks/<name>.journal  the lock's write-ahead journal (journal.go)
//
// The subdirectories are 0700 and the files 0600 whatever the umask, because
// the secrets are refresh tokens and client secrets.
package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// MaxNameLen is the longest secret or lock name, Key Vault's limit for a
// secret name.
const MaxNameLen = broker.MaxSecretNameLen

// NameError reports a secret or lock name that does not follow Key Vault's
// rules. Names become file names, so the rules are also what keeps a name
// from reaching outside the state directory.
type NameError struct {
	Name string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("local: invalid name %q: want 1-%d characters of 0-9, a-z, A-Z and '-', starting with a letter", e.Name, MaxNameLen)
}

// ValidateName returns a *NameError unless name is 1-127 characters of
// 0-9, a-z, A-Z and '-', starting with a letter: the Key Vault secret name
// rules, so a name that works here works in Key Vault too.
func ValidateName(name string) error {
	if !broker.ValidSecretName(name) {
		return &NameError{Name: name}
	}
	return nil
}

// fileName maps a valid name to its file name. Key Vault names are
// case-insensitive, and so are the default file systems of Windows and
// macOS; lower-casing gives the same answer on Linux.
func fileName(name, ext string) string { return strings.ToLower(name) + ext }

// prepareDir makes sure dir exists and returns dir/sub, created and set to
// 0700. dir itself is only chmod-ed when this call created it: it may be a
// directory the operator shares with other things (even ".").
func prepareDir(dir, sub string) (string, error) {
	if dir == "" {
		return "", errors.New("local: state directory is empty")
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", fmt.Errorf("local: creating state directory: %w", err)
		}
		// MkdirAll's mode is filtered by the umask; a restrictive one
		// (0277) would leave a directory even the owner cannot write to.
		if err := os.Chmod(dir, 0o700); err != nil { // #nosec G302 -- a directory: x lets the owner enter it; the files in it are 0600
			return "", fmt.Errorf("local: %w", err)
		}
	} else if err != nil {
		return "", fmt.Errorf("local: state directory: %w", err)
	}
	// Before anything is read or written: a directory another user can
	// write into or replace may hold their tokens (safedir_unix.go).
	if err := checkParents(dir); err != nil {
		return "", err
	}
	if err := checkOwnDir(dir); err != nil {
		return "", err
	}
	p := filepath.Join(dir, sub)
	if _, err := os.Stat(p); err == nil {
		// An existing one is checked before it is chmod-ed: what another
		// user put there meanwhile stays there.
		if err := checkOwnDir(p); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(p, 0o700); err != nil {
		return "", fmt.Errorf("local: creating %s directory: %w", sub, err)
	}
	if err := os.Chmod(p, 0o700); err != nil { // #nosec G302 -- a directory: x lets the owner enter it; the files in it are 0600
		return "", fmt.Errorf("local: %w", err)
	}
	return p, nil
}
