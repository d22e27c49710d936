package functions_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The function folders and host.json must agree with the routes here: the
// host forwards a request only for functions with exactly one httpTrigger
// input and one http output, and calls the timer at /<folder name>.
func TestFunctionFoldersMatchTheServer(t *testing.T) {
	root := filepath.Join("..", "..", "..")
	var host struct {
		CustomHandler struct {
			Description struct {
				DefaultExecutablePath string `json:"defaultExecutablePath"`
			} `json:"description"`
			EnableForwardingHTTPRequest bool `json:"enableForwardingHttpRequest"`
			EnableProxyingHTTPRequest   bool `json:"enableProxyingHttpRequest"`
		} `json:"customHandler"`
		Extensions struct {
			HTTP struct {
				RoutePrefix string `json:"routePrefix"`
			} `json:"http"`
		} `json:"extensions"`
	}
	readJSON(t, filepath.Join(root, "host.json"), &host)
	// Proxying is the documented mode (functions-custom-handlers.md,
	// "HTTP-only function") and the one current hosts use when both are
	// on (DefaultHttpWorkerService.InvokeAsync tests it first); hosts
	// without it ignore the key and forward.
	if host.CustomHandler.Description.DefaultExecutablePath != "handler" ||
		!host.CustomHandler.EnableProxyingHTTPRequest || !host.CustomHandler.EnableForwardingHTTPRequest {
		t.Fatalf("host.json customHandler: %+v; want enableProxyingHttpRequest and enableForwardingHttpRequest", host.CustomHandler)
	}
	if host.Extensions.HTTP.RoutePrefix != "api" {
		t.Fatalf("routePrefix %q; the server's routes assume api", host.Extensions.HTTP.RoutePrefix)
	}

	w := newWorld(t, false)
	dirs, err := os.ReadDir(filepath.Join(root, "functions"))
	if err != nil {
		t.Fatal(err)
	}
	timers := 0
	for _, d := range dirs {
		var fn struct {
			Bindings []struct {
				Type, Direction, Route, Name string
				Methods                      []string
			} `json:"bindings"`
		}
		readJSON(t, filepath.Join(root, "functions", d.Name(), "function.json"), &fn)
		if len(fn.Bindings) == 0 {
			t.Fatalf("%s: no bindings", d.Name())
		}
		in := fn.Bindings[0]
		switch in.Type {
		case "httpTrigger":
			if len(fn.Bindings) != 2 || fn.Bindings[1].Type != "http" || fn.Bindings[1].Direction != "out" {
				t.Fatalf("%s: an HTTP function needs exactly one httpTrigger in and one http out, or the host stops forwarding", d.Name())
			}
			path := "/api/" + strings.NewReplacer("{connection}", "xero", "{action}", "refresh").Replace(in.Route)
			for _, m := range in.Methods {
				r := w.do(strings.ToUpper(m), path, "", nil)
				if r.body["error"] == "not_found" || r.status == 405 {
					t.Errorf("%s: %s %s is not served: %d %s", d.Name(), m, path, r.status, r.raw)
				}
			}
		case "timerTrigger":
			timers++
			if in.Name != "timer" {
				t.Errorf("%s: binding name %q; the server reads Data.timer", d.Name(), in.Name)
			}
			r := w.do("POST", "/"+d.Name(), `{"Data":{"timer":{"IsPastDue":false}}}`, nil)
			if r.status != 200 {
				t.Errorf("%s: POST /%s = %d", d.Name(), d.Name(), r.status)
			}
		default:
			t.Errorf("%s: unexpected trigger %q", d.Name(), in.Type)
		}
	}
	if timers != 1 {
		t.Fatalf("%d timer functions, want 1", timers)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
