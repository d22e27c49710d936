package infra

// The workbook of modules/workbook.bicep: its layout (workbook/workbook.json)
// and queries (workbook/<item>.kql) are the files the Bicep loads, and each
// query runs here over the log lines the handler writes, as the host stores
// them (alert-traces.json), and the requests rows the host writes.

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
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
// the metrics section is reserved.
func TestWorkbookLayout(t *testing.T) {
	t.Parallel()
	items, _ := workbookQueries(t)
	want := []string{"connections-by-state", "failures-by-category", "refreshes-over-time", "secrets-expiring", "token-latency"}
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
	raw := readText(t, filepath.Join("modules", "workbook", "workbook.json"))
	if !strings.Contains(raw, `"name": "metrics-reserved"`) {
		t.Error("workbook.json: the metrics-reserved section is gone; the metric charts go there")
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
			if tt.query != "secrets-expiring" && tt.query != "connections-by-state" {
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
