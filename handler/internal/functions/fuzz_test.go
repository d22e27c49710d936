package functions_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
)

// fakeBroker answers like the real broker, without a store or a provider:
// each connection name stands for one outcome.
type fakeBroker struct {
	now time.Time

	mu          sync.Mutex
	sweeps      int
	minValidity []time.Duration
}

const (
	fakeAccessToken = "at-fuzz-S3CRET-77d1"
	fakeLifetime    = time.Hour
	fakeCaller      = "00000000-0000-0000-0000-0000000000ad"
)

// fakeOutcomes maps a connection to the error its Token returns (nil:
// a token).
var fakeOutcomes = map[string]*broker.Error{
	"xero":       nil,
	"restricted": nil,
	"rejected": {Code: broker.CodeRejected, Message: "the provider rejected the refresh token (invalid_grant)",
		Remediation: "Consent again and store the new refresh token."},
	"outage": {Code: broker.CodeProviderFailed, Message: "the provider answered HTTP 503", Remediation: "Retry later.",
		RetryAfter: 30 * time.Second},
	"busy": {Code: broker.CodeUnavailable, Message: "another instance is refreshing this token", Remediation: "Retry.",
		RetryAfter: 1500 * time.Millisecond},
}

func (b *fakeBroker) Connection(name string) (broker.Connection, bool) {
	if _, ok := fakeOutcomes[name]; !ok {
		return broker.Connection{}, false
	}
	c := broker.Connection{Name: name, Provider: "test", Grant: broker.GrantRefreshToken}
	if name == "restricted" {
		c.AllowedCallers = []string{fakeCaller}
	}
	return c, true
}

func (b *fakeBroker) Token(_ context.Context, name string, minValidity time.Duration) (broker.AccessToken, error) {
	b.mu.Lock()
	b.minValidity = append(b.minValidity, minValidity)
	b.mu.Unlock()
	e, ok := fakeOutcomes[name]
	switch {
	case !ok:
		return broker.AccessToken{}, &broker.Error{Code: broker.CodeNotFound, Connection: name,
			Message: "no connection is named " + name, Remediation: "Check the name."}
	case minValidity > fakeLifetime:
		return broker.AccessToken{}, &broker.Error{Code: broker.CodeBadRequest, Connection: name,
			Message: "minValidity exceeds what the provider's tokens live", Remediation: "Ask for less."}
	case e != nil:
		copied := *e
		copied.Connection = name
		return broker.AccessToken{}, &copied
	}
	return broker.AccessToken{Value: fakeAccessToken, TokenType: "Bearer", Expiry: b.now.Add(fakeLifetime)}, nil
}

func (b *fakeBroker) Status(context.Context) []broker.ConnectionStatus { return nil }

func (b *fakeBroker) ConnectionStatus(context.Context, string) (broker.ConnectionStatus, bool) {
	return broker.ConnectionStatus{}, false
}

func (b *fakeBroker) Sweep(context.Context, time.Duration) []broker.SweepResult {
	b.mu.Lock()
	b.sweeps++
	b.mu.Unlock()
	return []broker.SweepResult{
		{Connection: "xero", Action: broker.SweepFresh, ExpiresOn: b.now.Add(time.Hour)},
		{Connection: "ilevel", Action: broker.SweepRefreshed, ExpiresOn: b.now.Add(2 * time.Hour)},
		{Connection: "rejected", Action: broker.SweepFailed, Err: fakeOutcomes["rejected"]},
	}
}

func (b *fakeBroker) ForceRefresh(_ context.Context, name string) (broker.ConnectionStatus, error) {
	return broker.ConnectionStatus{Name: name, State: broker.StateHealthy}, nil
}

var _ functions.Broker = (*fakeBroker)(nil)

const fuzzMaxBody = 1024

func newFuzzServer(authEnabled bool) (*fakeBroker, http.Handler) {
	b := &fakeBroker{now: time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)}
	return b, functions.NewServer(b, functions.Options{
		AuthEnabled: authEnabled, MaxBodyBytes: fuzzMaxBody, Now: func() time.Time { return b.now },
	})
}

// serve hands the handler a request as net/http's server would build it
// from the request line, or returns nil when no server would accept it.
func serve(h http.Handler, method, target string, body []byte, header http.Header) *httptest.ResponseRecorder {
	u, err := url.ParseRequestURI(target)
	if err != nil || strings.ContainsAny(target, " \r\n\x00") {
		return nil
	}
	req, err := http.NewRequest(method, "http://127.0.0.1/", bytes.NewReader(body))
	if err != nil {
		return nil
	}
	req.URL, req.RequestURI, req.Host = u, target, "127.0.0.1"
	for k, vs := range header {
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n\x00") {
				return nil
			}
			req.Header.Add(k, v)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// errorStatuses are the documented error statuses and the error codes
// each may carry.
var errorStatuses = map[int][]string{
	http.StatusBadRequest:            {"bad_request"},
	http.StatusForbidden:             {"forbidden"},
	http.StatusNotFound:              {"unknown_connection", "not_found"},
	http.StatusMethodNotAllowed:      {"method_not_allowed"},
	http.StatusRequestEntityTooLarge: {"request_too_large"},
	http.StatusFailedDependency:      {"provider_rejected"},
	http.StatusBadGateway:            {"provider_unavailable"},
	http.StatusServiceUnavailable:    {"temporarily_unavailable"},
}

// checkErrorBody asserts DESIGN.md's error shape and returns the body.
func checkErrorBody(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	codes, ok := errorStatuses[rec.Code]
	if !ok {
		t.Fatalf("status %d is not a documented error status: %s", rec.Code, rec.Body)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("HTTP %d body is not a JSON object: %q", rec.Code, rec.Body)
	}
	code, _ := body["error"].(string)
	if !contains(codes, code) {
		t.Errorf("HTTP %d with error %q, want one of %q", rec.Code, code, codes)
	}
	if msg, _ := body["message"].(string); strings.TrimSpace(msg) == "" {
		t.Errorf("HTTP %d without a message: %s", rec.Code, rec.Body)
	}
	retryable, isBool := body["retryable"].(bool)
	if !isBool || retryable != (rec.Code == http.StatusBadGateway || rec.Code == http.StatusServiceUnavailable) {
		t.Errorf("HTTP %d with retryable %v", rec.Code, body["retryable"])
	}
	for _, f := range []string{"remediation", "connection"} {
		if v, present := body[f]; present {
			if _, isString := v.(string); !isString {
				t.Errorf("%s is %T, not a string", f, v)
			}
		}
	}
	for k := range body {
		if !contains([]string{"error", "message", "remediation", "connection", "retryable"}, k) {
			t.Errorf("error body has an undocumented field %q", k)
		}
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	return body
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

func FuzzTokenRequest(f *testing.F) {
	seeds := []struct {
		method, suffix string
		body           string
		principal      string
		auth           bool
	}{
		{"GET", "xero", "", "", false},
		{"GET", "xero?minValidity=600", "", "", false},
		{"POST", "xero", `{"minValidity": 600}`, "", false},
		{"POST", "xero", `{"minValidity": "600"}`, "", false},
		{"POST", "xero?minValidity=5", `{"minValidity": 5}`, "", false},
		{"POST", "xero?minValidity=5", `{"minValidity": 6}`, "", false},
		{"POST", "xero", `{"minValidity": 600}{}`, "", false},
		{"POST", "xero", `{"minValidity":`, "", false},
		{"POST", "xero", `{"minValidty": 5}`, "", false},
		{"POST", "xero", `{"minValidity": 1.5}`, "", false},
		{"POST", "xero", `{"minValidity": null}`, "", false},
		{"POST", "xero", `{"minValidity": "\u0036\u0030"}`, "", false},
		{"POST", "xero", `[600]`, "", false},
		{"POST", "xero", `{"minValidity": 1` + strings.Repeat(" ", 2*fuzzMaxBody) + `}`, "", false},
		{"POST", "xero", "\xff\xfe", "", false},
		{"GET", "xero?minValidity=abc", "", "", false},
		{"GET", "xero?minValidity=-5", "", "", false},
		{"GET", "xero?minValidity=99999999999999999999", "", "", false},
		{"GET", "xero?minValidity=3601", "", "", false},
		{"GET", "xero?minValidity=86401", "", "", false},
		{"GET", "xero?minValidity=1&minValidity=2", "", "", false},
		{"GET", "xero?minValidity=%00", "", "", false},
		{"GET", "xero?code=function-key-S3CRET", "", "", false},
		{"GET", "Bad_Name", "", "", false},
		{"GET", strings.Repeat("a", 64), "", "", false},
		{"GET", "..%2F..%2Fetc%2Fpasswd", "", "", false},
		{"GET", "../connections", "", "", false},
		{"GET", "./xero", "", "", false},
		{"GET", "xero/", "", "", false},
		{"GET", "xero/extra", "", "", false},
		{"GET", "", "", "", false},
		{"GET", "x%C3%A9ro", "", "", false},
		{"GET", "%ff", "", "", false},
		{"GET", "nope", "", "", false},
		{"DELETE", "xero", "", "", false},
		{"PUT", "xero", `{"minValidity": 1}`, "", false},
		{"OPTIONS", "xero", "", "", false},
		{"HEAD", "xero", "", "", false},
		{"GET", "restricted", "", fakeCaller, false},
		{"GET", "restricted", "", fakeCaller, true},
		{"GET", "restricted", "", strings.ToUpper(fakeCaller), true},
		{"GET", "restricted", "", "11111111-1111-1111-1111-111111111111", true},
		{"GET", "restricted", "", "", true},
		{"GET", "restricted", "", strings.Repeat("é", 100), true},
		{"GET", "rejected", "", "", false},
		{"GET", "outage", "", "", false},
		{"POST", "busy", `{}`, "", false},
	}
	for _, s := range seeds {
		f.Add(s.method, s.suffix, []byte(s.body), s.principal, s.auth)
	}
	f.Fuzz(func(t *testing.T, method, suffix string, body []byte, principal string, auth bool) {
		if method == "" {
			method = http.MethodGet // as net/http reads it
		}
		b, h := newFuzzServer(auth)
		target := "/api/token/" + suffix
		header := http.Header{}
		if principal != "" {
			header.Set("X-MS-CLIENT-PRINCIPAL-ID", principal)
		}
		rec := serve(h, method, target, body, header)
		if rec == nil {
			return
		}
		if rec.Code >= 300 && rec.Code < 400 {
			// Unclean paths (/api/token/./xero) get a JSON 400, not the
			// mux's HTML redirect; nothing redirects.
			t.Fatalf("%s %q redirected to %q", method, target, rec.Header().Get("Location"))
		}
		if strings.Contains(rec.Body.String(), fakeAccessToken) != (rec.Code == http.StatusOK) {
			t.Fatalf("HTTP %d and the access token in the body: %v", rec.Code, !strings.Contains(rec.Body.String(), fakeAccessToken))
		}
		b.mu.Lock()
		asked := b.minValidity
		b.mu.Unlock()
		for _, mv := range asked {
			if mv < 0 || mv > broker.MaxMinValidity || mv%time.Second != 0 {
				t.Errorf("the broker was asked for minValidity %v", mv)
			}
		}
		if rec.Code != http.StatusOK {
			body := checkErrorBody(t, rec)
			switch rec.Code {
			case http.StatusMethodNotAllowed:
				if rec.Header().Get("Allow") != "GET, POST" {
					t.Errorf("405 with Allow %q", rec.Header().Get("Allow"))
				}
			case http.StatusBadGateway, http.StatusServiceUnavailable:
				if rec.Header().Get("Retry-After") == "" {
					t.Errorf("HTTP %d without Retry-After", rec.Code)
				}
			}
			if rec.Code != http.StatusBadGateway && rec.Code != http.StatusServiceUnavailable && rec.Header().Get("Retry-After") != "" {
				t.Errorf("HTTP %d with Retry-After", rec.Code)
			}
			if c, _ := body["connection"].(string); c != "" && len(c) > 63 {
				t.Errorf("connection %q echoed at length %d", c, len(c))
			}
			return
		}
		if method != http.MethodGet && method != http.MethodPost {
			t.Errorf("200 to %s", method)
		}
		if rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("200 with Cache-Control %q", rec.Header().Get("Cache-Control"))
		}
		var tok struct {
			AccessToken string `json:"access_token"`
			TokenType   string `json:"token_type"`
			ExpiresIn   *int64 `json:"expires_in"`
			ExpiresOn   string `json:"expires_on"`
		}
		dec := json.NewDecoder(rec.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&tok); err != nil {
			t.Fatalf("200 body is not the token shape: %v", err)
		}
		on, err := time.Parse(time.RFC3339, tok.ExpiresOn)
		if tok.AccessToken != fakeAccessToken || tok.TokenType != "Bearer" || tok.ExpiresIn == nil ||
			*tok.ExpiresIn != int64(fakeLifetime/time.Second) || err != nil || !on.Equal(b.now.Add(fakeLifetime)) ||
			!strings.HasSuffix(tok.ExpiresOn, "Z") {
			t.Errorf("200 body %+v (expires_on: %v)", tok, err)
		}
		if len(asked) != 1 || asked[0] > fakeLifetime {
			t.Errorf("200 after Token calls with %v", asked)
		}
	})
}

func FuzzTimerEnvelope(f *testing.F) {
	seeds := []string{
		`{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":true}},"Metadata":{"sys":{"MethodName":"refresh","UtcNow":"2026-11-23T03:00:00Z","RandGuid":"35e6e68c-5583-436c-a277-5aec2b416ba8"}}}`,
		`{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2026-11-23T02:55:00+00:00","Next":"2026-11-23T03:00:00+00:00","LastUpdated":"2026-11-23T02:55:00+00:00"},"IsPastDue":false}},"Metadata":{}}`,
		`{"Data":{"timer":{}}}`,
		`{"Data":{"timer":null}}`,
		`{"Data":{"timer":{"ScheduleStatus":{"Last":"yesterday"}}}}`,
		`{"Data":{"timer":{"IsPastDue":"maybe"}}}`,
		`{"Data":{"timer":"yes"}}`,
		`{"Data":{},"Metadata":{}}`,
		`{"Data":null}`,
		`{"Data":[1,2]}`,
		`{"data":{"timer":{}}}`,
		`{"Data":{"timer":{}}} trailing`,
		`{"Data":{"timer":{"IsPastDue":true}},"Data":{}}`,
		"\uFEFF" + `{"Data":{"timer":{}}}`,
		"{\"Data\":{\"timer\":{\"IsPastDue\":true,\"x\":\"\xff\"}}}",
		`{"Data":{"timer":{"IsPastDue":true}},"Metadata":"` + strings.Repeat("m", 2*fuzzMaxBody) + `"}`,
		`null`,
		`[]`,
		`""`,
		``,
		`hello`,
		`{"Data":{"timer":{"IsPastDue":true}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		b, h := newFuzzServer(false)
		rec := serve(h, http.MethodPost, "/refresh", body, http.Header{"Content-Type": {"application/json"}})
		b.mu.Lock()
		sweeps := b.sweeps
		b.mu.Unlock()
		if rec.Code != http.StatusOK {
			if rec.Code != http.StatusBadRequest && rec.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			checkErrorBody(t, rec)
			if sweeps != 0 {
				t.Errorf("HTTP %d after %d sweeps", rec.Code, sweeps)
			}
			return
		}
		if sweeps != 1 {
			t.Errorf("200 after %d sweeps, want 1", sweeps)
		}
		var env struct {
			Outputs     map[string]json.RawMessage
			Logs        []string
			ReturnValue json.RawMessage
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(rec.Body.Bytes(), &fields); err != nil {
			t.Fatalf("200 body is not a JSON object: %q", rec.Body)
		}
		if len(fields) != 3 || string(fields["ReturnValue"]) != "null" || string(fields["Outputs"]) != "{}" {
			t.Errorf("200 body is not {\"Outputs\":{},\"Logs\":[...],\"ReturnValue\":null}: %s", rec.Body)
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || len(env.Logs) == 0 {
			t.Fatalf("Logs is not an array of strings: %s", rec.Body)
		}
		if last := env.Logs[len(env.Logs)-1]; !strings.HasPrefix(last, "sweep done: 3 connections, 1 failed") {
			t.Errorf("last log line %q", last)
		}
	})
}
