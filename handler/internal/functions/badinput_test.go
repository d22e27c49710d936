package functions_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestBadRequestsNeverReachTheBroker covers the malformed requests that
// TestErrorStatuses leaves out. Each is answered with a documented error
// that names the problem, before the broker is asked for a token.
func TestBadRequestsNeverReachTheBroker(t *testing.T) {
	tests := []struct {
		name, method, target, body string
		status                     int
		want                       string // in the message
	}{
		{"minValidity a fraction", "GET", "/api/token/xero?minValidity=1.5", "", 400, "whole number of seconds"},
		{"minValidity empty", "GET", "/api/token/xero?minValidity=", "", 400, "minValidity"},
		{"minValidity repeated", "GET", "/api/token/xero?minValidity=1&minValidity=2", "", 400, "minValidity"},
		{"minValidity a NUL", "GET", "/api/token/xero?minValidity=%00", "", 400, "minValidity"},
		{"minValidity a day and a second", "GET", "/api/token/xero?minValidity=86401", "", 400, "from 0 to 86400"},
		{"min_validity, a misspelling", "GET", "/api/token/xero?min_validity=600", "", 400, `did you mean "minValidity"`},
		{"minValidty, a typo", "GET", "/api/token/xero?minValidty=600", "", 400, `did you mean "minValidity"`},
		{"min-validity beside a key", "GET", "/api/token/xero?code=k&min-validity=600", "", 400, `did you mean "minValidity"`},
		{"a parameter nothing resembles", "GET", "/api/token/xero?scope=read", "", 400, `"scope" is not one the token route reads`},
		{"body minValidity a fraction", "POST", "/api/token/xero", `{"minValidity": 1.5}`, 400, "whole number of seconds"},
		{"body minValidity a boolean", "POST", "/api/token/xero", `{"minValidity": true}`, 400, "minValidity"},
		{"body minValidity an object", "POST", "/api/token/xero", `{"minValidity": {"s": 1}}`, 400, "minValidity"},
		{"body minValidity a negative string", "POST", "/api/token/xero", `{"minValidity": "-1"}`, 400, "minValidity"},
		{"body an array", "POST", "/api/token/xero", `[600]`, 400, "a JSON array, not an object"},
		{"body a string", "POST", "/api/token/xero", `"600"`, 400, "a JSON string, not an object"},
		{"body two objects", "POST", "/api/token/xero", `{"minValidity": 1}{"minValidity": 2}`, 400, "after the JSON object"},
		{"body invalid UTF-8", "POST", "/api/token/xero", "\xff\xfe", 400, "not valid JSON"},
		{"body one byte over the limit", "POST", "/api/token/xero", `{"minValidity":1}` + strings.Repeat(" ", fuzzMaxBody-16), 413, "exceeds 1024 bytes"},
		{"name too long", "GET", "/api/token/" + strings.Repeat("a", 64), "", 400, "not a valid connection name"},
		{"name with an encoded slash", "GET", "/api/token/xero%2Fx", "", 400, "not a valid connection name"},
		{"name with an accent", "GET", "/api/token/x%C3%A9ro", "", 400, "not a valid connection name"},
		{"name starting with a digit", "GET", "/api/token/1xero", "", 400, "not a valid connection name"},
		{"name of invalid UTF-8", "GET", "/api/token/%ff", "", 400, "not a valid connection name"},
		{"PUT", "PUT", "/api/token/xero", `{"minValidity": 1}`, 405, "PUT is not allowed"},
		{"PATCH", "PATCH", "/api/token/xero", "", 405, "PATCH is not allowed"},
		{"GET on the timer", "GET", "/refresh", "", 405, "GET is not allowed"},
		{"POST on status", "POST", "/api/connections", "", 405, "POST is not allowed"},
		{"token route without a name", "GET", "/api/token/", "", 404, "no such route"},
		{"token route with a sub-path", "GET", "/api/token/xero/extra", "", 404, "no such route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, h := newFuzzServer(false)
			rec := serve(h, tt.method, tt.target, []byte(tt.body), nil)
			if rec == nil {
				t.Fatalf("%s %s is not a request a server would accept", tt.method, tt.target)
			}
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			body := checkErrorBody(t, rec)
			if msg, _ := body["message"].(string); !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not say %q", msg, tt.want)
			}
			if rec.Code == http.StatusMethodNotAllowed && rec.Header().Get("Allow") == "" {
				t.Error("405 without Allow")
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			if len(b.minValidity) != 0 || b.sweeps != 0 {
				t.Errorf("the broker was asked for %d tokens and %d sweeps", len(b.minValidity), b.sweeps)
			}
		})
	}
}

// TestBadTimerEnvelopes covers the envelopes TestMalformedTimerEnvelopes
// leaves out: none of them starts a sweep.
func TestBadTimerEnvelopes(t *testing.T) {
	tests := []struct {
		name, body string
		status     int
		want       string
	}{
		{"null", `null`, 400, "no Data.timer"},
		{"an array", `[]`, 400, "not valid JSON"},
		{"Data null", `{"Data": null}`, 400, "no Data.timer"},
		{"Data an array", `{"Data": [1]}`, 400, "not valid JSON"},
		{"IsPastDue not a boolean", `{"Data": {"timer": {"IsPastDue": "yes"}}}`, 400, "Data.timer"},
		{"trailing data", `{"Data": {"timer": {}}} x`, 400, "not valid JSON"},
		{"truncated", `{"Data": {"timer": {"IsPastDue": true}`, 400, "not valid JSON"},
		{"byte order mark", "\uFEFF" + `{"Data": {"timer": {}}}`, 400, "not valid JSON"},
		{"over the limit", `{"Data": {"timer": {}}, "Metadata": "` + strings.Repeat("m", fuzzMaxBody) + `"}`, 413, "exceeds 1024 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, h := newFuzzServer(false)
			rec := serve(h, http.MethodPost, "/refresh", []byte(tt.body), nil)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			body := checkErrorBody(t, rec)
			if msg, _ := body["message"].(string); !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not say %q", msg, tt.want)
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.sweeps != 0 {
				t.Errorf("%d sweeps after a bad envelope", b.sweeps)
			}
		})
	}
}

// TestTimerScheduleStatusIsNotJudged: the host's ScheduleStatus dates may
// come without a zone (or be anything); the sweep runs regardless.
func TestTimerScheduleStatusIsNotJudged(t *testing.T) {
	for _, status := range []string{
		`{"Last":"2026-11-23T03:00:00","Next":"2026-11-23T03:05:00","LastUpdated":"2026-11-23T03:00:00"}`,
		`{"Last":"yesterday"}`,
		`null`,
	} {
		b, h := newFuzzServer(false)
		rec := serve(h, http.MethodPost, "/refresh", []byte(`{"Data":{"timer":{"ScheduleStatus":`+status+`,"IsPastDue":false}},"Metadata":{}}`), nil)
		b.mu.Lock()
		sweeps := b.sweeps
		b.mu.Unlock()
		if rec.Code != http.StatusOK || sweeps != 1 {
			t.Errorf("ScheduleStatus %s: status %d, %d sweeps; want 200 and 1", status, rec.Code, sweeps)
		}
	}
}
