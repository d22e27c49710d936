package server

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
)

// TestSweepTimeoutFollowsHostJSON: the timer's deadline is host.json's
// functionTimeout less a minute, read where the host says the app is; when
// it cannot be read, the smallest of the host's defaults is assumed, with
// a warning.
func TestSweepTimeoutFollowsHostJSON(t *testing.T) {
	tests := []struct {
		name     string
		hostJSON string // "" : no FUNCTIONS_APP_ROOT_PATH
		want     time.Duration
		warning  string
	}{
		{"standalone", "", functions.DefaultSweepTimeout, ""},
		{"flex default", `{"version":"2.0","functionTimeout":"00:30:00"}`, 29 * time.Minute, ""},
		{"ten minutes", `{"functionTimeout":"00:10:00"}`, 9 * time.Minute, ""},
		{"hours without seconds", `{"functionTimeout":"01:00"}`, 59 * time.Minute, ""},
		{"a day", `{"functionTimeout":"1.00:00:00"}`, 24*time.Hour - time.Minute, ""},
		{"fraction", `{"functionTimeout":"00:05:00.5"}`, 4*time.Minute + 500*time.Millisecond, ""},
		{"short", `{"functionTimeout":"00:01:30"}`, 45 * time.Second, ""},
		{"unbounded", `{"functionTimeout":"-1"}`, functions.DefaultSweepTimeout, ""},
		{"unbounded as a TimeSpan", `{"functionTimeout":"-1.00:00:00"}`, functions.DefaultSweepTimeout, ""},
		{"unset", `{"version":"2.0"}`, 4 * time.Minute, "sets no functionTimeout"},
		{"not a TimeSpan", `{"functionTimeout":"30m"}`, 4 * time.Minute, `functionTimeout "30m": not a TimeSpan`},
		{"out of range", `{"functionTimeout":"00:75:00"}`, 4 * time.Minute, "minutes and seconds 0-59"},
		{"comments", "{// note\n\"functionTimeout\":\"00:30:00\"}", 4 * time.Minute, "is not plain JSON"},
		{"no file", "-", 4 * time.Minute, "cannot read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			if tt.hostJSON != "" {
				dir := t.TempDir()
				env["FUNCTIONS_APP_ROOT_PATH"] = dir
				if tt.hostJSON != "-" {
					if err := os.WriteFile(filepath.Join(dir, "host.json"), []byte(tt.hostJSON), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			got, warning := sweepTimeout(func(k string) string { return env[k] })
			if got != tt.want {
				t.Errorf("sweep timeout %v, want %v", got, tt.want)
			}
			if (tt.warning == "") != (warning == "") || !strings.Contains(warning, tt.warning) {
				t.Errorf("warning %q, want one containing %q", warning, tt.warning)
			}
		})
	}
}

// TestShippedHostJSONGivesTheSweepItsTime: the host.json we ship sets
// functionTimeout explicitly, at Flex Consumption's default, and the timer
// reads it: the sweep may run well past the two minutes the server's old
// WriteTimeout allowed, and still answers a minute before the host cancels
// it.
func TestShippedHostJSONGivesTheSweepItsTime(t *testing.T) {
	ft, err := readFunctionTimeout(filepath.Join("..", "..", "..", "host.json"))
	if err != nil {
		t.Fatal(err)
	}
	if ft != 30*time.Minute {
		t.Errorf("host.json functionTimeout %v; the README and the handler's default assume Flex's 30 minutes", ft)
	}
	got, warning := sweepTimeout(func(k string) string {
		if k == "FUNCTIONS_APP_ROOT_PATH" {
			return filepath.Join("..", "..", "..")
		}
		return ""
	})
	if warning != "" || got != ft-functions.SweepMargin || got != functions.DefaultSweepTimeout {
		t.Errorf("sweep timeout %v (warning %q); want functionTimeout less %v, %v", got, warning, functions.SweepMargin, functions.DefaultSweepTimeout)
	}
	if s := httpServer(nil, slog.New(slog.DiscardHandler)); s.WriteTimeout != 0 && s.WriteTimeout < got {
		t.Errorf("the server's WriteTimeout %v would cut the timer's answer before its deadline %v", s.WriteTimeout, got)
	}
}
