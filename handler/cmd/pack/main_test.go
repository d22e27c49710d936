package main

import (
	"archive/zip"
	"os"
	"path/filepath"
	"testing"
)

func TestPackKeepsModesAndLayout(t *testing.T) {
	dir := t.TempDir()
	files := map[string]os.FileMode{
		"handler":                   0o755,
		"host.json":                 0o644,
		"token/function.json":       0o644,
		"refresh/function.json":     0o644,
		"connections/function.json": 0o644,
	}
	for name, mode := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(name), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask may have cut bits
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "app.zip")
	if err := pack(dir, out); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.OpenReader(out)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	seen := map[string]bool{}
	for _, f := range zr.File {
		want, ok := files[f.Name]
		if !ok {
			t.Errorf("unexpected entry %q", f.Name)
			continue
		}
		seen[f.Name] = true
		if got := f.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", f.Name, got, want)
		}
	}
	for name := range files {
		if !seen[name] {
			t.Errorf("missing entry %q", name)
		}
	}
}
