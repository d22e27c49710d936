package functions

import (
	"mime"
	"net/http"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/redact"
)

// Every answer's body passes through the redactor (package redact), so
// that no answer carries a secret the process knows, in any encoding: an
// error's message quoting a provider, a status, a consent page. The writer
// of every request (answerWriter, server.go) writes through redactedWrite.
// The one body that must carry a secret, the token route's success, is
// written after servingSecret.

// redactedWrite writes p to w through r: a JSON body as JSON (each string
// redacted, the shape kept), anything else as text. Every body here is
// written in one Write per message (encode; consent.WritePage writes each
// field whole), so a secret cannot straddle two. It reports len(p) written
// when the redacted body was.
func redactedWrite(w http.ResponseWriter, r *redact.Redactor, p []byte) (int, error) {
	mt, _, _ := mime.ParseMediaType(w.Header().Get("Content-Type"))
	out := r.Bytes
	if mt == "application/json" {
		out = r.JSON
	}
	if _, err := w.Write(out(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// servingSecret lets the rest of the request's answer past the redaction,
// for the one body that carries a secret on purpose: the access token the
// token route serves. It returns w.
func servingSecret(w http.ResponseWriter) http.ResponseWriter {
	for u := w; ; {
		switch t := u.(type) {
		case *answerWriter:
			t.secret = true
			return w
		case interface{ Unwrap() http.ResponseWriter }:
			u = t.Unwrap()
		default:
			return w
		}
	}
}
