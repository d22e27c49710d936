package functions

import (
	"net/url"
	"slices"
	"testing"
)

// TestPlainPath: plainPath, the hit path's shortcut, takes only paths
// that path.Clean leaves as they are (cleanPath), and leaves every spelling
// rejectUncleanPaths must refuse to cleanPath.
func TestPlainPath(t *testing.T) {
	tests := []struct {
		path         string
		plain, clean bool
	}{
		{"/api/token/xero", true, true},
		{"/api/token/xero/", true, true},
		{"/", true, true},
		{"/api/token/.well-known", false, true}, // a dot starts a segment: left to cleanPath
		{"/api/token/x.y", true, true},
		{"/api/token/./xero", false, false},
		{"/api/token/../token/xero", false, false},
		{"/api/token/xero/.", false, false},
		{"/api/token/xero/..", false, false},
		{"/api//token/xero", false, false},
		{"//api/token/xero", false, false},
		{"/api/token/xero//", false, false},
		{"", false, true},
		{"*", false, true},
	}
	for _, tt := range tests {
		if got := plainPath(tt.path); got != tt.plain {
			t.Errorf("plainPath(%q) = %v, want %v", tt.path, got, tt.plain)
		}
		if got := cleanPath(tt.path); got != tt.clean {
			t.Errorf("cleanPath(%q) = %v, want %v", tt.path, got, tt.clean)
		}
	}
}

// FuzzPlainPath: no path is plain that path.Clean would change.
func FuzzPlainPath(f *testing.F) {
	for _, p := range []string{"/api/token/xero", "/a/./b", "/a/../b", "//a", "/a/", "/.", "/..", "/a/.b"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if plainPath(p) && !cleanPath(p) {
			t.Errorf("plainPath(%q) but path.Clean changes it", p)
		}
	})
}

// FuzzRequestSegments: splitting Path directly when the URL has no RawPath
// (requestSegments' shortcut) gives the segments that splitting and
// unescaping its escaped form gives.
func FuzzRequestSegments(f *testing.F) {
	for _, p := range []string{"/api/token/xero", "/api/token/a%2Fb", "/api/token/a%25b", "/api/token/a%20b/", "/api/%74oken/xero", "/", "/api/token/é"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		var a, b [maxSegments]string
		got, gotOK := requestSegments(a[:0], u)
		want, wantOK := splitSegments(b[:0], u.EscapedPath(), true)
		if gotOK != wantOK || !slices.Equal(got, want) {
			t.Errorf("%q: segments %q (%v), want %q (%v)", target, got, gotOK, want, wantOK)
		}
	})
}

// TestRoutesFitMaxSegments: every route's path fits the router's table of
// routes by size (hostRouter.bySize); a longer one would never be tried.
func TestRoutesFitMaxSegments(t *testing.T) {
	hr := newHostRouter(handleNotFound(), functionRoutes(nil, Options{})...)
	listed := 0
	for _, idx := range hr.bySize {
		listed += len(idx)
	}
	if listed != len(hr.routes) {
		t.Errorf("%d of %d routes are in the router's table by size", listed, len(hr.routes))
	}
	for _, rt := range hr.routes {
		if len(rt.segments) > maxSegments {
			t.Errorf("route %s has %d segments, more than maxSegments (%d)", rt.function, len(rt.segments), maxSegments)
		}
	}
}
