package infra

// The alert rules of modules/alerts.bicep, replayed: each rule's query (the
// .kql file the Bicep loads) runs over the log lines the handler writes, as
// the host stores them (alert-traces.json), at every evaluation of the
// rule's frequency, over its window, against its threshold and failing
// periods, the way a stateful log search alert fires and resolves
// (https://learn.microsoft.com/azure/templates/microsoft.insights/2023-12-01/scheduledqueryrules:
// windowSize, evaluationFrequency, failingPeriods; autoMitigate resolves).

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// alertRule is one module call of modules/alerts.bicep.
type alertRule struct {
	module, name, file, query, measure string
	dimensions                         []string
	freq, window                       time.Duration
	threshold                          float64
	periods, minFailing                int
	severity                           string
}

// loadAlertRules reads every log-alert.bicep module call of alerts.bicep,
// by its symbolic name.
func loadAlertRules(t *testing.T) map[string]alertRule {
	t.Helper()
	f := loadTemplates(t)["modules/alerts.bicep"]
	rules := map[string]alertRule{}
	quoted := regexp.MustCompile(`'([^']*)'`)
	for _, d := range f.decls {
		if d.kind != "module" || d.typ != "log-alert.bicep" {
			continue
		}
		param := func(name string) string {
			v := d.body.value("params." + name)
			if v == "" {
				t.Fatalf("modules/alerts.bicep:%d: module %s sets no %s", d.line, d.name, name)
			}
			return v
		}
		num := func(name string) int {
			n, err := strconv.Atoi(param(name))
			if err != nil {
				t.Fatalf("modules/alerts.bicep: module %s: %s is %q, want a number", d.name, name, param(name))
			}
			return n
		}
		r := alertRule{module: d.name, severity: param("severity")}
		r.name, _ = stringLit(param("name"))
		r.measure, _ = stringLit(param("measureColumn"))
		m := regexp.MustCompile(`^loadTextContent\('([\w.-]+\.kql)'\)$`).FindStringSubmatch(param("query"))
		if m == nil {
			t.Fatalf("modules/alerts.bicep: module %s: query is %s, want loadTextContent('<file>.kql')", d.name, param("query"))
		}
		r.file = m[1]
		r.query = readText(t, filepath.Join("modules", r.file))
		for _, q := range quoted.FindAllStringSubmatch(param("dimensions"), -1) {
			r.dimensions = append(r.dimensions, q[1])
		}
		var err error
		if r.freq, err = isoDuration(param("evaluationFrequency")); err != nil {
			t.Fatal(err)
		}
		if r.window, err = isoDuration(param("windowSize")); err != nil {
			t.Fatal(err)
		}
		r.threshold = float64(num("threshold"))
		r.periods, r.minFailing = num("evaluationPeriods"), num("minFailingPeriods")
		rules[d.name] = r
	}
	if len(rules) == 0 {
		t.Fatal("modules/alerts.bicep declares no log-alert.bicep module")
	}
	return rules
}

// isoDuration reads the ISO 8601 durations the rules use: 'PT5M', 'PT1H', 'P1D'.
func isoDuration(lit string) (time.Duration, error) {
	s, _ := stringLit(lit)
	m := regexp.MustCompile(`^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?$`).FindStringSubmatch(s)
	if m == nil || s == "P" || s == "PT" {
		return 0, fmt.Errorf("%s is not an ISO 8601 duration of days, hours and minutes", lit)
	}
	var d time.Duration
	for i, unit := range []time.Duration{24 * time.Hour, time.Hour, time.Minute} {
		if m[i+1] != "" {
			n, _ := strconv.Atoi(m[i+1])
			d += time.Duration(n) * unit
		}
	}
	return d, nil
}

// alertChange is an alert firing or resolving for one dimension value.
type alertChange struct {
	at       time.Duration // after the scenario's start
	key      string        // the dimension values, joined by "/"
	resolved bool
}

func (c alertChange) String() string {
	what := "fires"
	if c.resolved {
		what = "resolves"
	}
	return fmt.Sprintf("%s %s at +%v", c.key, what, c.at)
}

// replay evaluates the rule every freq from start for the given span: each
// run queries (now-window, now], a dimension value violates when its measure
// reaches the threshold, and the alert fires when minFailing of the last
// periods runs violate, and resolves when that no longer holds.
func (r alertRule) replay(t *testing.T, rows []kqlRow, start time.Time, span time.Duration) []alertChange {
	t.Helper()
	var changes []alertChange
	history := map[string][]bool{}
	fired := map[string]bool{}
	for at := r.freq; at <= span; at += r.freq {
		now := start.Add(at)
		var window []kqlRow
		for _, row := range rows {
			if ts := row["timestamp"].(time.Time); ts.After(now.Add(-r.window)) && !ts.After(now) {
				window = append(window, row)
			}
		}
		out, err := kqlRunAt(r.query, window, now)
		if err != nil {
			t.Fatalf("modules/%s: %v", r.file, err)
		}
		violating := map[string]bool{}
		for _, o := range out {
			var key []string
			for _, d := range r.dimensions {
				key = append(key, kqlString(o[d]))
			}
			v, ok := o[r.measure].(float64)
			if !ok {
				t.Fatalf("modules/%s yields no number in %s (the rule's measureColumn): %v", r.file, r.measure, o)
			}
			if v >= r.threshold {
				violating[strings.Join(key, "/")] = true
			}
		}
		for k := range violating {
			if _, seen := history[k]; !seen {
				history[k] = nil
			}
		}
		for _, k := range slices.Sorted(maps.Keys(history)) {
			h := append(history[k], violating[k])
			if len(h) > r.periods {
				h = h[len(h)-r.periods:]
			}
			history[k] = h
			n := 0
			for _, v := range h {
				if v {
					n++
				}
			}
			switch {
			case n >= r.minFailing && !fired[k]:
				fired[k] = true
				changes = append(changes, alertChange{at: at, key: k})
			case n < r.minFailing && fired[k]:
				fired[k] = false
				changes = append(changes, alertChange{at: at, key: k, resolved: true})
			}
		}
	}
	return changes
}

// handlerLine is the traces row of the handler's line for event and
// connection (and permanent, for token.refresh_failed), from
// alert-traces.json, at the given time.
func handlerLine(t *testing.T, rows []kqlRow, event, connection string, permanent bool, at time.Time) kqlRow {
	t.Helper()
	for _, r := range rows {
		l := lineOf(t, r)
		if l["event"] == event && l["connection"] == connection && (event != "token.refresh_failed" || l["permanent"] == permanent) {
			c := maps.Clone(r)
			c["timestamp"] = at
			return c
		}
	}
	t.Fatalf("alert-traces.json has no %s line for %s (permanent %v)", event, connection, permanent)
	return nil
}

// tokenRequest is the requests row the host writes for a call of the token
// function.
func tokenRequest(code int, connection string, at time.Time) kqlRow {
	return kqlRow{"$table": "requests", "name": "token", "resultCode": strconv.Itoa(code),
		"url": "https://app.example/api/token/" + connection, "timestamp": at, "duration": 12.0}
}

// sweepLine is the refresh timer's invocation log line for a failed
// connection (the host logs it under Function.refresh.User).
func sweepLine(connection string, at time.Time) kqlRow {
	return kqlRow{"$table": "traces", "operation_Name": "refresh", "severityLevel": 1.0, "timestamp": at,
		"customDimensions": map[string]any{"Category": "Function.refresh.User"},
		"message":          connection + ": refresh failed: HTTP 503: the provider is down"}
}

func TestAlertRulesFireAsIntended(t *testing.T) {
	t.Parallel()
	rules := loadAlertRules(t)
	lines := alertTraces(t)
	start := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return start.Add(d) }
	line := func(event, conn string, d time.Duration) kqlRow {
		return handlerLine(t, lines, event, conn, false, at(d))
	}
	// A failed token request: the host's requests row and the handler's line.
	failed := func(code int, conn string, permanent bool, d time.Duration) []kqlRow {
		return []kqlRow{tokenRequest(code, conn, at(d)), handlerLine(t, lines, "token.refresh_failed", conn, permanent, at(d))}
	}
	// An outage: the sweep fails every connection every 5 minutes.
	outage := func(conn string, from, to time.Duration) []kqlRow {
		var rows []kqlRow
		for d := from; d < to; d += 5 * time.Minute {
			rows = append(rows, sweepLine(conn, at(d)), handlerLine(t, lines, "token.refresh_failed", conn, false, at(d)))
		}
		return rows
	}
	refreshed := func(conn string, d time.Duration) kqlRow { return line("token.refreshed", conn, d) }
	many := func(event string, n int, from, every time.Duration) []kqlRow {
		var rows []kqlRow
		for i := range n {
			rows = append(rows, line(event, "xero", from+time.Duration(i)*every))
		}
		return rows
	}
	m := time.Minute
	tests := []struct {
		name string
		rows []kqlRow
		span time.Duration
		want map[string][]string // rule -> changes; a rule not named fires nothing
	}{
		{
			name: "one transient 502",
			rows: failed(502, "xero", false, 2*m),
			span: time.Hour,
		},
		{
			name: "a 502 and ADF's two retries, 30 s apart across a window's edge",
			rows: slices.Concat(failed(502, "xero", false, 4*m+30*time.Second), failed(502, "xero", false, 5*m+30*time.Second),
				failed(502, "xero", false, 6*m), []kqlRow{refreshed("xero", 6*m+30*time.Second)}),
			span: time.Hour,
		},
		{
			name: "a provider outage of 20 minutes, then recovery",
			rows: slices.Concat(outage("xero", 1*m, 21*m), []kqlRow{refreshed("xero", 21*m)}),
			span: time.Hour,
			want: map[string][]string{"refreshFailures": {"xero fires at +15m0s", "xero resolves at +30m0s"}},
		},
		{
			name: "a revoked refresh token, re-authorized 40 minutes later",
			rows: slices.Concat(failed(424, "warner-1", true, 3*m), failed(424, "warner-1", true, 13*m),
				[]kqlRow{refreshed("warner-1", 43*m)}),
			span: 2 * time.Hour,
			want: map[string][]string{"needsAPerson": {"warner-1 fires at +5m0s", "warner-1 resolves at +45m0s"}},
		},
		{
			name: "a client secret expiring",
			rows: []kqlRow{line("secret.expiring", "xero", 10*m)},
			span: 26 * time.Hour,
			want: map[string][]string{"clientSecretExpiring": {"xero fires at +1h0m0s", "xero resolves at +25h0m0s"}},
		},
		{
			name: "a rotated refresh token lost",
			rows: []kqlRow{line("persist.lost", "xero", 7*m)},
			span: 2 * time.Hour,
			want: map[string][]string{"refreshTokenAtRisk": {"xero/persist.lost fires at +10m0s", "xero/persist.lost resolves at +1h10m0s"}},
		},
		{
			name: "the standby grant promoted, and a killed process's token lost",
			rows: []kqlRow{line("standby.promoted", "warner-1", 1*m), line("refresh.interrupted_lost", "xero", 1*m)},
			span: 30 * m,
			want: map[string][]string{"refreshTokenAtRisk": {"warner-1/standby.promoted fires at +5m0s", "xero/refresh.interrupted_lost fires at +5m0s"}},
		},
		{
			name: "a storage blip: two lock lines",
			rows: many("lock.unavailable", 2, 1*m, m),
			span: time.Hour,
		},
		{
			name: "storage down for 10 minutes",
			rows: slices.Concat(many("lock.unavailable", 4, 1*m, 2*m), many("lock.lost", 2, 2*m, 3*m)),
			span: time.Hour,
			want: map[string][]string{"lockTrouble": {" fires at +5m0s", " resolves at +20m0s"}},
		},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, name := range slices.Sorted(maps.Keys(rules)) {
				var got []string
				for _, c := range rules[name].replay(t, tt.rows, start, tt.span) {
					got = append(got, c.String())
				}
				slices.Sort(got)
				want := slices.Sorted(slices.Values(tt.want[name]))
				if !slices.Equal(got, want) {
					t.Errorf("%s (%s): %q, want %q", name, rules[name].file, got, want)
				}
			}
		})
		for name := range tt.want {
			covered[name] = true
		}
	}
	for name := range rules {
		if !covered[name] {
			t.Errorf("no scenario here makes %s fire; add one", name)
		}
	}
}

// TestAlertQueriesReadHandlerEvents: every event name an alert or workbook
// query filters on is one the handler logs, and alert-traces.json carries
// it, so the replay above runs on real line shapes.
func TestAlertQueriesReadHandlerEvents(t *testing.T) {
	t.Parallel()
	code := loadHandlerCode(t)
	traced := map[string]bool{}
	for _, r := range alertTraces(t) {
		traced[lineOf(t, r)["event"].(string)] = true
	}
	files, err := filepath.Glob(filepath.Join("modules", "*.kql"))
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob(filepath.Join("modules", "workbook", "*.kql"))
	files = append(files, more...)
	if len(files) < 6 {
		t.Fatalf("found %d .kql files", len(files))
	}
	event := regexp.MustCompile(`"([a-z]+\.[a-z_]+)"`)
	for _, f := range files {
		src := readText(t, f)
		if strings.HasPrefix(strings.TrimSpace(kqlStripComments(src)), "customMetrics") {
			continue // metric names, not events: TestWorkbookMetricsAreEmitted checks them
		}
		for _, m := range event.FindAllStringSubmatch(src, -1) {
			if err := code.hasLiteral(m[1], "an event the handler logs"); err != nil {
				t.Errorf("%s filters on %q, but %v", f, m[1], err)
			}
			if !traced[m[1]] {
				t.Errorf("%s filters on %q, which alert-traces.json lacks: add it to alertEvents in handler/internal/logsplit/callsites_test.go and run its -update", f, m[1])
			}
		}
	}
}

// TestReadmeAlertTableIsDeployed: every row of README.md's alert table is a
// rule alerts.bicep deploys, with that query file and severity, and every
// rule is in the table.
func TestReadmeAlertTableIsDeployed(t *testing.T) {
	t.Parallel()
	rules := loadAlertRules(t)
	readme := readText(t, filepath.Join(repoRoot, "README.md"))
	row := regexp.MustCompile(`(?m)^\| ([a-z ]+) \| \[infra/modules/([\w-]+\.kql)\]\(infra/modules/[\w-]+\.kql\)[^|]*\| ([^|]+) \| (\d)\b`)
	byFile := map[string]alertRule{}
	for _, r := range rules {
		byFile[r.file] = r
	}
	seen := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(readme, -1) {
		r, ok := byFile[m[2]]
		if !ok {
			t.Errorf("README.md alert %q: no rule in modules/alerts.bicep queries %s", m[1], m[2])
			continue
		}
		seen[m[2]] = true
		if sev := r.severity; sev != m[4] && !(sev == "severity" && m[4] == "2") {
			t.Errorf("README.md alert %q: severity %s, but alerts.bicep has %s", m[1], m[4], sev)
		}
	}
	for file := range byFile {
		if !seen[file] {
			t.Errorf("modules/alerts.bicep deploys the rule of %s, which README.md's alert table does not list", file)
		}
	}
}

// TestAlertWebhookIsSecure: a Teams, Slack or Logic App webhook URL carries
// its own credential, so the parameter is @secure() all the way down.
func TestAlertWebhookIsSecure(t *testing.T) {
	t.Parallel()
	files := loadTemplates(t)
	for _, p := range []struct{ file, param string }{{"main.bicep", "alertWebhookUrl"}, {"modules/alerts.bicep", "webhookUrl"}} {
		d := files[p.file].find("param", p.param)
		if d == nil {
			t.Errorf("%s: no param %s", p.file, p.param)
			continue
		}
		if !slices.ContainsFunc(d.decorators, func(s string) bool { return normalize(s) == "@secure()" }) {
			t.Errorf("%s:%d: param %s is not @secure()", p.file, d.line, p.param)
		}
	}
	group := files["modules/alerts.bicep"].find("resource", "group")
	if group == nil || !strings.Contains(group.body.value("properties.webhookReceivers"), "useCommonAlertSchema: true") {
		t.Error("modules/alerts.bicep: the action group has no webhook receiver in the common alert schema (monitorCondition Fired/Resolved)")
	}
}

// TestKQLEvaluatorSummarize holds the evaluator's summarize, datetimes and
// the functions the workbook uses to KQL's meaning.
func TestKQLEvaluatorSummarize(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	rows := []kqlRow{
		{"$table": "requests", "name": "a", "duration": 10.0, "timestamp": t0},
		{"$table": "requests", "name": "a", "duration": 30.0, "timestamp": t0.Add(90 * time.Minute)},
		{"$table": "requests", "name": "b", "duration": 20.0, "timestamp": t0.Add(10 * time.Minute)},
		{"$table": "requests", "name": "b", "duration": 40.0, "timestamp": t0.Add(20 * time.Minute), "expires": "2026-01-05T00:00:00Z"},
	}
	tests := []struct {
		query, want string
	}{
		{`requests | summarize n = count() by name | order by name asc`, `[{"n":2,"name":"a"},{"n":2,"name":"b"}]`},
		{`requests | summarize n = count()`, `[{"n":4}]`},
		{`requests | where name == "none" | summarize n = count()`, `[{"n":0}]`},
		{`requests | where name == "none" | summarize n = count() by name`, `null`},
		{`requests | summarize p50 = percentile(duration, 50), top = max(duration) by name | order by name asc`,
			`[{"name":"a","p50":10,"top":30},{"name":"b","p50":20,"top":40}]`},
		{`requests | summarize n = countif(duration > 15) by bin(timestamp, 1h) | order by timestamp asc`,
			`[{"n":2,"timestamp":"2026-01-02T10:00:00Z"},{"n":1,"timestamp":"2026-01-02T11:00:00Z"}]`},
		{`requests | summarize arg_max(timestamp, duration) by name | project name, duration | order by name asc`,
			`[{"duration":30,"name":"a"},{"duration":40,"name":"b"}]`},
		{`requests | where timestamp > ago(1h) | summarize n = count()`, `[{"n":1}]`}, // now() is t0 + 2h
		{`requests | where todatetime(expires) < now() + 3d | project name`, `[{"name":"b"}]`},
		{`requests | extend s = strcat(name, iff(duration > 25, " slow", " fast")), k = case(duration < 15, 1, duration < 35, 2, 3) | summarize n = dcount(s), m = sum(k)`,
			`[{"m":8,"n":4}]`},
	}
	for _, tt := range tests {
		got, err := kqlRunAt(tt.query, rows, t0.Add(2*time.Hour))
		if err != nil {
			t.Errorf("%s: %v", tt.query, err)
			continue
		}
		for _, r := range got {
			for k, v := range r {
				if ts, ok := v.(time.Time); ok {
					r[k] = ts.Format(time.RFC3339)
				}
			}
		}
		b, _ := json.Marshal(got)
		if string(b) != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.query, b, tt.want)
		}
	}
	for _, bad := range []string{`requests | summarize percentile(duration, 50)`, `requests | summarize n = stdev(duration)`, `requests | top 3 by duration`} {
		if _, err := kqlRun(bad, rows); err == nil {
			t.Errorf("%s: no error; the evaluator must refuse what it does not know", bad)
		}
	}
}
