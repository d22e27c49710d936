package cli

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

// The first request to /callback decides; other paths and methods do not
// count, and a later request changes nothing.
func TestReceiverAnswersOnce(t *testing.T) {
	finished := 0
	rc := &receiver{connection: "demo", state: "S", done: make(chan error, 1), finish: func(code string) error {
		finished++
		return nil
	}}
	serve := func(method, target string) int {
		rec := httptest.NewRecorder()
		rc.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
		return rec.Code
	}
	if got := serve(http.MethodGet, "/favicon.ico"); got != http.StatusNotFound {
		t.Fatalf("/favicon.ico: %d", got)
	}
	if got := serve(http.MethodPost, "/callback?code=c&state=S"); got != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", got)
	}
	if got := serve(http.MethodGet, "/callback?code=c&state=S"); got != http.StatusOK {
		t.Fatalf("first: %d", got)
	}
	if got := serve(http.MethodGet, "/callback?code=c2&state=S"); got != http.StatusConflict {
		t.Fatalf("second: %d, want 409", got)
	}
	if err := <-rc.done; err != nil || finished != 1 {
		t.Fatalf("outcome %v after %d exchanges; want one, successful", err, finished)
	}
}

// Giving up the wait claims the callback, so a browser coming back later
// cannot store anything; a browser that came back first decides.
func TestReceiverGiveUp(t *testing.T) {
	errTimeout := errors.New("timed out")
	finished := 0
	rc := &receiver{connection: "demo", state: "S", done: make(chan error, 1), finish: func(string) error {
		finished++
		return nil
	}}
	if err := rc.giveUp(errTimeout); err != errTimeout {
		t.Fatalf("giveUp = %v", err)
	}
	rec := httptest.NewRecorder()
	rc.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/callback?code=c&state=S", nil))
	if rec.Code != http.StatusConflict || finished != 0 {
		t.Fatalf("a callback after giving up: %d, %d exchanges", rec.Code, finished)
	}

	rc = &receiver{connection: "demo", state: "S", done: make(chan error, 1), finish: func(string) error { return nil }}
	rc.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/callback?code=c&state=S", nil))
	if err := rc.giveUp(errTimeout); err != nil {
		t.Fatalf("giveUp after the browser came back = %v, want its outcome", err)
	}
}
