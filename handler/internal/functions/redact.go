package functions

import (
	"mime"
	"net/http"
	"sync"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/redact"
)

// redactBodies passes every response body through r (package redact), so
// that no answer carries a secret the process knows, in any encoding: an
// error's message quoting a provider, a status, a consent page. The one
// body that must carry a secret, the token route's success, is written
// through servingSecret. A nil r returns h.
func redactBodies(r *redact.Redactor, h http.Handler) http.Handler {
	if r == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// Pooled: the token route's cache hit allocates no more for it
		// (hitpath_test.go). A handler does not keep its writer.
		rw := redactingWriters.Get().(*redactingWriter)
		rw.ResponseWriter, rw.r = w, r
		defer func() {
			rw.ResponseWriter, rw.r = nil, nil
			redactingWriters.Put(rw)
		}()
		h.ServeHTTP(rw, req)
	})
}

var redactingWriters = sync.Pool{New: func() any { return new(redactingWriter) }}

// redactingWriter redacts each Write: a JSON body as JSON (each string
// redacted, the shape kept), anything else as text. Every body here is
// written in one Write per message (encode; consent.WritePage writes each
// field whole), so a secret cannot straddle two.
type redactingWriter struct {
	http.ResponseWriter
	r *redact.Redactor
}

func (w *redactingWriter) Write(p []byte) (int, error) {
	mt, _, _ := mime.ParseMediaType(w.Header().Get("Content-Type"))
	out := w.r.Bytes
	if mt == "application/json" {
		out = w.r.JSON
	}
	if _, err := w.ResponseWriter.Write(out(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Unwrap lets http.ResponseController reach the connection beneath.
func (w *redactingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// servingSecret returns the writer beneath w's redaction, for the one body
// that carries a secret on purpose: the access token the token route
// serves.
func servingSecret(w http.ResponseWriter) http.ResponseWriter {
	for u := w; ; {
		if rw, ok := u.(*redactingWriter); ok {
			return rw.ResponseWriter
		}
		un, ok := u.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		u = un.Unwrap()
	}
}
