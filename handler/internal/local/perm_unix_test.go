//go:build unix

package local_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// TestPermissions checks the modes under umasks that would widen nothing but
// narrow a lot: 0277 leaves MkdirAll(0700) at 0500, a directory the owner
// could not write into.
func TestPermissions(t *testing.T) {
	for _, umask := range []int{0o000, 0o022, 0o077, 0o277} {
		t.Run(fmt.Sprintf("umask %04o", umask), func(t *testing.T) {
			// The parent first, under the usual umask: one made under
			// umask 0 is world-writable, which NewStore refuses.
			dir := filepath.Join(t.TempDir(), "state")
			old := syscall.Umask(umask)
			defer syscall.Umask(old)

			s, err := local.NewStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			l, err := local.NewLocker(dir, local.LockerOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := s.Set(ctx, "x", broker.StoredSecret{Value: "v"}); err != nil {
				t.Fatal(err)
			}
			// A second Set replaces the file through a new temporary file.
			if err := s.Set(ctx, "x", broker.StoredSecret{Value: "w"}); err != nil {
				t.Fatal(err)
			}
			lock, err := l.Lock(ctx, "x")
			if err != nil {
				t.Fatal(err)
			}
			defer lock.Release(ctx)

			for path, want := range map[string]os.FileMode{
				dir:                                  os.ModeDir | 0o700,
				filepath.Join(dir, "secrets"):        os.ModeDir | 0o700,
				filepath.Join(dir, "locks"):          os.ModeDir | 0o700,
				filepath.Join(dir, "secrets/x.json"): 0o600,
				filepath.Join(dir, "locks/x.lock"):   0o600,
			} {
				fi, err := os.Stat(path)
				if err != nil {
					t.Error(err)
					continue
				}
				if fi.Mode() != want {
					t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
				}
			}
		})
	}
}

// TestPermissionsExistingDir checks that an existing state directory is left
// as the operator made it (it may be shared, even "."), while the secrets
// directory, which is the store's own, is tightened.
func TestPermissionsExistingDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "secrets"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := local.NewStore(dir); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		dir:                           os.ModeDir | 0o755,
		filepath.Join(dir, "secrets"): os.ModeDir | 0o700,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
		}
	}
}
