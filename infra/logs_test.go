package infra

// The alert queries against the log lines the handler writes, as the
// Functions host stores them in Application Insights. The rows come from
// handler/internal/logsplit/testdata/alert-traces.json, which logsplit's
// TestAlertTracesFile keeps equal to what the handler's own log handler
// writes at each alerting call site, read through a port of the host
// (WorkerProcess.ParseErrorMessageAndLog and OnOutputDataReceived: stdout
// Information, stderr Warning when it says "warn", else Error; category
// Host.Function.Console; the raw line as the message). The queries are run
// here by a small KQL evaluator that knows the operators they use, so the
// queries must stay that simple.

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
)

// kqlRow is one row of a table: column name to value (string, float64,
// bool, map[string]any, []any or nil).
type kqlRow map[string]any

// alertTraces reads the traces rows the host makes of the handler's
// alerting log lines.
func alertTraces(t *testing.T) []kqlRow {
	t.Helper()
	var rows []kqlRow
	readJSON(t, filepath.Join(repoRoot, "handler", "internal", "logsplit", "testdata", "alert-traces.json"), &rows)
	if len(rows) == 0 {
		t.Fatal("alert-traces.json has no rows")
	}
	for _, r := range rows {
		r["$table"] = "traces"
		if sev, ok := r["severityLevel"].(float64); !ok || sev < 1 || sev > 3 {
			t.Fatalf("alert-traces.json: severityLevel %v", r["severityLevel"])
		}
	}
	return rows
}

// lineOf decodes a row's message, the handler's JSON line.
func lineOf(t *testing.T, r kqlRow) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r["message"].(string)), &m); err != nil {
		t.Fatalf("a trace message is not a JSON line: %v", err)
	}
	return m
}

func TestRefreshFailureAlertSelectsHandlerLines(t *testing.T) {
	t.Parallel()
	kql := readText(t, filepath.Join("modules", "refresh-failures.kql"))
	rows := alertTraces(t)
	want := map[string]int{}
	for _, r := range rows {
		if m := lineOf(t, r); m["event"] == "token.refresh_failed" {
			want[m["connection"].(string)]++
		}
	}
	if len(want) < 2 {
		t.Fatalf("alert-traces.json has token.refresh_failed lines for %v; want xero and warner-1", want)
	}
	// The two signals the host writes itself: the token function's answer
	// (requests), and the refresh timer's invocation log, which the host
	// logs at Information under Function.refresh.User in the invocation's
	// scope (DefaultHttpWorkerService.ProcessLogsFromHttpResponse).
	rows = append(rows,
		kqlRow{"$table": "requests", "name": "token", "resultCode": "424", "url": "https://app.example/api/token/hubspot"},
		kqlRow{"$table": "requests", "name": "token", "resultCode": "200", "url": "https://app.example/api/token/xero"},
		// The host routes literal segments ignoring case (functions/routes.go).
		kqlRow{"$table": "requests", "name": "token", "resultCode": "502", "url": "https://app.example/api/Token/hubspot/"},
		kqlRow{"$table": "traces", "operation_Name": "refresh", "severityLevel": 1.0,
			"customDimensions": map[string]any{"Category": "Function.refresh.User"},
			"message":          "sage: refresh failed: invalid_grant (reauthorize): the refresh token expired"},
		kqlRow{"$table": "traces", "operation_Name": "refresh", "severityLevel": 1.0,
			"customDimensions": map[string]any{"Category": "Function.refresh.User"},
			"message":          "xero: fresh; valid until 2026-01-02T04:04:05Z"},
	)
	want["hubspot"] += 2
	want["sage"]++
	got, err := kqlSummarizeCount(kql, rows)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("modules/refresh-failures.kql counts %v, want %v", got, want)
	}
}

// TestAlertQueriesSelectHandlerLines runs each alert's query over the
// lines of alert-traces.json (the token.refreshed lines left out: they
// end a failure) and checks what it yields, by its dimensions.
func TestAlertQueriesSelectHandlerLines(t *testing.T) {
	t.Parallel()
	var rows []kqlRow
	for i, r := range alertTraces(t) {
		if lineOf(t, r)["event"] != "token.refreshed" {
			r["timestamp"] = kqlEpoch.Add(-time.Hour + time.Duration(i)*time.Second)
			rows = append(rows, r)
		}
	}
	atRisk := []string{}
	for _, c := range []string{"warner-1", "xero"} {
		for _, e := range []string{"persist.lost", "persist.pending", "refresh.interrupted_lost", "standby.lost", "standby.promoted"} {
			atRisk = append(atRisk, c+"/"+e+"=1")
		}
	}
	want := map[string][]string{
		"refresh-failures.kql":       {"warner-1=1", "xero=1"},
		"needs-a-person.kql":         {"warner-1=1"},
		"client-secret-expiring.kql": {"warner-1=1", "xero=1"},
		"refresh-token-at-risk.kql":  atRisk,
		"lock-trouble.kql":           {"=4"},
	}
	rules := loadAlertRules(t)
	for _, r := range rules {
		t.Run(r.file, func(t *testing.T) {
			out, err := kqlRun(r.query, rows)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range out {
				var key []string
				for _, d := range r.dimensions {
					key = append(key, kqlString(o[d]))
				}
				got = append(got, strings.Join(key, "/")+"="+kqlString(o[r.measure]))
			}
			slices.Sort(got)
			w, ok := want[r.file]
			if !ok {
				t.Fatalf("no expectation for %s here; add one", r.file)
			}
			if !slices.Equal(got, w) {
				t.Errorf("yields %q, want %q", got, w)
			}
		})
	}
	if len(rules) != len(want) {
		t.Errorf("%d rules, %d expectations", len(rules), len(want))
	}
}

// TestHostJSONKeepsAlertsFromSampling: adaptive sampling drops telemetry of
// the types it samples (the host turns it on at 20 items/s unless
// samplingSettings.isEnabled is false: ApplicationInsightsLoggerOptionsSetup
// .Configure). The alert queries read requests and traces, so those types
// are excluded from it.
func TestHostJSONKeepsAlertsFromSampling(t *testing.T) {
	t.Parallel()
	var host struct {
		Logging struct {
			ApplicationInsights struct {
				SamplingSettings *struct {
					IsEnabled     *bool  `json:"isEnabled"`
					ExcludedTypes string `json:"excludedTypes"`
				} `json:"samplingSettings"`
			} `json:"applicationInsights"`
		} `json:"logging"`
	}
	readJSON(t, filepath.Join(repoRoot, "host.json"), &host)
	s := host.Logging.ApplicationInsights.SamplingSettings
	if s != nil && s.IsEnabled != nil && !*s.IsEnabled {
		return
	}
	var excluded []string
	if s != nil {
		for _, ty := range strings.Split(s.ExcludedTypes, ";") {
			excluded = append(excluded, strings.ToLower(strings.TrimSpace(ty)))
		}
	}
	for _, table := range []string{"requests", "traces"} {
		ty := strings.TrimSuffix(table, "s")
		if !slices.Contains(excluded, ty) {
			t.Errorf("host.json: logging.applicationInsights.samplingSettings.excludedTypes lacks %q, so adaptive sampling may drop the %s an alert counts", ty, table)
		}
	}
}

func TestKQLEvaluator(t *testing.T) {
	t.Parallel()
	rows := []kqlRow{
		{"$table": "traces", "message": `{"event":"a.b","connection":"x","n":3,"ok":true}`, "severityLevel": 3.0,
			"customDimensions": map[string]any{"Category": "Host.Function.Console"}},
		{"$table": "traces", "message": `not json: a.bc`, "severityLevel": 1.0},
	}
	tests := []struct {
		query string
		want  int
	}{
		{`traces | where severityLevel >= 3`, 1},
		{`traces | where severityLevel > 3`, 0},
		{`traces | where message has "a.b"`, 1},      // a.bc is not the term a.b
		{`traces | where message contains "A.B"`, 2}, // contains ignores case
		{`traces | where message has '"event":"a.b"'`, 1},
		{`traces | where tostring(parse_json(message).event) == "a.b"`, 1},
		{`traces | extend e = parse_json(message) | where tostring(e.connection) == "x" and toint(e.n) == 3 and tobool(e.ok)`, 1},
		{`traces | where tostring(customDimensions.Category) == "Host.Function.Console"`, 1},
		{`traces | where message has_any ("a.b", "zzz")`, 1},
		{`traces | where message has "a.b" or severityLevel == 1`, 2},
		{`traces | where extract(@"^not (json)", 1, message) == "json"`, 1},
		{`traces | where severityLevel in (1, 2)`, 1},
		{`requests | where name == "x"`, 0},
	}
	for _, tt := range tests {
		got, err := kqlRun(tt.query, rows)
		if err != nil {
			t.Errorf("%s: %v", tt.query, err)
			continue
		}
		if len(got) != tt.want {
			t.Errorf("%s: %d rows, want %d", tt.query, len(got), tt.want)
		}
	}
	for _, bad := range []string{`traces | where message matches regex "x"`, `traces | take 1`, `traces | where f(x)`} {
		if _, err := kqlRun(bad, rows); err == nil {
			t.Errorf("%s: no error; the evaluator must refuse what it does not know", bad)
		}
	}
}

// TestKQLEvaluatorPercentiles: percentiles() makes KQL's columns
// percentile_<column>_<p> by nearest rank, skipping nulls; todouble,
// isnull and isnotnull; and the forms the evaluator refuses rather than
// guess.
func TestKQLEvaluatorPercentiles(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	var rows []kqlRow
	for i := range 100 {
		rows = append(rows, kqlRow{"$table": "t", "timestamp": t0.Add(time.Duration(i) * time.Second), "g": "a", "x": float64(i + 1), "s": strconv.Itoa(i + 1)})
	}
	rows = append(rows,
		kqlRow{"$table": "t", "timestamp": t0.Add(time.Hour), "g": "b", "x": 7.0, "s": "seven"},
		kqlRow{"$table": "t", "timestamp": t0.Add(time.Hour), "g": "b"}, // no x: skipped
		kqlRow{"$table": "t", "timestamp": t0.Add(2 * time.Hour), "g": "c", "s": "n/a"},
	)
	tests := []struct {
		query string
		cols  []string
		want  []string
	}{
		{`t | summarize percentiles(x, 50, 95, 99) by g`, []string{"g", "percentile_x_50", "percentile_x_95", "percentile_x_99"},
			[]string{"a 50 95 99", "b 7 7 7", "c   "}},
		{`t | summarize percentiles(x, 99.9, 0) by bin(timestamp, 1h)`, []string{"timestamp", "percentile_x_99_9", "percentile_x_0"},
			[]string{"2026-01-02T10:00:00Z 100 1", "2026-01-02T11:00:00Z 7 7", "2026-01-02T12:00:00Z  "}},
		{`t | extend y = todouble(s) | where isnotnull(y) | summarize n = count(), percentiles(y, 50) by g`, []string{"g", "n", "percentile_y_50"},
			[]string{"a 100 50"}},
		{`t | where isnull(x) | summarize n = count() by g`, []string{"g", "n"}, []string{"b 1", "c 1"}},
		{`t | where g == "a" | extend y = todouble(x) * 2 | summarize m = max(y)`, []string{"m"}, []string{"200"}},
	}
	for _, tt := range tests {
		out, err := kqlRun(tt.query, rows)
		if err != nil {
			t.Errorf("%s: %v", tt.query, err)
			continue
		}
		var got []string
		for _, o := range out {
			var f []string
			for _, c := range tt.cols {
				f = append(f, kqlString(o[c]))
			}
			got = append(got, strings.Join(f, " "))
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s yields %q, want %q", tt.query, got, tt.want)
		}
	}
	for _, bad := range []string{
		`t | summarize p = percentiles(x, 50)`,                      // KQL would name the columns otherwise
		`t | summarize percentiles(todouble(s), 50)`,                // a column's name is the evaluator's only naming
		`t | summarize percentiles(x)`,                              // no percentile
		`t | summarize percentiles(x, 150)`,                         // out of range
		`t | summarize percentiles(x, 50) | where p50 > 1 | take 1`, // an unknown operator still fails
		`t | extend y = todouble(s, 1)`,
	} {
		if _, err := kqlRun(bad, rows); err == nil {
			t.Errorf("%s: no error; the evaluator must refuse what it does not know", bad)
		}
	}
}

// ---------------------------------------------------------------------------
// A KQL evaluator for the subset the alert and workbook queries use: union
// of parenthesized queries; where; extend and project (one or more
// columns); summarize with count, countif, dcount, sum, min, max, take_any,
// percentile, percentiles (with KQL's column names), arg_max and arg_min,
// by columns or expressions; order by;
// and, or; ==, !=, <, <=, >, >=, in, has, has_any, contains; + and - on
// numbers, datetimes and timespans (30d, 1h, 5m, 10s); * and / on numbers;
// tostring, toint, todouble, isnull, isnotnull,
// tobool, todatetime, parse_json, extract, strcat, iff, case, now, ago,
// bin; member access. Anything else is an error, so a query that outgrows
// it fails its test instead of passing unchecked. Datetimes are time.Time,
// timespans time.Duration; now() is the parser's clock.

type kqlToken struct {
	kind string // "id", "str", "num", "span", "op"
	text string
}

func (t kqlToken) equal(kind, text string) bool { return t.kind == kind && t.text == text }

// kqlSpanUnits are the timespan literal suffixes, longest first.
var kqlSpanUnits = []struct {
	suffix string
	unit   time.Duration
}{{"ms", time.Millisecond}, {"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}}

func kqlLex(src string) ([]kqlToken, error) {
	var toks []kqlToken
	isIdent := func(b byte) bool { return b == '_' || unicode.IsLetter(rune(b)) || unicode.IsDigit(rune(b)) }
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case strings.HasPrefix(src[i:], "//"):
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case c == '@' && i+1 < len(src) && (src[i+1] == '"' || src[i+1] == '\''):
			q := src[i+1]
			j := strings.IndexByte(src[i+2:], q)
			if j < 0 {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			toks = append(toks, kqlToken{"str", src[i+2 : i+2+j]})
			i += j + 3
		case c == '"' || c == '\'':
			var b strings.Builder
			j := i + 1
			for ; j < len(src) && src[j] != c; j++ {
				if src[j] == '\\' && j+1 < len(src) {
					j++
					switch src[j] {
					case 'n':
						b.WriteByte('\n')
					case 't':
						b.WriteByte('\t')
					default:
						b.WriteByte(src[j])
					}
					continue
				}
				b.WriteByte(src[j])
			}
			if j >= len(src) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			toks = append(toks, kqlToken{"str", b.String()})
			i = j + 1
		case c == '_' || unicode.IsLetter(rune(c)):
			j := i
			for j < len(src) && isIdent(src[j]) {
				j++
			}
			toks = append(toks, kqlToken{"id", src[i:j]})
			i = j
		case unicode.IsDigit(rune(c)):
			j := i
			for j < len(src) && (unicode.IsDigit(rune(src[j])) || src[j] == '.') {
				j++
			}
			kind, text := "num", src[i:j]
			for _, u := range kqlSpanUnits {
				if strings.HasPrefix(src[j:], u.suffix) && (j+len(u.suffix) == len(src) || !isIdent(src[j+len(u.suffix)])) {
					kind, text = "span", src[i:j+len(u.suffix)]
					j += len(u.suffix)
					break
				}
			}
			toks = append(toks, kqlToken{kind, text})
			i = j
		default:
			op := string(c)
			if i+1 < len(src) && slices.Contains([]string{"==", "!=", ">=", "<="}, src[i:i+2]) {
				op = src[i : i+2]
			}
			if !strings.Contains("|(),.=<>![]+-*/", string(c)) {
				return nil, fmt.Errorf("unexpected %q at %d", c, i)
			}
			toks = append(toks, kqlToken{"op", op})
			i += len(op)
		}
	}
	return toks, nil
}

func kqlSpan(text string) (time.Duration, error) {
	for _, u := range kqlSpanUnits {
		if n, ok := strings.CutSuffix(text, u.suffix); ok {
			f, err := strconv.ParseFloat(n, 64)
			return time.Duration(f * float64(u.unit)), err
		}
	}
	return 0, fmt.Errorf("not a timespan: %q", text)
}

type kqlParser struct {
	toks []kqlToken
	pos  int
	now  time.Time
}

func (p *kqlParser) peek() kqlToken {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return kqlToken{}
}

func (p *kqlParser) is(kind, text string) bool {
	t := p.peek()
	return t.kind == kind && t.text == text
}

// isAssign reports whether the next tokens are "name =".
func (p *kqlParser) isAssign() bool {
	return p.peek().kind == "id" && p.pos+1 < len(p.toks) && p.toks[p.pos+1] == kqlToken{"op", "="}
}

func (p *kqlParser) expect(kind, text string) error {
	if !p.is(kind, text) {
		return fmt.Errorf("want %q, have %q", text, p.peek().text)
	}
	p.pos++
	return nil
}

// kqlEpoch is now() for queries run without a clock of their own: the day
// after the lines of alert-traces.json were written.
var kqlEpoch = time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC)

// kqlRun runs a query and returns its rows, with now() at kqlEpoch.
func kqlRun(query string, rows []kqlRow) ([]kqlRow, error) {
	return kqlRunAt(query, rows, kqlEpoch)
}

// kqlRunAt runs a query with now() at now.
func kqlRunAt(query string, rows []kqlRow, now time.Time) ([]kqlRow, error) {
	toks, err := kqlLex(query)
	if err != nil {
		return nil, err
	}
	p := &kqlParser{toks: toks, now: now}
	out, err := p.query(rows)
	if err == nil && p.pos != len(p.toks) {
		err = fmt.Errorf("unexpected %q", p.peek().text)
	}
	return out, err
}

// kqlSummarizeCount runs a query ending in "| summarize N = count() by C"
// and returns the count by C.
func kqlSummarizeCount(query string, rows []kqlRow) (map[string]int, error) {
	i := strings.LastIndex(query, "| summarize ")
	if i < 0 {
		return nil, fmt.Errorf("no summarize")
	}
	m := regexp.MustCompile(`^\| summarize (\w+) = count\(\) by (\w+)\s*$`).FindStringSubmatch(query[i:])
	if m == nil {
		return nil, fmt.Errorf("want \"summarize N = count() by C\", not %q", query[i:])
	}
	got, err := kqlRun(query, rows)
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for _, r := range got {
		counts[kqlString(r[m[2]])] += int(r[m[1]].(float64))
	}
	return counts, nil
}

func (p *kqlParser) query(rows []kqlRow) ([]kqlRow, error) {
	var cur []kqlRow
	switch t := p.peek(); {
	case t.kind == "id" && t.text == "union":
		p.pos++
		if p.is("id", "isfuzzy") {
			p.pos += 3 // isfuzzy = true
		}
		for {
			if err := p.expect("op", "("); err != nil {
				return nil, err
			}
			sub, err := p.query(rows)
			if err != nil {
				return nil, err
			}
			if err := p.expect("op", ")"); err != nil {
				return nil, err
			}
			cur = append(cur, sub...)
			if !p.is("op", ",") {
				break
			}
			p.pos++
		}
	case t.kind == "id":
		p.pos++
		for _, r := range rows {
			if r["$table"] == t.text {
				cur = append(cur, r)
			}
		}
	default:
		return nil, fmt.Errorf("want a table, have %q", t.text)
	}
	for p.is("op", "|") {
		p.pos++
		var err error
		switch op := p.peek().text; op {
		case "where":
			p.pos++
			cur, err = p.where(cur)
		case "extend", "project":
			p.pos++
			cur, err = p.columns(cur, op == "project")
		case "summarize":
			p.pos++
			cur, err = p.summarize(cur)
		case "order", "sort":
			p.pos++
			if err = p.expect("id", "by"); err == nil {
				cur, err = p.orderBy(cur)
			}
		default:
			err = fmt.Errorf("the evaluator does not know the operator %q", op)
		}
		if err != nil {
			return nil, err
		}
	}
	return cur, nil
}

// eachRow evaluates the expression at the current position for each row
// (and once for an empty row, so that a query over no rows is still
// parsed), leaving the position after it.
func (p *kqlParser) eachRow(rows []kqlRow, fn func(i int, v any)) error {
	start := p.pos
	for i, r := range append(slices.Clip(rows), kqlRow{}) {
		p.pos = start
		v, err := p.expr(r)
		if err != nil {
			return err
		}
		if i < len(rows) {
			fn(i, v)
		}
	}
	return nil
}

func (p *kqlParser) where(cur []kqlRow) ([]kqlRow, error) {
	var next []kqlRow
	err := p.eachRow(cur, func(i int, v any) {
		if v == true {
			next = append(next, cur[i])
		}
	})
	return next, err
}

// columns reads "a = expr, b, ..." for extend (adding columns) or project
// (keeping only these).
func (p *kqlParser) columns(cur []kqlRow, project bool) ([]kqlRow, error) {
	next := make([]kqlRow, len(cur))
	for i, r := range cur {
		if project {
			next[i] = kqlRow{}
		} else {
			next[i] = maps.Clone(r)
		}
	}
	for {
		name := p.peek().text
		if p.isAssign() {
			p.pos += 2
		} else if project && p.peek().kind == "id" {
			// project col: the column as it is
		} else {
			return nil, fmt.Errorf("want a column name, have %q", name)
		}
		if err := p.eachRow(cur, func(i int, v any) { next[i][name] = v }); err != nil {
			return nil, err
		}
		if !p.is("op", ",") {
			return next, nil
		}
		p.pos++
	}
}

func (p *kqlParser) orderBy(cur []kqlRow) ([]kqlRow, error) {
	type key struct {
		col  string
		desc bool
	}
	var keys []key
	for {
		k := key{col: p.peek().text, desc: true} // KQL sorts descending by default
		p.pos++
		if p.is("id", "asc") || p.is("id", "desc") {
			k.desc = p.peek().text == "desc"
			p.pos++
		}
		keys = append(keys, k)
		if !p.is("op", ",") {
			break
		}
		p.pos++
	}
	out := slices.Clone(cur)
	slices.SortStableFunc(out, func(a, b kqlRow) int {
		for _, k := range keys {
			c := 0
			if kqlCompare("<", a[k.col], b[k.col]) == true {
				c = -1
			} else if kqlCompare(">", a[k.col], b[k.col]) == true {
				c = 1
			}
			if k.desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return 0
	})
	return out, nil
}

// kqlAgg is one aggregation of a summarize: out = fn(args).
type kqlAgg struct {
	out   string
	fn    string
	args  []int // token positions of the argument expressions
	names []string
	star  bool // arg_max(x, *)
}

func (p *kqlParser) summarize(cur []kqlRow) ([]kqlRow, error) {
	var aggs []kqlAgg
	skip := func() (int, string, error) { // an expression's start and its column name
		start, name := p.pos, p.peek().text
		if p.peek().kind != "id" {
			name = ""
		} else if p.pos+2 < len(p.toks) && p.toks[p.pos+1].text == "(" && p.toks[p.pos+2].kind == "id" {
			name = p.toks[p.pos+2].text // bin(timestamp, 1h) is timestamp
		}
		_, err := p.expr(kqlRow{})
		return start, name, err
	}
	for {
		a := kqlAgg{}
		if p.isAssign() {
			a.out = p.peek().text
			p.pos += 2
		}
		a.fn = p.peek().text
		p.pos++
		if err := p.expect("op", "("); err != nil {
			return nil, err
		}
		for !p.is("op", ")") {
			if p.is("op", "*") {
				a.star = true
				p.pos++
			} else {
				start, name, err := skip()
				if err != nil {
					return nil, err
				}
				a.args = append(a.args, start)
				a.names = append(a.names, name)
			}
			if p.is("op", ",") {
				p.pos++
			}
		}
		p.pos++
		if a.out == "" {
			a.out = a.fn + "_"
			if len(a.names) > 0 {
				a.out = a.fn + "_" + a.names[0]
			}
		}
		aggs = append(aggs, a)
		if !p.is("op", ",") {
			break
		}
		p.pos++
	}
	type byKey struct {
		name  string
		start int
	}
	var by []byKey
	if p.is("id", "by") {
		p.pos++
		for {
			k := byKey{}
			if p.isAssign() {
				k.name = p.peek().text
				p.pos += 2
			}
			start, name, err := skip()
			if err != nil {
				return nil, err
			}
			k.start = start
			if k.name == "" {
				k.name = name
			}
			by = append(by, k)
			if !p.is("op", ",") {
				break
			}
			p.pos++
		}
	}
	end := p.pos
	eval := func(start int, r kqlRow) any {
		p.pos = start
		v, _ := p.expr(r) // parsed without error above
		return v
	}
	type group struct {
		keys []any
		rows []kqlRow
	}
	var order []string
	groups := map[string]*group{}
	for _, r := range cur {
		var keys []any
		var id strings.Builder
		for _, k := range by {
			v := eval(k.start, r)
			keys = append(keys, v)
			id.WriteString(kqlString(v) + "\x00")
		}
		g := groups[id.String()]
		if g == nil {
			g = &group{keys: keys}
			groups[id.String()] = g
			order = append(order, id.String())
		}
		g.rows = append(g.rows, r)
	}
	if len(by) == 0 && len(groups) == 0 {
		groups[""], order = &group{}, []string{""}
	}
	var out []kqlRow
	for _, id := range order {
		g := groups[id]
		row := kqlRow{}
		for i, k := range by {
			row[k.name] = g.keys[i]
		}
		for _, a := range aggs {
			if err := p.aggregate(a, g.rows, row, eval); err != nil {
				return nil, err
			}
		}
		out = append(out, row)
	}
	p.pos = end
	return out, nil
}

func (p *kqlParser) aggregate(a kqlAgg, rows []kqlRow, row kqlRow, eval func(int, kqlRow) any) error {
	arg := func(i int) []any {
		var vs []any
		for _, r := range rows {
			vs = append(vs, eval(a.args[i], r))
		}
		return vs
	}
	best := func(op string) (kqlRow, any) {
		var br kqlRow
		var bv any
		for _, r := range rows {
			if v := eval(a.args[0], r); br == nil || kqlCompare(op, v, bv) == true {
				br, bv = r, v
			}
		}
		return br, bv
	}
	switch {
	case a.fn == "count" && len(a.args) == 0:
		row[a.out] = float64(len(rows))
	case a.fn == "countif" && len(a.args) == 1:
		n := 0
		for _, v := range arg(0) {
			if v == true {
				n++
			}
		}
		row[a.out] = float64(n)
	case a.fn == "dcount" && len(a.args) == 1:
		seen := map[string]bool{}
		for _, v := range arg(0) {
			seen[kqlString(v)] = true
		}
		row[a.out] = float64(len(seen))
	case a.fn == "sum" && len(a.args) == 1:
		s := 0.0
		for _, v := range arg(0) {
			f, _ := v.(float64)
			s += f
		}
		row[a.out] = s
	case (a.fn == "max" || a.fn == "min") && len(a.args) == 1:
		_, v := best(map[string]string{"max": ">", "min": "<"}[a.fn])
		row[a.out] = v
	case a.fn == "take_any" && len(a.args) == 1:
		vs := arg(0)
		row[a.out] = nil
		if len(vs) > 0 {
			row[a.out] = vs[0]
		}
	case a.fn == "percentile" && len(a.args) == 2:
		pct, _ := eval(a.args[1], kqlRow{}).(float64)
		row[a.out] = kqlNearestRank(kqlNumbers(arg(0)), pct)
		if a.out == "percentile_"+a.names[0] {
			return fmt.Errorf("name the percentile column (p95 = percentile(...)): KQL calls it percentile_%s_%v", a.names[0], pct)
		}
	case a.fn == "percentiles" && len(a.args) >= 2:
		// KQL names each column percentile_<column>_<p> (a decimal point
		// becoming _); the evaluator knows only that naming, of a column.
		if a.out != "percentiles_"+a.names[0] || a.names[0] == "" || !p.toks[a.args[0]+1].equal("op", ",") {
			return fmt.Errorf("percentiles: the evaluator knows only percentiles(<column>, p1, p2, ...) with KQL's column names percentile_<column>_<p>; extend a column first and rename in a project")
		}
		fs := kqlNumbers(arg(0))
		for i := 1; i < len(a.args); i++ {
			pct, ok := eval(a.args[i], kqlRow{}).(float64)
			if !ok || pct < 0 || pct > 100 {
				return fmt.Errorf("percentiles: argument %d is not a percentile between 0 and 100", i+1)
			}
			name := "percentile_" + a.names[0] + "_" + strings.ReplaceAll(strconv.FormatFloat(pct, 'f', -1, 64), ".", "_")
			row[name] = kqlNearestRank(fs, pct)
		}
	case (a.fn == "arg_max" || a.fn == "arg_min") && len(a.args) >= 1:
		r, v := best(map[string]string{"arg_max": ">", "arg_min": "<"}[a.fn])
		row[a.names[0]] = v
		for i := 1; i < len(a.args); i++ {
			row[a.names[i]] = eval(a.args[i], r)
		}
		if a.star {
			for k, x := range r {
				if _, set := row[k]; !set {
					row[k] = x
				}
			}
		}
	default:
		return fmt.Errorf("the evaluator does not know the aggregation %s with %d arguments", a.fn, len(a.args))
	}
	return nil
}

// kqlNumbers keeps the numbers of vs: an aggregation skips nulls and
// values of other kinds.
func kqlNumbers(vs []any) []float64 {
	var fs []float64
	for _, v := range vs {
		if f, ok := v.(float64); ok {
			fs = append(fs, f)
		}
	}
	return fs
}

// kqlNearestRank is the pct-th percentile of fs by nearest rank (KQL's
// percentile is an estimate that equals it on small sets), or null when
// fs is empty.
func kqlNearestRank(fs []float64, pct float64) any {
	if len(fs) == 0 {
		return nil
	}
	fs = slices.Sorted(slices.Values(fs))
	return fs[max(0, int(math.Ceil(pct/100*float64(len(fs))))-1)]
}

func (p *kqlParser) expr(r kqlRow) (any, error) {
	v, err := p.and(r)
	for err == nil && p.is("id", "or") {
		p.pos++
		var w any
		if w, err = p.and(r); err == nil {
			v = v == true || w == true
		}
	}
	return v, err
}

func (p *kqlParser) and(r kqlRow) (any, error) {
	v, err := p.cmp(r)
	for err == nil && p.is("id", "and") {
		p.pos++
		var w any
		if w, err = p.cmp(r); err == nil {
			v = v == true && w == true
		}
	}
	return v, err
}

func (p *kqlParser) cmp(r kqlRow) (any, error) {
	l, err := p.sum(r)
	if err != nil {
		return nil, err
	}
	t := p.peek()
	switch {
	case t.kind == "op" && slices.Contains([]string{"==", "!=", "<", "<=", ">", ">="}, t.text):
		p.pos++
		rv, err := p.sum(r)
		if err != nil {
			return nil, err
		}
		return kqlCompare(t.text, l, rv), nil
	case t.kind == "id" && (t.text == "in" || t.text == "has_any"):
		p.pos++
		list, err := p.list(r)
		if err != nil {
			return nil, err
		}
		return slices.ContainsFunc(list, func(x any) bool {
			if t.text == "in" {
				return kqlCompare("==", l, x) == true
			}
			return kqlHas(kqlString(l), kqlString(x))
		}), nil
	case t.kind == "id" && (t.text == "has" || t.text == "contains"):
		p.pos++
		rv, err := p.sum(r)
		if err != nil {
			return nil, err
		}
		if t.text == "has" {
			return kqlHas(kqlString(l), kqlString(rv)), nil
		}
		return strings.Contains(strings.ToLower(kqlString(l)), strings.ToLower(kqlString(rv))), nil
	case t.kind == "id" && !slices.Contains([]string{"and", "or", "by", "asc", "desc"}, t.text):
		return nil, fmt.Errorf("the evaluator does not know the operator %q", t.text)
	}
	return l, nil
}

// sum reads "a + b - c" on numbers, datetimes and timespans.
func (p *kqlParser) sum(r kqlRow) (any, error) {
	v, err := p.product(r)
	for err == nil && (p.is("op", "+") || p.is("op", "-")) {
		neg := p.peek().text == "-"
		p.pos++
		var w any
		if w, err = p.product(r); err == nil {
			v = kqlAdd(v, w, neg)
		}
	}
	return v, err
}

// product reads "a * b / c" on numbers; anything else, or a division by
// zero, is null.
func (p *kqlParser) product(r kqlRow) (any, error) {
	v, err := p.term(r)
	for err == nil && (p.is("op", "*") || p.is("op", "/")) {
		div := p.peek().text == "/"
		p.pos++
		var w any
		if w, err = p.term(r); err != nil {
			break
		}
		x, xok := v.(float64)
		y, yok := w.(float64)
		switch {
		case !xok || !yok || div && y == 0:
			v = nil
		case div:
			v = x / y
		default:
			v = x * y
		}
	}
	return v, err
}

func kqlAdd(a, b any, neg bool) any {
	sign := map[bool]float64{false: 1, true: -1}[neg]
	switch x := a.(type) {
	case float64:
		if y, ok := b.(float64); ok {
			return x + sign*y
		}
	case time.Time:
		if y, ok := b.(time.Duration); ok {
			return x.Add(time.Duration(sign) * y)
		}
		if y, ok := b.(time.Time); ok && neg {
			return x.Sub(y)
		}
	case time.Duration:
		if y, ok := b.(time.Duration); ok {
			return x + time.Duration(sign)*y
		}
	}
	return nil
}

func (p *kqlParser) list(r kqlRow) ([]any, error) {
	if err := p.expect("op", "("); err != nil {
		return nil, err
	}
	var list []any
	for !p.is("op", ")") {
		v, err := p.expr(r)
		if err != nil {
			return nil, err
		}
		list = append(list, v)
		if !p.is("op", ",") {
			break
		}
		p.pos++
	}
	return list, p.expect("op", ")")
}

func (p *kqlParser) term(r kqlRow) (any, error) {
	t := p.peek()
	p.pos++
	var v any
	switch {
	case t.kind == "str":
		v = t.text
	case t.kind == "num":
		f, err := strconv.ParseFloat(t.text, 64)
		if err != nil {
			return nil, err
		}
		v = f
	case t.kind == "span":
		d, err := kqlSpan(t.text)
		if err != nil {
			return nil, err
		}
		v = d
	case t.kind == "id" && (t.text == "true" || t.text == "false"):
		v = t.text == "true"
	case t.kind == "id" && p.is("op", "("):
		args, err := p.list(r)
		if err != nil {
			return nil, err
		}
		if v, err = p.call(t.text, args); err != nil {
			return nil, err
		}
	case t.kind == "id":
		v = r[t.text]
	case t.kind == "op" && t.text == "(":
		var err error
		if v, err = p.expr(r); err != nil {
			return nil, err
		}
		if err := p.expect("op", ")"); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unexpected %q", t.text)
	}
	for p.is("op", ".") {
		p.pos++
		name := p.peek().text
		p.pos++
		m, _ := v.(map[string]any)
		v = m[name]
	}
	return v, nil
}

func (p *kqlParser) call(name string, args []any) (any, error) {
	switch {
	case name == "tostring" && len(args) == 1:
		return kqlString(args[0]), nil
	case name == "toint" && len(args) == 1:
		f, ok := args[0].(float64)
		if !ok {
			n, err := strconv.ParseFloat(kqlString(args[0]), 64)
			if err != nil {
				return nil, nil
			}
			f = n
		}
		return float64(int64(f)), nil
	case name == "todouble" && len(args) == 1:
		switch x := args[0].(type) {
		case float64:
			return x, nil
		case string:
			if f, err := strconv.ParseFloat(strings.TrimSpace(x), 64); err == nil {
				return f, nil
			}
		}
		return nil, nil
	case (name == "isnull" || name == "isnotnull") && len(args) == 1:
		return (args[0] == nil) == (name == "isnull"), nil
	case name == "tobool" && len(args) == 1:
		if b, ok := args[0].(bool); ok {
			return b, nil
		}
		return strings.EqualFold(kqlString(args[0]), "true"), nil
	case name == "todatetime" && len(args) == 1:
		if t, ok := args[0].(time.Time); ok {
			return t, nil
		}
		if t, err := time.Parse(time.RFC3339Nano, kqlString(args[0])); err == nil {
			return t, nil
		}
		return nil, nil
	case name == "parse_json" && len(args) == 1:
		var v any
		if s, ok := args[0].(string); ok && json.Unmarshal([]byte(s), &v) == nil {
			return v, nil
		}
		return args[0], nil
	case name == "extract" && len(args) == 3:
		re, err := regexp.Compile(kqlString(args[0]))
		if err != nil {
			return nil, err
		}
		group, _ := args[1].(float64)
		m := re.FindStringSubmatch(kqlString(args[2]))
		if m == nil || int(group) >= len(m) {
			return "", nil
		}
		return m[int(group)], nil
	case name == "strcat" && len(args) >= 1:
		var b strings.Builder
		for _, a := range args {
			b.WriteString(kqlString(a))
		}
		return b.String(), nil
	case name == "iff" && len(args) == 3:
		if args[0] == true {
			return args[1], nil
		}
		return args[2], nil
	case name == "case" && len(args) >= 3 && len(args)%2 == 1:
		for i := 0; i+1 < len(args); i += 2 {
			if args[i] == true {
				return args[i+1], nil
			}
		}
		return args[len(args)-1], nil
	case name == "now" && len(args) == 0:
		return p.now, nil
	case name == "ago" && len(args) == 1:
		d, ok := args[0].(time.Duration)
		if !ok {
			return nil, fmt.Errorf("ago wants a timespan")
		}
		return p.now.Add(-d), nil
	case name == "bin" && len(args) == 2:
		d, ok := args[1].(time.Duration)
		if t, isTime := args[0].(time.Time); isTime && ok && d > 0 {
			return t.Truncate(d), nil
		}
		if f, isNum := args[0].(float64); isNum {
			size, _ := args[1].(float64)
			if size > 0 {
				return math.Floor(f/size) * size, nil
			}
		}
		return nil, nil
	}
	return nil, fmt.Errorf("the evaluator does not know %s with %d arguments", name, len(args))
}

// kqlHas is KQL's has: the right side is a whole term, or run of terms, of
// the left, ignoring case. Terms are runs of letters and digits: a match must
// not continue a term on either side.
func kqlHas(s, term string) bool {
	s, term = strings.ToLower(s), strings.ToLower(term)
	if term == "" {
		return false
	}
	isTermChar := func(b byte) bool { return b < 0x80 && (unicode.IsLetter(rune(b)) || unicode.IsDigit(rune(b))) }
	for i := 0; ; {
		j := strings.Index(s[i:], term)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(term)
		before := start == 0 || !isTermChar(term[0]) || !isTermChar(s[start-1])
		after := end == len(s) || !isTermChar(term[len(term)-1]) || !isTermChar(s[end])
		if before && after {
			return true
		}
		i = start + 1
	}
}

func kqlString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case time.Duration:
		return x.String()
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// kqlCompare compares two values of one kind: numbers, datetimes,
// timespans, or strings. KQL does not compare across kinds; a query that
// does is wrong, and compares false here.
func kqlCompare(op string, l, r any) any {
	if l == nil || r == nil {
		return false
	}
	kind := func(v any) string {
		switch v.(type) {
		case float64:
			return "num"
		case time.Time:
			return "time"
		case time.Duration:
			return "span"
		}
		return "str"
	}
	if kind(l) != kind(r) {
		return false
	}
	var c int
	switch x := l.(type) {
	case float64:
		c = cmp.Compare(x, r.(float64))
	case time.Time:
		c = x.Compare(r.(time.Time))
	case time.Duration:
		c = cmp.Compare(x, r.(time.Duration))
	default:
		c = strings.Compare(kqlString(l), kqlString(r))
	}
	switch op {
	case "==":
		return c == 0
	case "!=":
		return c != 0
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	default:
		return c >= 0
	}
}
