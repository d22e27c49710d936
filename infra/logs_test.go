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
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
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

// TestReadmeAlertsSelectHandlerLines runs the queries of README.md's alert
// table: each selects exactly the lines of its events.
func TestReadmeAlertsSelectHandlerLines(t *testing.T) {
	t.Parallel()
	readme := readText(t, filepath.Join(repoRoot, "README.md"))
	rows := alertTraces(t)
	// alert name -> which handler lines it must select
	want := map[string]func(line map[string]any) bool{
		"needs a person": func(l map[string]any) bool {
			return l["event"] == "token.refresh_failed" && l["permanent"] == true
		},
		"client secret expiring": func(l map[string]any) bool { return l["event"] == "secret.expiring" },
		"refresh token not in the store": func(l map[string]any) bool {
			return l["event"] == "persist.pending" || l["event"] == "persist.lost"
		},
		"lock trouble": func(l map[string]any) bool {
			return l["event"] == "lock.lost" || l["event"] == "lock.unavailable"
		},
		"standby grant used": func(l map[string]any) bool {
			return l["event"] == "standby.promoted" || l["event"] == "standby.lost"
		},
	}
	row := regexp.MustCompile("(?m)^\\| ([a-z ]+) \\| `(traces .*?)` \\|")
	found := 0
	for _, m := range row.FindAllStringSubmatch(readme, -1) {
		name, query := m[1], strings.ReplaceAll(m[2], `\|`, "|")
		selects, ok := want[name]
		if !ok {
			t.Errorf("README.md alert %q: no expectation here; add it to this test", name)
			continue
		}
		found++
		t.Run(name, func(t *testing.T) {
			got, err := kqlRun(query, rows)
			if err != nil {
				t.Fatalf("%s: %v", query, err)
			}
			var wantRows []kqlRow
			for _, r := range rows {
				if selects(lineOf(t, r)) {
					wantRows = append(wantRows, r)
				}
			}
			if len(wantRows) == 0 {
				t.Fatalf("alert-traces.json has no line this alert must select")
			}
			if len(got) != len(wantRows) {
				t.Errorf("%s selects %d rows, want %d", query, len(got), len(wantRows))
			}
			for _, r := range got {
				if !selects(lineOf(t, r)) {
					t.Errorf("%s selects %s", query, r["message"])
				}
			}
		})
	}
	if found != len(want) {
		t.Errorf("README.md's alert table has %d of the %d alerts this test knows", found, len(want))
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

// ---------------------------------------------------------------------------
// A KQL evaluator for the subset the alert queries use: union of
// parenthesized queries; where; extend; summarize N = count() by C; and, or;
// ==, !=, <, <=, >, >=, in, has, has_any, contains; tostring, toint, tobool,
// parse_json, extract; member access. Anything else is an error, so a query
// that outgrows it fails this test instead of passing unchecked.

type kqlToken struct {
	kind string // "id", "str", "num", "op"
	text string
}

func kqlLex(src string) ([]kqlToken, error) {
	var toks []kqlToken
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
			for j < len(src) && (src[j] == '_' || unicode.IsLetter(rune(src[j])) || unicode.IsDigit(rune(src[j]))) {
				j++
			}
			toks = append(toks, kqlToken{"id", src[i:j]})
			i = j
		case unicode.IsDigit(rune(c)):
			j := i
			for j < len(src) && (unicode.IsDigit(rune(src[j])) || src[j] == '.') {
				j++
			}
			toks = append(toks, kqlToken{"num", src[i:j]})
			i = j
		default:
			op := string(c)
			if i+1 < len(src) && slices.Contains([]string{"==", "!=", ">=", "<="}, src[i:i+2]) {
				op = src[i : i+2]
			}
			if !strings.Contains("|(),.=<>![]", string(c)) {
				return nil, fmt.Errorf("unexpected %q at %d", c, i)
			}
			toks = append(toks, kqlToken{"op", op})
			i += len(op)
		}
	}
	return toks, nil
}

type kqlParser struct {
	toks []kqlToken
	pos  int
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

func (p *kqlParser) expect(kind, text string) error {
	if !p.is(kind, text) {
		return fmt.Errorf("want %q, have %q", text, p.peek().text)
	}
	p.pos++
	return nil
}

// kqlRun runs a query without summarize and returns its rows.
func kqlRun(query string, rows []kqlRow) ([]kqlRow, error) {
	toks, err := kqlLex(query)
	if err != nil {
		return nil, err
	}
	p := &kqlParser{toks: toks}
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
	m := regexp.MustCompile(`^\| summarize \w+ = count\(\) by (\w+)\s*$`).FindStringSubmatch(query[i:])
	if m == nil {
		return nil, fmt.Errorf("the evaluator knows only \"summarize N = count() by C\", not %q", query[i:])
	}
	got, err := kqlRun(query[:i], rows)
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for _, r := range got {
		counts[kqlString(r[m[1]])]++
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
		switch op := p.peek().text; op {
		case "where":
			p.pos++
			start := p.pos
			var next []kqlRow
			for _, r := range cur {
				p.pos = start
				v, err := p.expr(r)
				if err != nil {
					return nil, err
				}
				if v == true {
					next = append(next, r)
				}
			}
			if len(cur) == 0 { // parse it anyway, to find errors
				p.pos = start
				if _, err := p.expr(kqlRow{}); err != nil {
					return nil, err
				}
			}
			cur = next
		case "extend":
			p.pos++
			name := p.peek().text
			p.pos++
			if err := p.expect("op", "="); err != nil {
				return nil, err
			}
			start := p.pos
			next := make([]kqlRow, 0, len(cur))
			for _, r := range append(cur, kqlRow{}) {
				p.pos = start
				v, err := p.expr(r)
				if err != nil {
					return nil, err
				}
				c := kqlRow{}
				for k, x := range r {
					c[k] = x
				}
				c[name] = v
				next = append(next, c)
			}
			cur = next[:len(cur)]
		default:
			return nil, fmt.Errorf("the evaluator does not know the operator %q", op)
		}
	}
	return cur, nil
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
	l, err := p.term(r)
	if err != nil {
		return nil, err
	}
	t := p.peek()
	switch {
	case t.kind == "op" && slices.Contains([]string{"==", "!=", "<", "<=", ">", ">="}, t.text):
		p.pos++
		rv, err := p.term(r)
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
		rv, err := p.term(r)
		if err != nil {
			return nil, err
		}
		if t.text == "has" {
			return kqlHas(kqlString(l), kqlString(rv)), nil
		}
		return strings.Contains(strings.ToLower(kqlString(l)), strings.ToLower(kqlString(rv))), nil
	case t.kind == "id" && !slices.Contains([]string{"and", "or"}, t.text):
		return nil, fmt.Errorf("the evaluator does not know the operator %q", t.text)
	}
	return l, nil
}

func (p *kqlParser) list(r kqlRow) ([]any, error) {
	if err := p.expect("op", "("); err != nil {
		return nil, err
	}
	var list []any
	for {
		v, err := p.term(r)
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
	case t.kind == "id" && (t.text == "true" || t.text == "false"):
		v = t.text == "true"
	case t.kind == "id" && p.is("op", "("):
		args, err := p.list(r)
		if err != nil {
			return nil, err
		}
		if v, err = kqlCall(t.text, args); err != nil {
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

func kqlCall(name string, args []any) (any, error) {
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
	case name == "tobool" && len(args) == 1:
		if b, ok := args[0].(bool); ok {
			return b, nil
		}
		return strings.EqualFold(kqlString(args[0]), "true"), nil
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
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

func kqlCompare(op string, l, r any) any {
	if l == nil || r == nil {
		return false
	}
	lf, lnum := l.(float64)
	rf, rnum := r.(float64)
	if lnum != rnum {
		// KQL does not compare a number with a string; a query that
		// does is wrong.
		return false
	}
	var c int
	if lnum {
		c = map[bool]int{true: -1, false: 0}[lf < rf] + map[bool]int{true: 1, false: 0}[lf > rf]
	} else {
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
