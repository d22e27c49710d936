package logsplit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// written is one line the handler wrote, as the host reads it.
type written struct {
	stream Stream
	line   string
}

// capture writes through a Handler at level into two buffers and returns the
// lines of each, split as the host splits them.
type capture struct {
	out, err bytes.Buffer
	h        *Handler
}

func newCapture(level slog.Level) *capture {
	c := &capture{}
	c.h = New(&c.out, &c.err, level)
	return c
}

func (c *capture) lines() []written {
	var ws []written
	for _, l := range Lines(c.out.String()) {
		ws = append(ws, written{Stdout, l})
	}
	for _, l := range Lines(c.err.String()) {
		ws = append(ws, written{Stderr, l})
	}
	return ws
}

// wantSeverity is the Application Insights severityLevel a record at l must
// reach: the host has no Verbose for worker output, so DEBUG is Information.
func wantSeverity(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 2
	default:
		return 1
	}
}

func TestLevelsReachTheirSeverity(t *testing.T) {
	tests := []struct {
		level  slog.Level
		stream Stream
	}{
		{slog.LevelDebug, Stdout},
		{slog.LevelInfo, Stdout},
		{slog.LevelInfo + 2, Stdout},
		{slog.LevelWarn, Stderr},
		{slog.LevelWarn + 2, Stderr},
		{slog.LevelError, Stderr},
		{slog.LevelError + 4, Stderr},
	}
	for _, tt := range tests {
		t.Run(tt.level.String(), func(t *testing.T) {
			c := newCapture(slog.LevelDebug)
			slog.New(c.h).Log(context.Background(), tt.level, "a plain message", "event", "x.y")
			ws := c.lines()
			if len(ws) != 1 || ws[0].stream != tt.stream {
				t.Fatalf("wrote %+v, want one line on stream %d", ws, tt.stream)
			}
			// Both settings of UseStdErrorStreamForErrorsOnly: the level
			// name alone carries the severity.
			for _, errorsOnly := range []bool{true, false} {
				if got := severity(HostLevel(ws[0].stream, ws[0].line, errorsOnly)); got != wantSeverity(tt.level) {
					t.Errorf("errorsOnly=%v: the host logs %q at severity %d, want %d", errorsOnly, ws[0].line, got, wantSeverity(tt.level))
				}
			}
			if tr := TraceOf(ws[0].stream, ws[0].line); tr.Message != ws[0].line || tr.CustomDimensions["Category"] != ConsoleCategory {
				t.Errorf("trace %+v, want the raw line under %s", tr, ConsoleCategory)
			}
		})
	}
}

// adversarial are values that would change the host's reading of a line
// written naively: "warn" anywhere downgrades a stderr line to Warning, a
// line break splits it, the console-log prefix reroutes it.
var adversarial = []string{
	"",
	"secret.expiry_warning",
	"a WARNING from the provider",
	"wArN",
	`back\warn\\warn`,
	"warner-1",
	"Error: failed, severe",
	"LanguageWorkerConsoleLog warn",
	"azfuncjsonlog:{}",
	"one\ntwo\rthree\r\nfour",
	"\u2028\u2029\x00\x1b",
	`"quoted" and <html> & \u0077arn`,
	"ｗａｒｎ ıſ",
	strings.Repeat("warn", 2000),
}

func TestErrorLinesNeverSayWarn(t *testing.T) {
	for _, v := range adversarial {
		t.Run(fmt.Sprintf("%.20q", v), func(t *testing.T) {
			c := newCapture(slog.LevelDebug)
			var plain bytes.Buffer
			for _, h := range []slog.Handler{c.h, slog.NewJSONHandler(&plain, nil)} {
				log := slog.New(h).With("connection", v).WithGroup(v)
				log.Error(v, v, v, "event", "token.refresh_failed", "nested", slog.GroupValue(slog.String(v, v)))
			}
			ws := c.lines()
			if len(ws) != 1 || ws[0].stream != Stderr {
				t.Fatalf("wrote %+v, want one line on stderr", ws)
			}
			if lvl := HostLevel(Stderr, ws[0].line, true); lvl != LevelError {
				t.Errorf("the host logs %q at %s, want Error", ws[0].line, lvl)
			}
			// The line decodes to what slog's own JSON handler wrote.
			var got, want map[string]any
			if err := json.Unmarshal([]byte(ws[0].line), &got); err != nil {
				t.Fatalf("not JSON: %v: %q", err, ws[0].line)
			}
			if err := json.Unmarshal(plain.Bytes(), &want); err != nil {
				t.Fatal(err)
			}
			delete(got, "time")
			delete(want, "time")
			if !reflect.DeepEqual(got, want) {
				t.Errorf("decodes to\n%v\nwant\n%v", got, want)
			}
		})
	}
}

func TestWarnLinesSayWarnAndInfoLinesStayOnStdout(t *testing.T) {
	for _, v := range adversarial {
		c := newCapture(slog.LevelDebug)
		log := slog.New(c.h)
		log.Warn(v, "event", "secret.expiring", "connection", v)
		log.Info(v, "event", "token.refreshed", "connection", v)
		log.Debug(v, "event", "http.request", "connection", v)
		ws := c.lines()
		if len(ws) != 3 {
			t.Fatalf("%q: wrote %+v, want three lines", v, ws)
		}
		wantLevels := map[Stream][]LogLevel{Stdout: {LevelInformation, LevelInformation}, Stderr: {LevelWarning}}
		gotLevels := map[Stream][]LogLevel{}
		for _, w := range ws {
			gotLevels[w.stream] = append(gotLevels[w.stream], HostLevel(w.stream, w.line, true))
		}
		if !reflect.DeepEqual(gotLevels, wantLevels) {
			t.Errorf("%q: host levels %v, want %v", v, gotLevels, wantLevels)
		}
	}
}

func TestLevelFilter(t *testing.T) {
	c := newCapture(slog.LevelWarn)
	log := slog.New(c.h)
	log.Info("dropped", "event", "a.b")
	log.Debug("dropped", "event", "a.b")
	log.Warn("kept", "event", "a.b")
	if c.out.Len() != 0 || strings.Count(c.err.String(), "\n") != 1 {
		t.Errorf("stdout %q, stderr %q: want only the WARN line", c.out.String(), c.err.String())
	}
	if c.h.Enabled(context.Background(), slog.LevelInfo) || !c.h.Enabled(context.Background(), slog.LevelError) {
		t.Error("Enabled does not follow the level")
	}
}

// TestConcurrentLinesStayWhole: WARN and ERROR lines share stderr through
// two slog handlers; no line may be cut into another.
func TestConcurrentLinesStayWhole(t *testing.T) {
	var out, errw bytes.Buffer
	log := slog.New(New(&unsyncWriter{b: &out}, &unsyncWriter{b: &errw}, slog.LevelDebug))
	var wg sync.WaitGroup
	const n = 200
	for i := range 8 {
		wg.Go(func() {
			for j := range n {
				long := strings.Repeat("x", 5000) // above PIPE_BUF, so the OS would not keep it whole
				log.Error("e", "i", i, "j", j, "pad", long)
				log.Warn("w", "i", i, "j", j, "pad", long)
				log.Info("i", "i", i, "j", j)
			}
		})
	}
	wg.Wait()
	for name, b := range map[string]*bytes.Buffer{"stdout": &out, "stderr": &errw} {
		for _, l := range Lines(b.String()) {
			if !json.Valid([]byte(l)) {
				t.Fatalf("%s: a line is not whole JSON: %.80q", name, l)
			}
		}
	}
	if got := len(Lines(errw.String())); got != 8*n*2 {
		t.Errorf("stderr has %d lines, want %d", got, 8*n*2)
	}
}

// unsyncWriter is a writer with no lock of its own, like a pipe that takes
// a long line in more than one piece.
type unsyncWriter struct{ b *bytes.Buffer }

func (u *unsyncWriter) Write(p []byte) (int, error) {
	half := len(p) / 2
	u.b.Write(p[:half])
	time.Sleep(0) // let another goroutine in between the halves
	u.b.Write(p[half:])
	return len(p), nil
}

func TestEscapeWarn(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"a":"b"}`, `{"a":"b"}`},
		{`{"msg":"warn"}`, `{"msg":"\u0077arn"}`},
		{`{"msg":"WARNING Warn"}`, `{"msg":"\u0057ARNING \u0057arn"}`},
		{`{"warn":"x\\warn"}`, `{"\u0077arn":"x\\\u0077arn"}`},
		{`{"m":"warwarn"}`, `{"m":"war\u0077arn"}`},
		{`{"m":"war"}`, `{"m":"war"}`},
	}
	for _, tt := range tests {
		got := string(EscapeWarn([]byte(tt.in)))
		if got != tt.want {
			t.Errorf("EscapeWarn(%s) = %s, want %s", tt.in, got, tt.want)
		}
		var a, b any
		if json.Unmarshal([]byte(tt.in), &a) != nil || json.Unmarshal([]byte(got), &b) != nil || !reflect.DeepEqual(a, b) {
			t.Errorf("EscapeWarn(%s) = %s decodes differently", tt.in, got)
		}
	}
}

// FuzzErrorLine: whatever an ERROR record carries, its line is one line,
// decodes to the record's message, and the host logs it as Error.
func FuzzErrorLine(f *testing.F) {
	for _, v := range adversarial {
		f.Add(v, v)
	}
	f.Fuzz(func(t *testing.T, msg, value string) {
		c := newCapture(slog.LevelDebug)
		slog.New(c.h).Error(msg, "event", "x.y", "error", value)
		ws := c.lines()
		if len(ws) != 1 || ws[0].stream != Stderr {
			t.Fatalf("wrote %+v, want one stderr line", ws)
		}
		if lvl := HostLevel(Stderr, ws[0].line, true); lvl != LevelError {
			t.Fatalf("host level %s for %q", lvl, ws[0].line)
		}
		var r struct{ Msg, Error string }
		if err := json.Unmarshal([]byte(ws[0].line), &r); err != nil {
			t.Fatalf("not JSON: %v", err)
		}
		if r.Msg != strings.ToValidUTF8(msg, "\uFFFD") || r.Error != strings.ToValidUTF8(value, "\uFFFD") {
			t.Fatalf("decodes to %q %q, want %q %q", r.Msg, r.Error, msg, value)
		}
	})
}

// TestHostPort pins the port to the host's branches
// (WorkerProcess.ParseErrorMessageAndLog, OnOutputDataReceived).
func TestHostPort(t *testing.T) {
	tests := []struct {
		stream     Stream
		line       string
		errorsOnly bool
		want       LogLevel
	}{
		{Stdout, `{"level":"ERROR"}`, true, LevelInformation},
		{Stdout, "warn", true, LevelInformation},
		{Stderr, "a Warning", true, LevelWarning},
		{Stderr, "a Warning and an error", false, LevelWarning},
		{Stderr, "plain", true, LevelError},
		{Stderr, "plain", false, LevelInformation},
		{Stderr, "it FAILED", false, LevelError},
		{Stderr, "Severe", false, LevelError},
		{Stderr, "Unhandled Exception", false, LevelError},
	}
	for _, tt := range tests {
		if got := HostLevel(tt.stream, tt.line, tt.errorsOnly); got != tt.want {
			t.Errorf("HostLevel(%d, %q, %v) = %s, want %s", tt.stream, tt.line, tt.errorsOnly, got, tt.want)
		}
	}
	if got := Lines("a\r\nb\rc\n\nd"); !reflect.DeepEqual(got, []string{"a", "b", "c", "", "d"}) {
		t.Errorf("Lines = %q", got)
	}
	if got := TraceOf(Stderr, "languageworkerconsolelogwarn: x"); got.Message != "warn: x" || !strings.HasPrefix(got.CustomDimensions["Category"], "Worker.") || got.SeverityLevel != 2 {
		t.Errorf("a console-log line: %+v", got)
	}
}
