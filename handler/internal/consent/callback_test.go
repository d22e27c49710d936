package consent_test

import (
	"errors"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
)

func TestParseCallback(t *testing.T) {
	const state = "ST4TE"
	const longSecret = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2VuLXZhbHVl.c2lnbmF0dXJlLXZhbHVl"
	tests := []struct {
		name     string
		query    string
		wantCode string
		wantErr  error
		// wantCallback is the *CallbackError expected.
		wantCallback *consent.CallbackError
	}{
		{"code", "code=c-1&state=ST4TE", "c-1", nil, nil},
		{"no state", "code=c-1", "", consent.ErrStateMismatch, nil},
		{"other state", "code=c-1&state=OTHER", "", consent.ErrStateMismatch, nil},
		{"state twice", "code=c-1&state=ST4TE&state=OTHER", "", consent.ErrStateMismatch, nil},
		{"an error with another state is not read", "error=access_denied&state=OTHER", "", consent.ErrStateMismatch, nil},
		{"no code", "state=ST4TE", "", consent.ErrNoCode, nil},
		{"code twice", "code=a&code=b&state=ST4TE", "", consent.ErrNoCode, nil},
		{"denied", "error=access_denied&error_description=The+user+denied+the+request&state=ST4TE", "", nil,
			&consent.CallbackError{Code: "access_denied", Description: "The user denied the request"}},
		{"markup is no code, and secrets are sanitised", "error=<b>access_denied</b>&error_description=" + url.QueryEscape("no\r\nway "+longSecret) + "&state=ST4TE", "", nil,
			&consent.CallbackError{Code: "", Description: "no way [redacted]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			code, err := consent.ParseCallback(q, state)
			switch {
			case tt.wantCallback != nil:
				var ce *consent.CallbackError
				if !errors.As(err, &ce) || *ce != *tt.wantCallback {
					t.Fatalf("err = %#v; want %#v", err, tt.wantCallback)
				}
				if ce.Remediation() == "" || strings.Contains(ce.Error(), longSecret) {
					t.Fatalf("error %q, remediation %q", ce.Error(), ce.Remediation())
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) || code != "" {
					t.Fatalf("got %q, %v; want %v", code, err, tt.wantErr)
				}
			default:
				if err != nil || code != tt.wantCode {
					t.Fatalf("got %q, %v; want %q", code, err, tt.wantCode)
				}
			}
		})
	}
	if _, err := consent.ParseCallback(url.Values{"code": {"c"}, "state": {""}}, ""); !errors.Is(err, consent.ErrStateMismatch) {
		t.Fatalf("an empty expected state matched: %v", err)
	}
}

func TestWritePage(t *testing.T) {
	rec := httptest.NewRecorder()
	consent.WritePage(rec, 400, consent.Page{Title: "Connection <x> refused", Message: `a "quoted" <script>alert(1)</script>`, Remediation: "Start again."})
	body := rec.Body.String()
	if rec.Code != 400 || strings.Contains(body, "<script>") || strings.Contains(body, "<x>") ||
		!strings.Contains(body, "&lt;script&gt;") || !strings.Contains(body, "Start again.") {
		t.Fatalf("%d %s", rec.Code, body)
	}
	for k, want := range map[string]string{
		"Content-Type":    "text/html; charset=utf-8",
		"Cache-Control":   "no-store",
		"Referrer-Policy": "no-referrer",
	} {
		if got := rec.Header().Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if !strings.Contains(rec.Header().Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("Content-Security-Policy = %q", rec.Header().Get("Content-Security-Policy"))
	}
}
