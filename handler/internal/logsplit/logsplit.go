// Package logsplit writes the handler's slog records the way the Azure
// Functions host reads a custom handler's output, so that each record reaches
// Application Insights with the severity of its slog level.
//
// The host reads the worker's stdout and stderr line by line
// (azure-functions-host src/WebJobs.Script/Workers/ProcessManagement/WorkerProcess.cs):
//
//   - OnOutputDataReceived logs every stdout line at Information, whatever it
//     says;
//   - ParseErrorMessageAndLog logs a stderr line at Warning when it contains
//     "warn" (ordinal, case-insensitive), otherwise at Error: always for a
//     custom handler (HttpWorkerDescription.UseStdErrorStreamForErrorsOnly
//     defaults to true), and for other workers when the line contains
//     "error", "fail" or "severe".
//
// So records below slog.LevelWarn go to stdout and the rest to stderr, one
// JSON object per line. A WARN line contains "warn" in its level ("WARN").
// An ERROR line contains "error" in its level ("ERROR"), so it is Error
// whatever the flag; but a message or attribute containing "warn" (an
// error text that quotes a warning, a connection named "warner") would make
// the host log it as Warning. Every such occurrence in an ERROR line is
// written with its first letter JSON-escaped ("\u0077arn"): the line parses
// to the same object (parse_json in KQL sees "warn"), and the raw line the
// host searches no longer contains "warn".
package logsplit

import (
	"context"
	"io"
	"log/slog"
	"sync"
)

// Handler routes each record by level to one of two JSON line streams.
// DEBUG and INFO go to stdout; WARN and ERROR (and every level in between or
// above) go to stderr. The host gives stdout no severity below Information,
// so DEBUG records reach Application Insights as Information.
type Handler struct {
	out  slog.Handler // levels below WARN, to stdout
	warn slog.Handler // WARN up to ERROR, to stderr as written
	err  slog.Handler // ERROR and above, to stderr with "warn" escaped
}

// New returns a Handler writing records at level or above: below
// slog.LevelWarn to stdout, the others to stderr. Writes to each stream are
// serialized, and each record is one Write of one line.
func New(stdout, stderr io.Writer, level slog.Leveler) *Handler {
	opts := &slog.HandlerOptions{Level: level}
	errw := &lockedWriter{mu: new(sync.Mutex), w: stderr}
	return &Handler{
		out:  slog.NewJSONHandler(stdout, opts),
		warn: slog.NewJSONHandler(errw, opts),
		// The same lock: WARN and ERROR lines share stderr, and two
		// handlers do not share slog's own lock.
		err: slog.NewJSONHandler(&escapingWriter{errw}, opts),
	}
}

func (h *Handler) pick(l slog.Level) slog.Handler {
	switch {
	case l >= slog.LevelError:
		return h.err
	case l >= slog.LevelWarn:
		return h.warn
	default:
		return h.out
	}
}

// Enabled reports whether the stream for l takes records at that level.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.pick(l).Enabled(ctx, l)
}

// Handle writes r as one JSON line to the stream of its level.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	return h.pick(r.Level).Handle(ctx, r)
}

// WithAttrs returns a Handler whose records on both streams carry attrs.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{out: h.out.WithAttrs(attrs), warn: h.warn.WithAttrs(attrs), err: h.err.WithAttrs(attrs)}
}

// WithGroup returns a Handler whose later attributes on both streams are in
// group name.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{out: h.out.WithGroup(name), warn: h.warn.WithGroup(name), err: h.err.WithGroup(name)}
}

// lockedWriter serializes Writes from the two stderr handlers, so that a
// WARN line and an ERROR line never interleave.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// escapingWriter writes JSON lines with every case-insensitive "warn"
// escaped (see EscapeWarn).
type escapingWriter struct{ w io.Writer }

func (e *escapingWriter) Write(p []byte) (int, error) {
	if _, err := e.w.Write(EscapeWarn(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// EscapeWarn returns line with the first letter of every ASCII
// case-insensitive "warn" written as a JSON \u escape ("w" as \u0077, "W" as
// \u0057). line must be JSON text: "warn" can only occur inside a string
// there (no JSON token contains it), and never right after an escaping
// backslash (\w is not a JSON escape) nor inside a \uXXXX escape (w, r and n
// are not hex digits), so the result is JSON text that decodes to the same
// value. No non-ASCII rune upper-cases to W, A, R or N, so the ASCII check
// is the host's ordinal case-insensitive IndexOf. line is returned as is
// when it has no "warn".
func EscapeWarn(line []byte) []byte {
	var out []byte
	last := 0
	for i := 0; i+4 <= len(line); i++ {
		if !isWarn(line[i : i+4]) {
			continue
		}
		if out == nil {
			out = make([]byte, 0, len(line)+10)
		}
		out = append(out, line[last:i]...)
		if line[i] == 'w' {
			out = append(out, `\u0077`...)
		} else {
			out = append(out, `\u0057`...)
		}
		last = i + 1
	}
	if out == nil {
		return line
	}
	return append(out, line[last:]...)
}

func isWarn(b []byte) bool {
	return b[0]|0x20 == 'w' && b[1]|0x20 == 'a' && b[2]|0x20 == 'r' && b[3]|0x20 == 'n'
}
