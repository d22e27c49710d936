//go:build unix

package local_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// TestUnsafeStateDirIsRefused: a state directory (or its secrets or locks
// directory) that its group or everyone may write, or a parent that
// another user could replace, is refused by the store and the lock alike,
// as ssh refuses a writable key directory; a sticky parent like /tmp is
// fine.
func TestUnsafeStateDirIsRefused(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, base string) string // returns the state dir
		bad   bool
		only  string // "store" or "locker": the one that uses the bad directory
	}{
		{"own directory 0700", func(t *testing.T, base string) string { return mkdir(t, base, "state", 0o700) }, false, ""},
		{"own directory 0755", func(t *testing.T, base string) string { return mkdir(t, base, "state", 0o755) }, false, ""},
		{"not yet created", func(t *testing.T, base string) string { return filepath.Join(base, "new", "state") }, false, ""},
		{"group-writable", func(t *testing.T, base string) string { return mkdir(t, base, "state", 0o770) }, true, ""},
		{"world-writable", func(t *testing.T, base string) string { return mkdir(t, base, "state", 0o777) }, true, ""},
		{"world-writable even with the sticky bit", func(t *testing.T, base string) string {
			return mkdir(t, base, "state", 0o777|os.ModeSticky)
		}, true, ""},
		{"group-writable secrets directory", func(t *testing.T, base string) string {
			d := mkdir(t, base, "state", 0o700)
			mkdir(t, d, "secrets", 0o770)
			return d
		}, true, "store"},
		{"group-writable locks directory", func(t *testing.T, base string) string {
			d := mkdir(t, base, "state", 0o700)
			mkdir(t, d, "locks", 0o777)
			return d
		}, true, "locker"},
		{"parent writable by everyone", func(t *testing.T, base string) string {
			p := mkdir(t, base, "shared", 0o777)
			return mkdir(t, p, "state", 0o700)
		}, true, ""},
		{"parent writable by everyone, sticky", func(t *testing.T, base string) string {
			p := mkdir(t, base, "tmp", 0o777|os.ModeSticky)
			return mkdir(t, p, "state", 0o700)
		}, false, ""},
		{"symbolic link into a writable parent", func(t *testing.T, base string) string {
			p := mkdir(t, base, "shared", 0o777)
			real := mkdir(t, p, "state", 0o700)
			link := filepath.Join(base, "link")
			if err := os.Symlink(real, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			dir := tt.setup(t, base)
			_, serr := local.NewStore(dir)
			_, lerr := local.NewLocker(dir, local.LockerOptions{})
			var ue *local.UnsafeDirError
			for what, err := range map[string]error{"store": serr, "locker": lerr} {
				if want := tt.bad && (tt.only == "" || tt.only == what); want != errors.As(err, &ue) {
					t.Errorf("%s: err = %v; want an *UnsafeDirError: %v", what, err, want)
				}
			}
		})
	}
}

func mkdir(t *testing.T, parent, name string, mode os.FileMode) string {
	t.Helper()
	d := filepath.Join(parent, name)
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, mode); err != nil { // not filtered by the umask
		t.Fatal(err)
	}
	return d
}
