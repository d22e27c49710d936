package functions

import (
	"cmp"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// routePrefix is host.json's extensions.http.routePrefix.
const routePrefix = "api"

// hostRoute is one HTTP function as the Functions host routes it: the
// function's folder name, its function.json route (without routePrefix)
// and methods. layout_test.go checks this table against functions/*.
type hostRoute struct {
	function string
	template string
	methods  []string
	handler  http.Handler
	segments []string // routePrefix and the template's segments
	param    int      // the index in segments of its one {parameter}; -1 for none or several
	// byParam is handler as a paramHandler when it is one and the route
	// has one parameter: asserted once here, not on every request (an
	// assertion to an interface type looks up its method table).
	byParam paramHandler
}

// paramHandler is a route handler that is handed its route's one
// parameter by the router instead of reading r.PathValue: SetPathValue
// allocates the request's table of values (2 allocations) on every call,
// and the token route is the hit path (issue 20 §4). Its ServeHTTP still
// reads r.PathValue, for callers other than the router. The router does
// not give it the request's deadline: it sets its own, after what it can
// answer without waiting (tokenRoute.serveParam).
type paramHandler interface {
	http.Handler
	serveParam(w http.ResponseWriter, r *http.Request, value string)
}

// hostRouter matches a request to a function as the Functions host does, so
// that every request the host forwards reaches the function it chose, and
// none that it would not route does. The host (checked in its source):
//
//   - maps the routes in the order of its function list, which
//     FunctionMetadataManager.LoadFunctionMetadata sorts by name
//     (StringComparer.OrdinalIgnoreCase); WebScriptHostHttpRoutesManager.
//     InitializeHttpFunctionRoutes adds them in that order to one
//     RouteCollection (azure-webjobs-sdk-extensions WebJobsRouteBuilder.
//     Build, which does not sort them), and the first route that matches
//     wins. So consent/callback beats consent/{connection} only because
//     "consent-callback" sorts before "consent-start"; config refuses a
//     connection named "callback" for that reason.
//   - matches literal segments ignoring case (ASP.NET Core
//     RoutePatternMatcher.TryMatchLiterals, StringComparison.OrdinalIgnoreCase)
//     and ignores one trailing slash (PathTokenizer: "routing ignores a
//     trailing slash"); an empty segment matches nothing.
//   - checks the methods as a route constraint (HttpMethodRouteConstraint):
//     a route with the wrong method is skipped, and the host answers 404
//     when no route is left. This server answers 405 instead, for callers
//     of standalone mode; behind the host such a request never arrives.
//
// Parameter values keep the case they were sent in: the host's route values
// do too, and connection names are lower case, so /api/token/Xero is a 400
// that says so.
type hostRouter struct {
	routes []hostRoute
	// bySize lists, for each number of segments, the indexes in routes
	// (in routes' order) of the routes with that many: only those can
	// match a path (hostRoute.match), so a request tries those alone,
	// not every route, on the hit path.
	bySize   [maxSegments + 1][]int
	notFound http.Handler
	// timeout, when set, is the deadline of every answer the router gives
	// (serve), Options.RequestTimeout; a paramHandler sets its own.
	timeout time.Duration
}

func newHostRouter(notFound http.Handler, routes ...hostRoute) *hostRouter {
	for i := range routes {
		routes[i].segments = append([]string{routePrefix}, strings.Split(routes[i].template, "/")...)
		routes[i].param = -1
		n := 0
		for j, t := range routes[i].segments {
			if _, ok := parameter(t); ok {
				routes[i].param, n = j, n+1
			}
		}
		if n != 1 {
			routes[i].param = -1
		}
		if ph, ok := routes[i].handler.(paramHandler); ok && routes[i].param >= 0 {
			routes[i].byParam = ph
		}
	}
	slices.SortStableFunc(routes, func(a, b hostRoute) int {
		return cmp.Compare(upperASCII(a.function), upperASCII(b.function))
	})
	hr := &hostRouter{routes: routes, notFound: notFound}
	for i, rt := range routes {
		if n := len(rt.segments); n <= maxSegments {
			hr.bySize[n] = append(hr.bySize[n], i)
		}
	}
	return hr
}

// candidates are the indexes of the routes that may match segs, in order.
// Every route starts with routePrefix, so a path that does not matches
// none; the prefix is compared here once, and match starts after it.
func (hr *hostRouter) candidates(segs []string) []int {
	if len(segs) > maxSegments || len(segs) == 0 || !equalFoldASCII(segs[0], routePrefix) {
		return nil
	}
	return hr.bySize[len(segs)]
}

func (hr *hostRouter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var buf [maxSegments]string
	segs, ok := requestSegments(buf[:0], r.URL)
	if !ok {
		hr.notFound.ServeHTTP(w, r)
		return
	}
	var allowed []string
	for _, i := range hr.candidates(segs) {
		rt := &hr.routes[i] // not a copy of the route per route tried
		if !rt.match(segs) {
			continue
		}
		if !slices.Contains(rt.methods, r.Method) {
			allowed = append(allowed, rt.methods...)
			continue
		}
		if rt.byParam != nil {
			rt.byParam.serveParam(w, r, segs[rt.param])
			return
		}
		for i, t := range rt.segments {
			if name, ok := parameter(t); ok {
				r.SetPathValue(name, segs[i])
			}
		}
		hr.serve(w, r, rt.handler)
		return
	}
	if len(allowed) > 0 {
		slices.Sort(allowed)
		allowed = slices.Compact(allowed)
		hr.serve(w, r, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { methodNotAllowed(w, r, allowed) }))
		return
	}
	hr.serve(w, r, hr.notFound)
}

// serve serves h within the router's timeout (serveBefore), as
// withDeadlines serves the mux's routes.
func (hr *hostRouter) serve(w http.ResponseWriter, r *http.Request, h http.Handler) {
	if hr.timeout <= 0 {
		h.ServeHTTP(w, r)
		return
	}
	serveBefore(w, r, h, time.Now().Add(hr.timeout))
}

// route returns the function the host would route a request to, "" for
// none.
func (hr *hostRouter) route(method string, u *url.URL) string {
	segs, ok := requestSegments(nil, u)
	if !ok {
		return ""
	}
	for _, i := range hr.candidates(segs) {
		if rt := &hr.routes[i]; rt.match(segs) && slices.Contains(rt.methods, method) {
			return rt.function
		}
	}
	return ""
}

// maxSegments is room for the segments of every route's path on the
// stack: the longest route has 5 with the prefix, and a path with more
// matches none (a route with more would never match: newHostRouter leaves
// it out of bySize, and TestRoutesFitMaxSegments keeps there being none).
const maxSegments = 8

// requestSegments appends the path's unescaped segments, without one
// trailing slash, to dst. It splits the escaped path, so that %2F stays
// inside its segment, as in the host (Kestrel does not decode %2F) and in
// ServeMux. It allocates only to unescape a segment that has a '%'; given
// room for them in dst, none for the segments themselves (the hit path).
//
// A URL without RawPath was sent as Path's own encoding (net/url sets
// RawPath only when the sent form differs from EscapedPath's default, as
// "%2F" for a '/' in a segment does: URL.setPath), so no '/' of Path came
// from an escape and its segments need no unescaping: they are split from
// Path directly, sparing the hit path EscapedPath's scan.
func requestSegments(dst []string, u *url.URL) ([]string, bool) {
	if u.RawPath == "" {
		return splitSegments(dst, u.Path, false)
	}
	return splitSegments(dst, u.EscapedPath(), true)
}

// splitSegments appends p's segments, without one trailing slash, to dst,
// unescaping them when escaped.
func splitSegments(dst []string, p string, escaped bool) ([]string, bool) {
	if len(p) > 1 && strings.HasSuffix(p, "/") {
		p = p[:len(p)-1]
	}
	p = strings.TrimPrefix(p, "/")
	for {
		s, rest, more := strings.Cut(p, "/")
		if escaped && strings.IndexByte(s, '%') >= 0 {
			v, err := url.PathUnescape(s)
			if err != nil {
				return nil, false
			}
			s = v
		}
		dst = append(dst, s)
		if !more {
			return dst, true
		}
		p = rest
	}
}

// match reports whether segs, whose first segment is routePrefix
// (candidates), match the route; its parameters' values are the segments
// at the positions of its {parameter} segments.
func (rt *hostRoute) match(segs []string) bool {
	if len(segs) != len(rt.segments) {
		return false
	}
	for i := 1; i < len(rt.segments); i++ {
		t, s := rt.segments[i], segs[i]
		if s == "" {
			return false
		}
		if _, ok := parameter(t); ok {
			continue
		}
		if !equalFoldASCII(s, t) {
			return false
		}
	}
	return true
}

// parameter returns the name of a {parameter} template segment.
func parameter(t string) (string, bool) {
	if len(t) < 2 || t[0] != '{' || t[len(t)-1] != '}' {
		return "", false
	}
	return t[1 : len(t)-1], true
}

// equalFoldASCII compares ignoring the case of ASCII letters only. The
// route literals are ASCII; strings.EqualFold would also match the Kelvin
// sign to "k", which .NET's OrdinalIgnoreCase does not.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if upperByte(a[i]) != upperByte(b[i]) {
			return false
		}
	}
	return true
}

func upperByte(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

// upperASCII upper-cases ASCII letters, as OrdinalIgnoreCase compares the
// function names (all ASCII).
func upperASCII(s string) string {
	return strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' {
			return r - 'a' + 'A'
		}
		return r
	}, s)
}
