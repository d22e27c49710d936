package functions

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// functionJSON is what the host reads of an HTTP function's function.json.
type functionJSON struct {
	Bindings []struct {
		Type    string   `json:"type"`
		Route   string   `json:"route"`
		Methods []string `json:"methods"`
	} `json:"bindings"`
}

// TestFunctionRoutesAreTheFunctionFolders: the router's table is
// functions/*/function.json, name for name, route for route, method for
// method.
func TestFunctionRoutesAreTheFunctionFolders(t *testing.T) {
	root := filepath.Join("..", "..", "..", "functions")
	dirs, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]hostRoute{}
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(root, d.Name(), "function.json"))
		if err != nil {
			t.Fatal(err)
		}
		var fn functionJSON
		if err := json.Unmarshal(b, &fn); err != nil {
			t.Fatalf("%s: %v", d.Name(), err)
		}
		if len(fn.Bindings) == 0 || fn.Bindings[0].Type != "httpTrigger" {
			continue
		}
		methods := make([]string, len(fn.Bindings[0].Methods))
		for i, m := range fn.Bindings[0].Methods {
			methods[i] = strings.ToUpper(m)
		}
		slices.Sort(methods)
		want[d.Name()] = hostRoute{function: d.Name(), template: fn.Bindings[0].Route, methods: methods}
	}
	got := functionRoutes(nil, Options{})
	if len(got) != len(want) {
		t.Errorf("%d routes, %d HTTP functions", len(got), len(want))
	}
	for _, rt := range got {
		w, ok := want[rt.function]
		methods := slices.Sorted(slices.Values(rt.methods))
		if !ok || rt.template != w.template || !slices.Equal(methods, w.methods) {
			t.Errorf("route %s %q %v; function.json has %q %v (found %v)", rt.function, rt.template, methods, w.template, w.methods, ok)
		}
	}
}

// TestHostRouteOrder pins the order the host tries the routes in: by
// function name, ignoring case (FunctionMetadataManager.LoadFunctionMetadata
// sorts with StringComparer.OrdinalIgnoreCase, and WebJobsRouteBuilder.Build
// keeps that order). consent/callback is reachable only because
// consent-callback sorts before consent-start.
func TestHostRouteOrder(t *testing.T) {
	hr := newHostRouter(handleNotFound(), functionRoutes(nil, Options{})...)
	var order []string
	for _, rt := range hr.routes {
		order = append(order, rt.function)
	}
	want := []string{"connection", "connections", "consent-callback", "consent-link", "consent-start", "force-refresh", "operator-status", "operator-status-action", "status-action", "status-page", "token"}
	if !slices.Equal(order, want) {
		t.Fatalf("routes tried in the order %v, want %v", order, want)
	}
	// Case does not count in the order: "B" sorts after "a".
	hr = newHostRouter(handleNotFound(),
		hostRoute{function: "B", template: "x/y"}, hostRoute{function: "a", template: "x/{p}"})
	if hr.routes[0].function != "a" {
		t.Fatalf("order %s, %s; want a first", hr.routes[0].function, hr.routes[1].function)
	}
}

// TestHostRouterMatchesAsTheHost: each request goes to the function the
// host's ASP.NET routing picks (RoutePatternMatcher, PathTokenizer), or to
// none.
func TestHostRouterMatchesAsTheHost(t *testing.T) {
	hr := newHostRouter(handleNotFound(), functionRoutes(nil, Options{})...)
	tests := []struct {
		method, path string
		want         string // "" = no function
	}{
		{"GET", "/api/token/xero", "token"},
		{"GET", "/api/Token/xero", "token"},
		{"GET", "/API/TOKEN/xero", "token"},
		{"GET", "/api/token/xero/", "token"},
		{"POST", "/api/token/x/", "token"},
		{"GET", "/api/token/xero%2Fx", "token"},
		{"GET", "/api/token/xero//", ""},
		{"GET", "/api/token/", ""},
		{"GET", "/api/token", ""},
		{"GET", "/api/token/xero/extra", ""},
		{"GET", "/token/xero", ""},
		{"GET", "/api/to\u212Aen/xero", ""}, // the Kelvin sign is not "k" to OrdinalIgnoreCase
		{"DELETE", "/api/token/xero", ""},
		{"GET", "/api/connections", "connections"},
		{"GET", "/api/Connections/", "connections"},
		{"GET", "/api/connections/xero", "connection"},
		{"POST", "/api/connections/xero/Refresh", "force-refresh"},
		{"GET", "/api/connections/xero/refresh", ""},
		{"GET", "/api/consent/callback", "consent-callback"},
		{"GET", "/api/Consent/CALLBACK/", "consent-callback"},
		{"GET", "/api/consent/xero", "consent-start"},
		{"GET", "/api/consent/xero/", "consent-start"},
	}
	for _, tt := range tests {
		u, err := url.Parse(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := hr.route(tt.method, u); got != tt.want {
			t.Errorf("%s %s routed to %q, want %q", tt.method, tt.path, got, tt.want)
		}
	}
}

// TestHostRouterSetsThePathValue: the handler sees the connection as sent.
func TestHostRouterSetsThePathValue(t *testing.T) {
	var got string
	hr := newHostRouter(handleNotFound(), hostRoute{function: "token", template: "token/{connection}", methods: []string{http.MethodGet},
		handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.PathValue("connection") })})
	for path, want := range map[string]string{"/api/Token/Xero/": "Xero", "/api/token/a%2Fb": "a/b"} {
		got = ""
		r, err := http.NewRequest(http.MethodGet, "http://127.0.0.1"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		hr.ServeHTTP(nopWriter{}, r)
		if got != want {
			t.Errorf("%s: connection %q, want %q", path, got, want)
		}
	}
}

type nopWriter struct{}

func (nopWriter) Header() http.Header         { return http.Header{} }
func (nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (nopWriter) WriteHeader(int)             {}
