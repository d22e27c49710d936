// Command pack zips a function app folder for deployment, keeping file
// modes: the Functions host on Linux runs `handler` only if the zip says it
// is executable (a zip made on Windows, or by tools that drop modes, breaks
// Flex Consumption deployments).
//
//	go run ./handler/cmd/pack -dir dist/app -out dist/tokenrefresher.zip
package main

import (
	"archive/zip"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

func main() {
	dir := flag.String("dir", "", "folder to zip (its contents become the zip's root)")
	out := flag.String("out", "", "zip file to write")
	flag.Parse()
	if *dir == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: pack -dir DIR -out FILE.zip")
		os.Exit(2)
	}
	if err := pack(*dir, *out); err != nil {
		fmt.Fprintln(os.Stderr, "pack:", err)
		os.Exit(1)
	}
}

// epoch is the modification time written for every entry, so the same
// input gives the same zip.
var epoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

func pack(dir, out string) (err error) {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	zw := zip.NewWriter(f)
	// WalkDir visits in lexical order: a deterministic archive.
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := zip.FileInfoHeader(info)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		h.Method = zip.Deflate
		h.Modified = epoch
		w, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(w, src)
		return err
	})
	if err != nil {
		return err
	}
	return zw.Close()
}
