package infra

// The workbook of modules/workbook.bicep: its layout (workbook/workbook.json)
// and queries (workbook/<item>.kql) are the files the Bicep loads, and each
// query runs here over the log lines the handler writes, as the host stores
// them (alert-traces.json), and the requests rows the host writes.

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

type workbookItem struct {
	Type    int    `json:"type"`
	Name    string `json:"name"`
	Content struct {
		Version                  string `json:"version"`
		Query                    *string
		Visualization            string `json:"visualization"`
		TimeContextFromParameter string `json:"timeContextFromParameter"`
		TimeContext              *struct {
			DurationMs int64 `json:"durationMs"`
		} `json:"timeContext"`
		ResourceType string `json:"resourceType"`
		Parameters   []struct {
			Name string `json:"name"`
		} `json:"parameters"`
		JSON string `json:"json"`
	} `json:"content"`
}

// workbookQueries returns the workbook's query items and their queries,
// with every parameter placeholder ({TimeRange:grain}) replaced by a value.
func workbookQueries(t *testing.T) (map[string]workbookItem, map[string]string) {
	t.Helper()
	var wb struct {
		Version string         `json:"version"`
		Items   []workbookItem `json:"items"`
	}
	readJSON(t, filepath.Join("modules", "workbook", "workbook.json"), &wb)
	if wb.Version != "Notebook/1.0" {
		t.Fatalf("workbook.json: version %q, want Notebook/1.0", wb.Version)
	}
	params := map[string]bool{}
	items := map[string]workbookItem{}
	for _, it := range wb.Items {
		if it.Type == 9 {
			for _, p := range it.Content.Parameters {
				params[p.Name] = true
			}
		}
		if it.Type == 3 {
			items[it.Name] = it
		}
	}
	queries := map[string]string{}
	placeholder := regexp.MustCompile(`\{(\w+)(?::(\w+))?\}`)
	for name := range items {
		src := readText(t, filepath.Join("modules", "workbook", name+".kql"))
		queries[name] = placeholder.ReplaceAllStringFunc(src, func(m string) string {
			p := placeholder.FindStringSubmatch(m)
			if !params[p[1]] {
				t.Errorf("workbook/%s.kql uses {%s}, which no parameter item of workbook.json declares", name, p[1])
			}
			if p[2] == "grain" {
				return "1h"
			}
			t.Errorf("workbook/%s.kql: the test knows no value for %s", name, m)
			return m
		})
	}
	return items, queries
}

// TestWorkbookLayout: every query item has its .kql file and the Bicep puts
// it there; every query item reads Application Insights over a time range;
// the metric and percentile charts are charts.
func TestWorkbookLayout(t *testing.T) {
	t.Parallel()
	items, _ := workbookQueries(t)
	want := []string{"connections-by-state", "failures-by-category", "lock-waits", "refresh-latency", "refresh-percentiles",
		"refresh-percentiles-by-connection", "refreshes-by-outcome", "refreshes-over-time", "secrets-expiring", "store-errors",
		"token-age", "token-endpoint-latency", "token-endpoint-percentiles", "token-latency", "tokens-served"}
	if got := slices.Sorted(maps.Keys(items)); !slices.Equal(got, want) {
		t.Errorf("workbook.json has query items %q, want %q", got, want)
	}
	files, _ := filepath.Glob(filepath.Join("modules", "workbook", "*.kql"))
	if len(files) != len(items) {
		t.Errorf("modules/workbook has %d .kql files for %d query items: each file is one item's query", len(files), len(items))
	}
	bicep := loadTemplates(t)["modules/workbook.bicep"]
	queries := bicep.find("var", "queries")
	if queries == nil || queries.body == nil {
		t.Fatal("modules/workbook.bicep: no var queries = { ... }")
	}
	var keys []string
	for _, p := range queries.body.props {
		key, _ := stringLit(p.key)
		if key == "" {
			key = p.key
		}
		keys = append(keys, key)
		if p.value != "loadTextContent('workbook/"+key+".kql')" {
			t.Errorf("modules/workbook.bicep: queries.%s is %s, want loadTextContent('workbook/%s.kql')", key, p.value, key)
		}
	}
	if slices.Sort(keys); !slices.Equal(keys, want) {
		t.Errorf("modules/workbook.bicep: queries has %q, want %q", keys, want)
	}
	if v := bicep.find("var", "layout"); v == nil || v.value != "loadJsonContent('workbook/workbook.json')" {
		t.Error("modules/workbook.bicep: the layout is not loadJsonContent('workbook/workbook.json')")
	}
	for name, it := range items {
		c := it.Content
		if c.Version != "KqlItem/1.0" || c.ResourceType != "microsoft.insights/components" || c.Query == nil || *c.Query != "" {
			t.Errorf("workbook.json %s: want a KqlItem/1.0 on microsoft.insights/components with an empty query (the Bicep fills it)", name)
		}
		if c.TimeContextFromParameter != "TimeRange" && c.TimeContext == nil {
			t.Errorf("workbook.json %s: no time range", name)
		}
	}
	if tc := items["secrets-expiring"].Content; tc.TimeContextFromParameter != "" || tc.TimeContext == nil || tc.TimeContext.DurationMs < 31*24*3600*1000 {
		t.Error("workbook.json secrets-expiring: the warnings come at 30, 14, 7 and 0 days left, so the item looks back at least 31 days whatever the time range")
	}
	for name, vis := range map[string]string{"refresh-latency": "timechart", "refreshes-by-outcome": "timechart",
		"refresh-percentiles": "timechart", "token-endpoint-percentiles": "timechart", "refresh-percentiles-by-connection": "table",
		"token-endpoint-latency": "timechart", "tokens-served": "timechart", "lock-waits": "timechart", "token-age": "timechart",
		"store-errors": "timechart", "connections-by-state": "table", "secrets-expiring": "table"} {
		if items[name].Content.Visualization != vis {
			t.Errorf("workbook.json %s: visualization %q, want %s", name, items[name].Content.Visualization, vis)
		}
	}
}

// TestWorkbookQueries runs each query over scenarios of handler lines.
func TestWorkbookQueries(t *testing.T) {
	t.Parallel()
	_, queries := workbookQueries(t)
	lines := alertTraces(t)
	t0 := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	line := func(event, conn string, permanent bool, d time.Duration) kqlRow {
		return handlerLine(t, lines, event, conn, permanent, t0.Add(d))
	}
	req := func(ms float64, d time.Duration) kqlRow {
		r := tokenRequest(200, "xero", t0.Add(d))
		r["duration"] = ms
		return r
	}
	m := time.Minute
	var latency []kqlRow
	for i := range 100 {
		latency = append(latency, req(float64(i+1), time.Duration(i)*time.Second))
	}
	latency = append(latency, req(500, 70*m))
	// customMetrics rows as the handler's envelopes land (one per series
	// and minute): a histogram's sum, count and max, a counter's count.
	hist := func(conn, outcome string, sum, count, maxS float64, d time.Duration) kqlRow {
		return kqlRow{"$table": "customMetrics", "name": "tokenrefresher.refresh.duration", "timestamp": t0.Add(d),
			"value": sum, "valueSum": sum, "valueCount": count, "valueMax": maxS, "valueMin": 0.0,
			"customDimensions": map[string]any{"connection": conn, "outcome": outcome}}
	}
	counter := func(conn, outcome string, n float64, d time.Duration) kqlRow {
		return kqlRow{"$table": "customMetrics", "name": "tokenrefresher.refreshes", "timestamp": t0.Add(d),
			"value": n, "valueSum": n, "valueCount": 1.0, "valueMax": n, "valueMin": n,
			"customDimensions": map[string]any{"connection": conn, "outcome": outcome}}
	}
	// Another instrument's rows, with the same dimensions, must not count.
	other := counter("xero", "success", 100, 2*m)
	other["name"] = "tokenrefresher.tokens.served"
	// metric is any instrument's row: a histogram's sum, count and max, or
	// a counter's count (count 1, max the count), with its dimensions.
	metric := func(name string, dims map[string]any, sum, count, maxV float64, d time.Duration) kqlRow {
		return kqlRow{"$table": "customMetrics", "name": name, "timestamp": t0.Add(d),
			"value": sum, "valueSum": sum, "valueCount": count, "valueMax": maxV, "valueMin": 0.0, "customDimensions": dims}
	}
	dim := func(conn, key, value string) map[string]any { return map[string]any{"connection": conn, key: value} }
	otherHist := metric("tokenrefresher.refresh.duration", map[string]any{"connection": "xero", "outcome": "success", "source": "memory",
		"operation": "read"}, 1000, 1, 1000, 2*m)
	// timed is the handler's event line (alert-traces.json) with attr set
	// to v: the line must carry attr, so a handler that stops logging it
	// fails here.
	timed := func(event, conn, attr string, v float64, d time.Duration) kqlRow {
		r := line(event, conn, false, d)
		l := lineOf(t, r)
		if _, ok := l[attr]; !ok {
			t.Fatalf("the handler's %s line (alert-traces.json) has no %s, which the workbook's percentiles read", event, attr)
		}
		l[attr] = v
		b, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		r["message"] = string(b)
		return r
	}
	// The refreshes of the percentile scenarios: xero 1..100 ms within
	// the first hour, warner-1 500 ms in the second; a failure and a line
	// from a handler that did not yet log the duration are not counted.
	var refreshed, answered []kqlRow
	for i := range 100 {
		refreshed = append(refreshed, timed("token.refreshed", "xero", "duration_ms", float64(i+1), time.Duration(i)*time.Second))
		answered = append(answered, timed("token_endpoint.issued", "xero", "elapsed", float64(i+1)*1e6, time.Duration(i)*time.Second))
	}
	untimed := timed("token.refreshed", "xero", "duration_ms", 0, 3*m)
	l := lineOf(t, untimed)
	delete(l, "duration_ms")
	b, _ := json.Marshal(l)
	untimed["message"] = string(b)
	refreshed = append(refreshed, timed("token.refreshed", "warner-1", "duration_ms", 500, 70*m), untimed,
		line("token.refresh_failed", "xero", false, 4*m))
	answered = append(answered, timed("token_endpoint.issued", "warner-1", "elapsed", 500e6, 70*m),
		timed("token.refreshed", "xero", "duration_ms", 7000, 5*m))
	tests := []struct {
		query string
		rows  []kqlRow
		now   time.Time
		cols  []string
		want  []string
	}{
		{"connections-by-state", []kqlRow{
			line("token.refreshed", "xero", false, 1*m), line("token.refresh_failed", "xero", false, 2*m),
			line("token.refreshed", "warner-1", false, 1*m), line("token.refresh_failed", "warner-1", true, 3*m),
		}, t0.Add(time.Hour), []string{"connection", "state"}, []string{"warner-1 needs a person", "xero failing"}},
		{"connections-by-state", []kqlRow{
			line("token.refresh_failed", "xero", false, 1*m), line("token.refreshed", "xero", false, 2*m),
			line("token.refresh_failed", "warner-1", true, 1*m), line("standby.promoted", "warner-1", false, 2*m),
		}, t0.Add(time.Hour), []string{"connection", "state"}, []string{"warner-1 healthy, on its standby grant", "xero healthy"}},
		{"connections-by-state", []kqlRow{
			line("token.refreshed", "xero", false, 1*m), line("persist.lost", "xero", false, 2*m),
			line("token.refreshed", "warner-1", false, 1*m), line("refresh.interrupted_lost", "warner-1", false, 2*m),
			line("lock.lost", "warner-1", false, 3*m), line("secret.expiring", "warner-1", false, 3*m),
		}, t0.Add(time.Hour), []string{"connection", "state"}, []string{"warner-1 needs consent", "xero needs consent"}},
		{"refreshes-over-time", []kqlRow{
			line("token.refreshed", "xero", false, 1*m), line("token.refreshed", "xero", false, 31*m),
			line("token.refresh_failed", "xero", false, 40*m), line("token.refresh_failed", "warner-1", true, 61*m),
			line("sweep.failed", "xero", false, 41*m),
		}, t0.Add(2 * time.Hour), []string{"series", "timestamp", "refreshes"},
			[]string{"warner-1 failed 2026-01-02T11:00:00Z 1", "xero failed 2026-01-02T10:00:00Z 1", "xero refreshed 2026-01-02T10:00:00Z 2"}},
		{"failures-by-category", []kqlRow{
			line("token.refresh_failed", "xero", false, 1*m), line("token.refresh_failed", "xero", false, 2*m),
			line("token.refresh_failed", "warner-1", true, 3*m), line("token.refreshed", "xero", false, 4*m),
		}, t0.Add(time.Hour), []string{"connection", "category", "failures", "remediation"},
			[]string{"warner-1 reauthorize 1 Re-authorize the connection.", "xero reauthorize 2 Re-authorize the connection."}},
		{"token-latency", latency, t0.Add(2 * time.Hour), []string{"timestamp", "p50", "p95", "p99"},
			[]string{"2026-01-02T10:00:00Z 50 95 99", "2026-01-02T11:00:00Z 500 500 500"}},
		{"refresh-latency", []kqlRow{
			hist("xero", "success", 0.3, 2, 0.2, 1*m), hist("xero", "provider_failed", 0.9, 1, 0.9, 2*m),
			hist("warner-1", "success", 0.05, 1, 0.05, 3*m), hist("xero", "success", 0.1, 1, 0.1, 61*m), other,
		}, t0.Add(2 * time.Hour), []string{"connection", "timestamp", "mean_ms", "max_ms"},
			[]string{"warner-1 2026-01-02T10:00:00Z 50 50", "xero 2026-01-02T10:00:00Z 400 900", "xero 2026-01-02T11:00:00Z 100 100"}},
		{"refreshes-by-outcome", []kqlRow{
			counter("xero", "success", 3, 1*m), counter("warner-1", "success", 2, 2*m), counter("xero", "provider_failed", 1, 3*m),
			counter("xero", "success", 1, 61*m), other,
		}, t0.Add(2 * time.Hour), []string{"outcome", "timestamp", "refreshes"},
			[]string{"provider_failed 2026-01-02T10:00:00Z 1", "success 2026-01-02T10:00:00Z 5", "success 2026-01-02T11:00:00Z 1"}},
		{"refresh-percentiles", refreshed, t0.Add(2 * time.Hour), []string{"timestamp", "p50", "p95", "p99"},
			[]string{"2026-01-02T10:00:00Z 50 95 99", "2026-01-02T11:00:00Z 500 500 500"}},
		{"refresh-percentiles-by-connection", refreshed, t0.Add(2 * time.Hour), []string{"connection", "refreshes", "p50", "p95", "p99", "slowest"},
			[]string{"warner-1 1 500 500 500 500", "xero 100 50 95 99 100"}},
		{"token-endpoint-percentiles", answered, t0.Add(2 * time.Hour), []string{"timestamp", "p50", "p95", "p99"},
			[]string{"2026-01-02T10:00:00Z 50 95 99", "2026-01-02T11:00:00Z 500 500 500"}},
		{"token-endpoint-latency", []kqlRow{
			metric("tokenrefresher.token_endpoint.duration", dim("xero", "outcome", "success"), 0.25, 2, 0.25, 1*m),
			metric("tokenrefresher.token_endpoint.duration", dim("xero", "outcome", "provider_failed"), 0.125, 1, 0.125, 2*m),
			metric("tokenrefresher.token_endpoint.duration", dim("warner-1", "outcome", "success"), 0.0625, 1, 0.0625, 61*m), otherHist,
		}, t0.Add(2 * time.Hour), []string{"connection", "timestamp", "mean_ms", "max_ms"},
			[]string{"warner-1 2026-01-02T11:00:00Z 62.5 62.5", "xero 2026-01-02T10:00:00Z 125 250"}},
		{"tokens-served", []kqlRow{
			metric("tokenrefresher.tokens.served", dim("xero", "source", "memory"), 10, 1, 10, 1*m),
			metric("tokenrefresher.tokens.served", dim("warner-1", "source", "memory"), 5, 1, 5, 2*m),
			metric("tokenrefresher.tokens.served", dim("xero", "source", "store"), 1, 1, 1, 3*m),
			metric("tokenrefresher.tokens.served", dim("xero", "source", "refresh"), 1, 1, 1, 3*m),
			metric("tokenrefresher.tokens.served", dim("xero", "source", "memory"), 2, 1, 2, 61*m), otherHist,
		}, t0.Add(2 * time.Hour), []string{"source", "timestamp", "tokens"},
			[]string{"memory 2026-01-02T10:00:00Z 15", "memory 2026-01-02T11:00:00Z 2", "refresh 2026-01-02T10:00:00Z 1", "store 2026-01-02T10:00:00Z 1"}},
		{"lock-waits", []kqlRow{
			metric("tokenrefresher.lock.wait", dim("xero", "outcome", "acquired"), 0.5, 4, 0.25, 1*m),
			metric("tokenrefresher.lock.wait", dim("warner-1", "outcome", "acquired"), 0.25, 1, 0.25, 2*m),
			metric("tokenrefresher.lock.wait", dim("xero", "outcome", "timeout"), 30, 1, 30, 3*m), otherHist,
		}, t0.Add(2 * time.Hour), []string{"outcome", "timestamp", "waits", "mean_ms", "max_ms"},
			[]string{"acquired 2026-01-02T10:00:00Z 5 150 250", "timeout 2026-01-02T10:00:00Z 1 30000 30000"}},
		{"token-age", []kqlRow{
			metric("tokenrefresher.token.age", dim("xero", "source", "memory"), 600, 2, 480, 1*m),
			metric("tokenrefresher.token.age", dim("xero", "source", "store"), 1200, 1, 1200, 2*m),
			metric("tokenrefresher.token.age", dim("warner-1", "source", "memory"), 60, 1, 60, 3*m), otherHist,
		}, t0.Add(2 * time.Hour), []string{"connection", "timestamp", "mean_min", "max_min"},
			[]string{"warner-1 2026-01-02T10:00:00Z 1 1", "xero 2026-01-02T10:00:00Z 10 20"}},
		{"store-errors", []kqlRow{
			metric("tokenrefresher.store.errors", dim("xero", "operation", "read"), 2, 1, 2, 1*m),
			metric("tokenrefresher.store.errors", dim("xero", "operation", "write"), 1, 1, 1, 2*m),
			metric("tokenrefresher.store.errors", dim("warner-1", "operation", "read"), 1, 1, 1, 61*m), otherHist,
		}, t0.Add(2 * time.Hour), []string{"series", "timestamp", "errors"},
			[]string{"warner-1 read 2026-01-02T11:00:00Z 1", "xero read 2026-01-02T10:00:00Z 2", "xero write 2026-01-02T10:00:00Z 1"}},
		{"secrets-expiring", []kqlRow{line("secret.expiring", "xero", false, 0), line("secret.expiring", "warner-1", false, 1*m)},
			time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC), []string{"connection", "secret", "expires_on"},
			[]string{"xero client-secret-name 2026-01-20T00:00:00Z", "warner-1 client-secret-name 2026-01-20T00:00:00Z"}},
		{"secrets-expiring", []kqlRow{line("secret.expiring", "xero", false, 0)},
			time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC), []string{"connection"}, nil}, // expires in 50 days
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			out, err := kqlRunAt(queries[tt.query], tt.rows, tt.now)
			if err != nil {
				t.Fatalf("workbook/%s.kql: %v", tt.query, err)
			}
			var got []string
			for _, o := range out {
				var f []string
				for _, c := range tt.cols {
					f = append(f, kqlString(o[c]))
				}
				got = append(got, strings.Join(f, " "))
			}
			if !slices.Contains([]string{"secrets-expiring", "connections-by-state", "refresh-percentiles-by-connection"}, tt.query) {
				slices.Sort(got)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("workbook/%s.kql yields\n%s\nwant\n%s", tt.query, fmt.Sprint(got), fmt.Sprint(tt.want))
			}
		})
	}
}

// The workbook JSON stays JSON once the Bicep has put the queries in: the
// same assembly, in Go.
func TestWorkbookAssembles(t *testing.T) {
	t.Parallel()
	_, queries := workbookQueries(t)
	var wb map[string]any
	readJSON(t, filepath.Join("modules", "workbook", "workbook.json"), &wb)
	for _, it := range wb["items"].([]any) {
		item := it.(map[string]any)
		if item["type"].(float64) == 3 {
			item["content"].(map[string]any)["query"] = queries[item["name"].(string)]
		}
	}
	b, err := json.Marshal(wb)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 1<<20 {
		t.Errorf("the workbook is %d bytes", len(b))
	}
}

// emittedMetric is an instrument the handler exports: its kind
// (Int64Counter, Float64Histogram) and the attributes it records, which
// become customDimensions.
type emittedMetric struct {
	kind string
	dims map[string]bool
}

// handlerMetrics reads, from handler/internal/metrics/metrics.go's source,
// every instrument the handler creates (m.<field>, e = meter.<Kind>(<Name
// constant>, ...)) and the attributes each records: those attrs always
// sets (attribute.String("<key>", ...)) and the key every method that
// records into the instrument passes to m.attrs(connection, "<key>", ...).
// The infra module cannot import the handler's internal package, so the
// source is the list.
func handlerMetrics(t *testing.T) map[string]emittedMetric {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, filepath.Join("..", "handler", "internal", "metrics", "metrics.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	lit := func(e ast.Expr) (string, bool) {
		b, ok := e.(*ast.BasicLit)
		if !ok || b.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(b.Value)
		return s, err == nil
	}
	field := func(e ast.Expr) string { // m.<field>
		if sel, ok := e.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == "m" {
				return sel.Sel.Name
			}
		}
		return ""
	}
	consts := map[string]string{}
	type instrument struct{ name, kind string }
	byField := map[string]instrument{}
	base := map[string]bool{}         // attributes attrs always sets
	recorded := map[string][]string{} // field -> keys passed to attrs where it records
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.GenDecl:
			for _, sp := range d.Specs {
				if vs, ok := sp.(*ast.ValueSpec); ok && d.Tok == token.CONST {
					for i, n := range vs.Names {
						if i < len(vs.Values) {
							if v, ok := lit(vs.Values[i]); ok {
								consts[n.Name] = v
							}
						}
					}
				}
			}
		case *ast.FuncDecl:
			var fields, keys []string
			ast.Inspect(d, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.AssignStmt:
					if len(n.Lhs) == 2 && len(n.Rhs) == 1 {
						if call, ok := n.Rhs[0].(*ast.CallExpr); ok && len(call.Args) > 0 {
							if sel, ok := call.Fun.(*ast.SelectorExpr); ok {
								if id, ok := call.Args[0].(*ast.Ident); ok && field(n.Lhs[0]) != "" {
									byField[field(n.Lhs[0])] = instrument{consts[id.Name], sel.Sel.Name}
								}
							}
						}
					}
				case *ast.CallExpr:
					sel, ok := n.Fun.(*ast.SelectorExpr)
					if !ok {
						return true
					}
					if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "attribute" && sel.Sel.Name == "String" && d.Name.Name == "attrs" {
						if k, ok := lit(n.Args[0]); ok {
							base[k] = true
						}
					}
					if field(sel) == "attrs" && len(n.Args) == 3 {
						if k, ok := lit(n.Args[1]); ok {
							keys = append(keys, k)
						}
					}
					if (sel.Sel.Name == "Add" || sel.Sel.Name == "Record") && field(sel.X) != "" {
						fields = append(fields, field(sel.X))
					}
					// o.<field>.Add: an observable instrument's count, kept
					// in the attribute set's options and read at collection.
					if x, ok := sel.X.(*ast.SelectorExpr); ok && sel.Sel.Name == "Add" {
						if id, ok := x.X.(*ast.Ident); ok && id.Name == "o" {
							fields = append(fields, x.Sel.Name)
						}
					}
				}
				return true
			})
			for _, fl := range fields {
				recorded[fl] = append(recorded[fl], keys...)
			}
		}
	}
	out := map[string]emittedMetric{}
	for fl, in := range byField {
		if in.name == "" || len(recorded[fl]) == 0 {
			t.Errorf("metrics.go: instrument m.%s (%s) has no Name constant or is recorded nowhere with attrs", fl, in.kind)
			continue
		}
		dims := maps.Clone(base)
		for _, k := range recorded[fl] {
			dims[k] = true
		}
		out[in.name] = emittedMetric{kind: in.kind, dims: dims}
	}
	if len(out) < 7 || !base["connection"] {
		t.Fatalf("read %d instruments from metrics.go (attrs sets %v); the parse no longer matches the source", len(out), base)
	}
	return out
}

// customMetricsColumns maps the customMetrics columns a query may read to
// the envelope's dataPoint field (appinsights.go) that fills it; "" for a
// column every row has.
var customMetricsColumns = map[string]string{"value": "value", "valueSum": "value", "valueCount": "count", "valueMin": "min", "valueMax": "max"}

// TestWorkbookMetricsAreEmitted: every instrument the handler creates is
// charted by some query; every metric a workbook query reads is an
// instrument the handler creates, each dimension it reads is an attribute
// the handler records on that instrument, and each value column is one the
// handler's envelope fills (a counter's envelope carries its count as the
// value and nothing else).
func TestWorkbookMetricsAreEmitted(t *testing.T) {
	t.Parallel()
	emitted := handlerMetrics(t)
	src := readText(t, filepath.Join("..", "handler", "internal", "metrics", "appinsights.go"))
	for col, tag := range customMetricsColumns {
		if !strings.Contains(src, `json:"`+tag) {
			t.Errorf("appinsights.go: no dataPoint field with JSON name %q, which fills customMetrics.%s", tag, col)
		}
	}
	_, queries := workbookQueries(t)
	names := regexp.MustCompile(`\bname\s*==\s*"([^"]+)"`)
	dims := regexp.MustCompile(`customDimensions\.(\w+)`)
	cols := regexp.MustCompile(`\bvalue(?:Sum|Count|Min|Max)?\b`)
	charted := map[string]bool{}
	for q, src := range queries {
		src = kqlStripComments(src)
		if !strings.HasPrefix(strings.TrimSpace(src), "customMetrics") {
			continue
		}
		ms := names.FindAllStringSubmatch(src, -1)
		if len(ms) == 0 {
			t.Errorf("workbook/%s.kql reads customMetrics without choosing a metric by name", q)
		}
		for _, m := range ms {
			e, ok := emitted[m[1]]
			charted[m[1]] = ok
			if !ok {
				t.Errorf("workbook/%s.kql reads metric %q, which the handler does not emit (metrics.go: %v)", q, m[1], slices.Sorted(maps.Keys(emitted)))
				continue
			}
			for _, d := range dims.FindAllStringSubmatch(src, -1) {
				if !e.dims[d[1]] {
					t.Errorf("workbook/%s.kql reads customDimensions.%s of %q, which records only %v", q, d[1], m[1], slices.Sorted(maps.Keys(e.dims)))
				}
			}
			for _, c := range cols.FindAllString(src, -1) {
				if strings.HasSuffix(e.kind, "Counter") && c != "value" && c != "valueSum" {
					t.Errorf("workbook/%s.kql reads %s of counter %q, whose envelope carries only its count as the value (valueSum)", q, c, m[1])
				}
			}
		}
	}
	// Issue 19 §1: every metric the handler emits is charted.
	for name := range emitted {
		if !charted[name] {
			t.Errorf("no workbook query charts metric %q, which the handler emits", name)
		}
	}
}

// kqlStripComments drops // comment lines.
func kqlStripComments(src string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(src, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "//") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}
