package functions_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
)

// hostDouble stands in front of the handler as the Functions host does for
// an HTTP function, in one of its two modes. Its routing is a separate port
// of the host's (function.json routes in function-name order, literals
// ignoring case, one trailing slash ignored); a request no route takes is
// the host's own 404 and never reaches the handler.
//
// proxy (enableProxyingHttpRequest; DefaultHttpWorkerService.
// ProxyInvocationRequest, DefaultHttpProxyService with YARP's
// HttpTransformer.Default): path and query as sent, the body streamed
// (chunked too), Host the destination, X-Forwarded-Host/-Proto/-For set.
//
// forward (enableForwardingHttpRequest; ProcessHttpInAndOutInvocationRequest
// and HttpRequestExtensions.ToHttpRequestMessage): the path as sent, the
// query rebuilt from the case-insensitive collection with a repeated key's
// values joined by commas, every header copied, Host included, and the body
// only when Content-Length > 0. A chunked body is not copied but its
// Transfer-Encoding header is, which HttpClient refuses
// (HttpClient.ValidateAndNormalizeRequest,
// net_http_chunked_not_allowed_with_empty_content): the invocation fails
// and the host answers 500.
type hostDouble struct {
	t       *testing.T
	mode    string // "proxy" or "forward"
	backend *url.URL
	routes  []doubleRoute
	proxy   *httputil.ReverseProxy
}

type doubleRoute struct {
	function string
	segments []string
	methods  []string
}

func newHostDouble(t *testing.T, mode string, handler http.Handler) *httptest.Server {
	t.Helper()
	backend := httptest.NewServer(handler)
	t.Cleanup(backend.Close)
	u, err := url.Parse(backend.URL)
	if err != nil {
		t.Fatal(err)
	}
	d := &hostDouble{t: t, mode: mode, backend: u}
	d.loadRoutes()
	d.proxy = &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(u) // Host becomes the destination, as YARP's default transforms leave it
		pr.SetXForwarded()
		pr.Out.Header.Set("X-Azure-Functions-InvocationId", "00000000-0000-0000-0000-000000000001")
	}}
	front := httptest.NewServer(d)
	t.Cleanup(front.Close)
	return front
}

func (d *hostDouble) loadRoutes() {
	root := filepath.Join("..", "..", "..", "functions")
	dirs, err := os.ReadDir(root)
	if err != nil {
		d.t.Fatal(err)
	}
	for _, dir := range dirs {
		var fn struct {
			Bindings []struct {
				Type, Route string
				Methods     []string
			} `json:"bindings"`
		}
		readJSON(d.t, filepath.Join(root, dir.Name(), "function.json"), &fn)
		if fn.Bindings[0].Type != "httpTrigger" {
			continue
		}
		d.routes = append(d.routes, doubleRoute{function: dir.Name(),
			segments: strings.Split("api/"+fn.Bindings[0].Route, "/"), methods: fn.Bindings[0].Methods})
	}
	sort.SliceStable(d.routes, func(i, j int) bool {
		return strings.ToUpper(d.routes[i].function) < strings.ToUpper(d.routes[j].function)
	})
}

func (d *hostDouble) routeOf(r *http.Request) string {
	p := strings.TrimPrefix(r.URL.EscapedPath(), "/")
	p = strings.TrimSuffix(p, "/")
	segs := strings.Split(p, "/")
next:
	for _, rt := range d.routes {
		if len(segs) != len(rt.segments) || !slices.ContainsFunc(rt.methods, func(m string) bool { return strings.EqualFold(m, r.Method) }) {
			continue
		}
		for i, s := range rt.segments {
			if segs[i] == "" || (!strings.HasPrefix(s, "{") && !strings.EqualFold(segs[i], s)) {
				continue next
			}
		}
		return rt.function
	}
	return ""
}

func (d *hostDouble) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fn := d.routeOf(r)
	if fn == "" {
		w.Header().Set("X-Host-Double", "404")
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.Header().Set("X-Host-Function", fn)
	if d.mode == "proxy" {
		d.proxy.ServeHTTP(w, r)
		return
	}
	d.forward(w, r)
}

func (d *hostDouble) forward(w http.ResponseWriter, r *http.Request) {
	// GetQueryCollectionAsDictionary: one entry per key (ASP.NET's query
	// collection ignores case), StringValues.ToString joins with commas.
	var keys []string
	joined := map[string][]string{}
	for k, vs := range r.URL.Query() {
		i := slices.IndexFunc(keys, func(s string) bool { return strings.EqualFold(s, k) })
		if i < 0 {
			keys = append(keys, k)
			i = len(keys) - 1
		}
		joined[keys[i]] = append(joined[keys[i]], vs...)
	}
	q := url.Values{}
	for _, k := range keys {
		q.Set(k, strings.Join(joined[k], ","))
	}
	target := *d.backend
	target.Path, target.RawPath, target.RawQuery = r.URL.Path, r.URL.RawPath, q.Encode()
	var body io.Reader
	if r.ContentLength > 0 {
		body = r.Body
	} else if slices.Contains(r.TransferEncoding, "chunked") {
		http.Error(w, "'Transfer-Encoding: chunked' header can not be used when content object is not specified.", http.StatusInternalServerError)
		return
	}
	out, err := http.NewRequest(r.Method, target.String(), body)
	if err != nil {
		d.t.Error(err)
		return
	}
	out.ContentLength = max(r.ContentLength, 0)
	out.Header = r.Header.Clone()
	out.Host = r.Host
	out.Header.Set("X-Azure-Functions-InvocationId", "00000000-0000-0000-0000-000000000001")
	res, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer res.Body.Close()
	for k, vs := range res.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(res.StatusCode)
	_, _ = io.Copy(w, res.Body)
}

// TestRequestsThroughTheHost sends requests through both modes of the host
// and checks what the handler makes of what arrives.
func TestRequestsThroughTheHost(t *testing.T) {
	type want struct {
		status      int
		function    string        // the function the host chose; "" = the host's own answer
		minValidity time.Duration // asked of the broker, -1 = not asked
		message     string        // in the handler's error message
	}
	tests := []struct {
		name         string
		method, path string
		body         string
		chunked      bool
		proxy        want
		forward      want // zero: as proxy
	}{
		{name: "token route in another case", method: "GET", path: "/api/Token/xero",
			proxy: want{200, "token", 0, ""}},
		{name: "token route with a trailing slash", method: "GET", path: "/api/token/xero/",
			proxy: want{200, "token", 0, ""}},
		{name: "minValidity", method: "GET", path: "/api/token/xero?minValidity=600",
			proxy: want{200, "token", 600 * time.Second, ""}},
		{name: "minValidity in another case", method: "GET", path: "/api/token/xero?MinValidity=600",
			proxy: want{200, "token", 600 * time.Second, ""}},
		{name: "repeated minValidity", method: "GET", path: "/api/token/xero?minValidity=600&minValidity=60",
			proxy:   want{400, "token", -1, "minValidity is given 2 times"},
			forward: want{400, "token", -1, "minValidity has more than one value"}},
		{name: "repeated minValidity in two cases", method: "GET", path: "/api/token/xero?minValidity=600&MINVALIDITY=60",
			proxy:   want{400, "token", -1, "minValidity is given 2 times"},
			forward: want{400, "token", -1, "minValidity has more than one value"}},
		{name: "comma-joined minValidity", method: "GET", path: "/api/token/xero?minValidity=600,60",
			proxy: want{400, "token", -1, "minValidity has more than one value"}},
		{name: "POST body with Content-Length", method: "POST", path: "/api/token/xero", body: `{"minValidity": 600}`,
			proxy: want{200, "token", 600 * time.Second, ""}},
		{name: "POST chunked body", method: "POST", path: "/api/token/xero", body: `{"minValidity": 600}`, chunked: true,
			proxy:   want{200, "token", 600 * time.Second, ""},
			forward: want{500, "token", -1, ""}},
		{name: "POST without a body", method: "POST", path: "/api/token/xero",
			proxy: want{400, "token", -1, "this POST has no body"}},
		{name: "consent callback", method: "GET", path: "/api/Consent/Callback/",
			proxy: want{400, "consent-callback", -1, "not started here"}},
		{name: "consent start without a link", method: "GET", path: "/api/consent/xero",
			proxy: want{403, "consent-start", -1, "consent link"}},
		{name: "no such function", method: "GET", path: "/api/token/xero/extra",
			proxy: want{404, "", -1, ""}},
		{name: "method the function does not take", method: "DELETE", path: "/api/token/xero",
			proxy: want{404, "", -1, ""}},
	}
	for _, mode := range []string{"proxy", "forward"} {
		for _, tt := range tests {
			t.Run(mode+"/"+tt.name, func(t *testing.T) {
				w := tt.proxy
				if mode == "forward" && tt.forward.status != 0 {
					w = tt.forward
				}
				// Behind the host, as package server builds it in Functions mode.
				b := &fakeBroker{now: time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)}
				h := functions.NewServer(b, functions.Options{ForwardedByHost: true, MaxBodyBytes: fuzzMaxBody, Now: func() time.Time { return b.now }})
				front := newHostDouble(t, mode, h)
				var body io.Reader
				if tt.body != "" {
					body = strings.NewReader(tt.body)
					if tt.chunked {
						body = io.MultiReader(body) // no length: net/http sends it chunked
					}
				}
				req, err := http.NewRequest(tt.method, front.URL+tt.path, body)
				if err != nil {
					t.Fatal(err)
				}
				if tt.body != "" {
					req.Header.Set("Content-Type", "application/json")
				}
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				raw, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != w.status || res.Header.Get("X-Host-Function") != w.function {
					t.Fatalf("%d from function %q, want %d from %q: %s", res.StatusCode, res.Header.Get("X-Host-Function"), w.status, w.function, raw)
				}
				var e struct{ Message string }
				_ = json.Unmarshal(raw, &e)
				if !strings.Contains(e.Message, w.message) {
					t.Errorf("message %q does not say %q", e.Message, w.message)
				}
				b.mu.Lock()
				asked := slices.Clone(b.minValidity)
				b.mu.Unlock()
				switch {
				case w.minValidity < 0 && len(asked) != 0:
					t.Errorf("the broker was asked for a token (%v)", asked)
				case w.minValidity >= 0 && w.status == 200 && (len(asked) != 1 || asked[0] != w.minValidity):
					t.Errorf("the broker was asked with minValidity %v, want %v", asked, w.minValidity)
				}
			})
		}
	}
}
