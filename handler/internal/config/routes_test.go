package config

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// TestReservedNamesAreTheRouteCollisions derives the reserved connection
// names from functions/*/function.json: a name is reserved when, put in one
// route's {connection}, it makes a path that another function's route also
// matches (the Functions host ignores case in literal segments). Whichever
// function the host tries first, one of the two is then unreachable for
// that connection.
func TestReservedNamesAreTheRouteCollisions(t *testing.T) {
	root := filepath.Join("..", "..", "..", "functions")
	dirs, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	type route struct {
		function string
		segments []string
		methods  []string
	}
	var routes []route
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(root, d.Name(), "function.json"))
		if err != nil {
			t.Fatal(err)
		}
		var fn struct {
			Bindings []struct {
				Type, Route string
				Methods     []string
			} `json:"bindings"`
		}
		if err := json.Unmarshal(b, &fn); err != nil {
			t.Fatalf("%s: %v", d.Name(), err)
		}
		if len(fn.Bindings) > 0 && fn.Bindings[0].Type == "httpTrigger" {
			routes = append(routes, route{d.Name(), strings.Split(fn.Bindings[0].Route, "/"), fn.Bindings[0].Methods})
		}
	}
	collisions := map[string]bool{}
	for _, r := range routes {
		for i, seg := range r.segments {
			if seg != "{connection}" {
				continue
			}
			for _, other := range routes {
				if other.function == r.function || len(other.segments) != len(r.segments) || strings.HasPrefix(other.segments[i], "{") ||
					!slices.ContainsFunc(other.methods, func(m string) bool { return slices.Contains(r.methods, m) }) {
					continue
				}
				same := true
				for j := range r.segments {
					a, b := r.segments[j], other.segments[j]
					if j != i && !strings.HasPrefix(a, "{") && !strings.HasPrefix(b, "{") && !strings.EqualFold(a, b) {
						same = false
					}
				}
				if same && broker.ValidConnectionName(strings.ToLower(other.segments[i])) {
					collisions[strings.ToLower(other.segments[i])] = true
				}
			}
		}
	}
	got := slices.Sorted(maps.Keys(reservedConnectionNames))
	want := slices.Sorted(maps.Keys(collisions))
	if !slices.Equal(got, want) {
		t.Fatalf("reserved names %v; the routes in functions/ collide on %v", got, want)
	}
	if len(want) == 0 {
		t.Fatal("no collision found; consent/callback and consent/{connection} should collide on \"callback\"")
	}
}
