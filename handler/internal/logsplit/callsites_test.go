package logsplit

import (
	"context"
	"encoding/json"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// handlerDir is the handler's source tree; go test runs in this package's
// directory.
const handlerDir = "../.."

// callSite is one slog call in the handler's non-test source.
type callSite struct {
	pos    string
	levels []slog.Level // one when the level is a constant; every level when not
	msg    *string      // nil when not a constant
	attrs  []attr
	rest   bool // the call passes an attribute slice (args...)
}

// attr is one key-value pair of a call; a nil value is not a constant.
type attr struct {
	key   string
	value any
}

func (c callSite) event() string {
	for _, a := range c.attrs {
		if a.key == "event" {
			if s, ok := a.value.(string); ok {
				return s
			}
		}
	}
	return ""
}

// loggerNames are the names the handler gives its *slog.Logger values: a
// call X.Info(...) is a log call when X's last name is one of these.
var loggerNames = []string{"log", "Logger", "logger"}

var levelByMethod = map[string]slog.Level{
	"Debug": slog.LevelDebug, "Info": slog.LevelInfo, "Warn": slog.LevelWarn, "Error": slog.LevelError,
	"DebugContext": slog.LevelDebug, "InfoContext": slog.LevelInfo, "WarnContext": slog.LevelWarn, "ErrorContext": slog.LevelError,
}

var levelByName = map[string]slog.Level{
	"LevelDebug": slog.LevelDebug, "LevelInfo": slog.LevelInfo, "LevelWarn": slog.LevelWarn, "LevelError": slog.LevelError,
}

var allLevels = []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError}

// scanCallSites finds every log call in the handler's non-test Go files.
func scanCallSites(t *testing.T) []callSite {
	t.Helper()
	fset := token.NewFileSet()
	var sites []callSite
	err := filepath.WalkDir(handlerDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testdata" {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if call, ok := n.(*ast.CallExpr); ok {
				if s, ok := logCall(call); ok {
					s.pos = fset.Position(call.Pos()).String()
					sites = append(sites, s)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sites
}

func logCall(call *ast.CallExpr) (callSite, bool) {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || !slices.Contains(loggerNames, lastName(sel.X)) {
		return callSite{}, false
	}
	args := call.Args
	var s callSite
	if lvl, ok := levelByMethod[sel.Sel.Name]; ok {
		s.levels = []slog.Level{lvl}
		if strings.HasSuffix(sel.Sel.Name, "Context") {
			args = args[1:]
		}
	} else if sel.Sel.Name == "Log" || sel.Sel.Name == "LogAttrs" {
		args = args[1:] // ctx
		s.levels = allLevels
		if ls, ok := args[0].(*ast.SelectorExpr); ok && lastName(ls.X) == "slog" {
			if lvl, ok := levelByName[ls.Sel.Name]; ok {
				s.levels = []slog.Level{lvl}
			}
		}
		args = args[1:]
	} else {
		return callSite{}, false
	}
	if len(args) == 0 {
		return callSite{}, false
	}
	if m, ok := stringConst(args[0]); ok {
		s.msg = &m
	}
	args = args[1:]
	if call.Ellipsis.IsValid() {
		s.rest = true
		args = args[:len(args)-1]
	}
	for len(args) > 0 {
		// slog.String("k", v) and friends, or "k", v.
		if c, ok := args[0].(*ast.CallExpr); ok {
			if fs, ok := c.Fun.(*ast.SelectorExpr); ok && lastName(fs.X) == "slog" && len(c.Args) == 2 {
				if k, ok := stringConst(c.Args[0]); ok {
					s.attrs = append(s.attrs, attr{k, constant(c.Args[1])})
				}
			}
			args = args[1:]
			continue
		}
		k, ok := stringConst(args[0])
		if !ok || len(args) < 2 {
			args = args[1:]
			continue
		}
		s.attrs = append(s.attrs, attr{k, constant(args[1])})
		args = args[2:]
	}
	return s, true
}

func lastName(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.Ident:
		return x.Name
	case *ast.SelectorExpr:
		return x.Sel.Name
	}
	return ""
}

func stringConst(e ast.Expr) (string, bool) {
	if bl, ok := e.(*ast.BasicLit); ok && bl.Kind == token.STRING {
		s, err := strconv.Unquote(bl.Value)
		return s, err == nil
	}
	return "", false
}

// constant is the value of a string, number or bool literal, or nil.
func constant(e ast.Expr) any {
	if s, ok := stringConst(e); ok {
		return s
	}
	if bl, ok := e.(*ast.BasicLit); ok && bl.Kind == token.INT {
		n, _ := strconv.Atoi(bl.Value)
		return n
	}
	if id, ok := e.(*ast.Ident); ok && (id.Name == "true" || id.Name == "false") {
		return id.Name == "true"
	}
	return nil
}

// record builds the record the call site writes at level, with v in place
// of every value that is not a constant.
func (c callSite) record(level slog.Level, v string) slog.Record {
	msg := v
	if c.msg != nil {
		msg = *c.msg
	}
	r := slog.NewRecord(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), level, msg, 0)
	for _, a := range c.attrs {
		val := a.value
		if val == nil {
			val = v
		}
		r.AddAttrs(slog.Any(a.key, val))
	}
	if c.rest {
		r.AddAttrs(slog.String(v, v), slog.Any("list", []string{v, v}))
	}
	return r
}

// TestEveryLogLineReachesItsSeverity runs every log call in the handler,
// with every adversarial value in place of what the call computes, through
// the Handler and the host's reading of the output, and checks that
// Application Insights gets the severity of the slog level.
func TestEveryLogLineReachesItsSeverity(t *testing.T) {
	sites := scanCallSites(t)
	events := map[string]bool{}
	for _, s := range sites {
		events[s.event()] = true
	}
	// The scan finds the calls it must: a constant level, a computed one,
	// an attribute slice, and the events the alerts read.
	for _, ev := range []string{"token.refresh_failed", "secret.expiring", "lock.lost", "http.request", "handler.start", "sweep.failed"} {
		if !events[ev] {
			t.Errorf("the scan of %s found no log call with event %q (%d calls found)", handlerDir, ev, len(sites))
		}
	}
	if len(sites) < 30 {
		t.Errorf("the scan found %d log calls; it no longer recognizes them", len(sites))
	}
	for _, s := range sites {
		if strings.Contains(strings.ToLower(s.event()), "warn") {
			// Escaped in ERROR lines, it would not match a query's
			// `message has "<event>"`.
			t.Errorf("%s: event %q contains \"warn\"; name it otherwise", s.pos, s.event())
		}
		for _, level := range s.levels {
			for _, v := range adversarial {
				c := newCapture(slog.LevelDebug)
				if err := c.h.Handle(context.Background(), s.record(level, v)); err != nil {
					t.Fatal(err)
				}
				ws := c.lines()
				if len(ws) != 1 {
					t.Errorf("%s at %s with %.20q: %d lines, want 1", s.pos, level, v, len(ws))
					continue
				}
				tr := TraceOf(ws[0].stream, ws[0].line)
				if tr.SeverityLevel != wantSeverity(level) || tr.CustomDimensions["Category"] != ConsoleCategory {
					t.Errorf("%s at %s with %.20q: the host logs severity %d under %s, want %d under %s",
						s.pos, level, v, tr.SeverityLevel, tr.CustomDimensions["Category"], wantSeverity(level), ConsoleCategory)
				}
				var got map[string]any
				if err := json.Unmarshal([]byte(tr.Message), &got); err != nil || (s.event() != "" && got["event"] != s.event()) {
					t.Errorf("%s: the trace message %.80q does not decode to event %q: %v", s.pos, tr.Message, s.event(), err)
				}
			}
		}
	}
}

// TestHTTPServerErrorLog: net/http's ErrorLog (server.httpServer) writes
// through the same handler at WARN.
func TestHTTPServerErrorLog(t *testing.T) {
	c := newCapture(slog.LevelInfo)
	slog.NewLogLogger(c.h, slog.LevelWarn).Printf("http: TLS handshake error from 10.0.0.1:1234: EOF\nsecond line")
	ws := c.lines()
	if len(ws) != 1 || severity(HostLevel(ws[0].stream, ws[0].line, true)) != 2 {
		t.Errorf("wrote %+v, want one Warning line", ws)
	}
}

var update = flag.Bool("update", false, "rewrite testdata/alert-traces.json")

// alertEvents are the events the alert and workbook queries select
// (infra/modules/*.kql, infra/modules/workbook/*.kql, README.md's alert
// table). The rows the host makes of them are in testdata/alert-traces.json,
// which infra/logs_test.go, alerts_test.go and workbook_test.go run the
// queries over.
var alertEvents = []string{"token.refresh_failed", "secret.expiring", "persist.pending", "persist.lost", "lock.lost", "lock.unavailable", "sweep.failed", "http.request", "standby.promoted", "standby.lost", "refresh.interrupted_lost", "token.refreshed", "token_endpoint.issued"}

// queriedAttrs are the attributes besides event, connection and permanent
// that those queries read, each with a value of the type its call sites
// log; a line carries the ones its call site logs.
var queriedAttrs = []slog.Attr{
	slog.String("category", "reauthorize"),
	slog.String("remediation", "Re-authorize the connection."),
	slog.String("secret", "client-secret-name"),
	slog.String("expires_on", "2026-01-20T00:00:00Z"),
	slog.Int("days_left", 17),
	slog.Int64("duration_ms", 250),                 // token.refreshed
	slog.Duration("elapsed", 120*time.Millisecond), // token_endpoint.issued
}

// TestAlertTracesFile writes one line per alert event and level its call
// sites use, for connection "xero" and for "warner-1" (a name that contains
// "warn"), and keeps testdata/alert-traces.json equal to the traces rows the
// host makes of them. The lines carry what the queries read (event,
// connection, permanent and queriedAttrs where the call site logs them), not the call site's
// message and other attributes, so that the file changes only when an alert
// event's level does: run with -update then, or after changing the list.
func TestAlertTracesFile(t *testing.T) {
	sites := scanCallSites(t)
	var rows []Trace
	for _, ev := range alertEvents {
		seen := map[slog.Level]bool{}
		for _, s := range sites {
			if s.event() != ev {
				continue
			}
			for _, level := range s.levels {
				if seen[level] {
					continue
				}
				seen[level] = true
				for _, conn := range []string{"xero", "warner-1"} {
					c := newCapture(slog.LevelDebug)
					r := slog.NewRecord(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), level, "message", 0)
					r.AddAttrs(slog.String("event", ev), slog.String("connection", conn))
					if hasKey(s, "permanent") {
						r.AddAttrs(slog.Bool("permanent", conn == "warner-1"))
					}
					for _, a := range queriedAttrs {
						if hasKey(s, a.Key) {
							r.AddAttrs(a)
						}
					}
					if err := c.h.Handle(context.Background(), r); err != nil {
						t.Fatal(err)
					}
					for _, w := range c.lines() {
						rows = append(rows, TraceOf(w.stream, w.line))
					}
				}
			}
		}
		if len(seen) == 0 {
			t.Errorf("alert event %s: no log call writes it; update the alert queries that select it and alertEvents", ev)
		}
	}
	got, err := json.MarshalIndent(rows, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	const file = "testdata/alert-traces.json"
	if *update {
		if err := os.WriteFile(file, got, 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v; run go test ./handler/internal/logsplit -run TestAlertTracesFile -update", err)
	}
	if string(want) != string(got) {
		t.Errorf("%s is not what the handler writes now; run go test ./handler/internal/logsplit -run TestAlertTracesFile -update, then go test ./infra", file)
	}
}

func hasKey(s callSite, key string) bool {
	return slices.ContainsFunc(s.attrs, func(a attr) bool { return a.key == key })
}
