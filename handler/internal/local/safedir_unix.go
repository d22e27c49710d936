//go:build unix

package local

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// UnsafeDirError is a state directory that another user could write into,
// or replace: a token planted there would be served, and a secret written
// there read. As ssh refuses a key whose directory others can write
// (OpenSSH safe_path), the local store and lock refuse it.
type UnsafeDirError struct {
	// Dir is the directory at fault: the state directory, one of its
	// subdirectories, or a parent.
	Dir string
	// Why says what another user could do.
	Why string
}

func (e *UnsafeDirError) Error() string {
	return fmt.Sprintf("local: LOCAL_STATE_DIR is not safe: %s %s; fix it (chmod go-w, or a directory of your own) or choose another LOCAL_STATE_DIR", e.Dir, e.Why)
}

// checkOwnDir refuses a directory the store keeps secrets in (the state
// directory or a subdirectory) unless it belongs to this user (or root) and
// no one else may write into it.
func checkOwnDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("local: %w", err)
	}
	if why := ownerProblem(fi); why != "" {
		return &UnsafeDirError{Dir: dir, Why: why}
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return &UnsafeDirError{Dir: dir, Why: fmt.Sprintf("is writable by its group or by everyone (mode %04o)", fi.Mode().Perm())}
	}
	return nil
}

// checkParents refuses a state directory that another user could replace:
// one of its parents, up to /, belongs to another user (who could rename
// it and put their own in its place) or is writable by others without the
// sticky bit (which, as on /tmp, stops them renaming what they do not own).
// Symbolic links are resolved first: the directories that matter are the
// ones the path ends up in.
func checkParents(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("local: %w", err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	for p := filepath.Dir(abs); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("local: %w", err)
		}
		if why := ownerProblem(fi); why != "" {
			return &UnsafeDirError{Dir: p, Why: why + ", and could replace " + abs}
		}
		if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 {
			return &UnsafeDirError{Dir: p, Why: fmt.Sprintf("is writable by its group or by everyone without the sticky bit (mode %04o), so another user could replace %s", fi.Mode().Perm(), abs)}
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// ownerProblem says why fi's owner is a problem: neither this user nor
// root.
func ownerProblem(fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	if uid := os.Geteuid(); st.Uid != 0 && int(st.Uid) != uid {
		return fmt.Sprintf("belongs to another user (uid %d; this process runs as uid %d)", st.Uid, uid)
	}
	return ""
}
