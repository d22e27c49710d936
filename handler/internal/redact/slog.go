package redact

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
)

// Handler wraps a slog.Handler so that every record it writes has the
// registered secrets redacted: its message, and every attribute value
// (strings, errors, and any other value as its JSON or %v text would show
// it), in groups too. Keys are the program's own and are left alone.
type Handler struct {
	next slog.Handler
	r    *Redactor
}

// NewHandler returns next with r's redaction in front of it. A nil r
// returns next.
func NewHandler(next slog.Handler, r *Redactor) slog.Handler {
	if r == nil {
		return next
	}
	return &Handler{next: next, r: r}
}

// Enabled reports whether next takes records at l.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle passes a redacted copy of rec to next.
func (h *Handler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.String(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs returns a Handler whose records carry attrs, redacted with
// the secrets registered now.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = h.attr(a)
	}
	return &Handler{next: h.next.WithAttrs(red), r: h.r}
}

// WithGroup returns a Handler whose later attributes are in group name.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), r: h.r}
}

func (h *Handler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.String(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, x := range g {
			red[i] = h.attr(x)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, h.r.String(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, h.r.String(x.String()))
		default:
			// As the JSON handler would print it; a value holding a
			// secret is replaced by its redacted text.
			text, err := json.Marshal(x)
			if err != nil {
				text = fmt.Appendf(nil, "%+v", x)
			}
			if h.r.Contains(string(text)) {
				return slog.String(a.Key, string(h.r.Bytes(text)))
			}
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// Redactor returns the Redactor h redacts with.
func (h *Handler) Redactor() *Redactor { return h.r }

// OfLogger returns the Redactor of log's handler when it is a Handler, and
// nil otherwise. The process's logger and the stores and grants it wires
// share one Redactor this way: what registers secrets and what writes
// them out cannot disagree.
func OfLogger(log *slog.Logger) *Redactor {
	if log == nil {
		return nil
	}
	if h, ok := log.Handler().(*Handler); ok {
		return h.r
	}
	return nil
}
