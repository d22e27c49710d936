package diagnose

import (
	"strings"
	"testing"
)

func TestSanitize(t *testing.T) {
	const (
		jwt          = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV"
		entraSecret  = "Abc8Q~Zq1uPmd0FJx4tyh7kLm3NopQrsTuvWxYz12345"
		xeroRefresh  = "a9f3c41e07b2d58f6e1c0b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e"
		sfRefresh    = "5Aep861TSESvWeug_xvFHRBTTbf_YrTWgEyjBJrNVbDFRcc3eWXr0Bx3ZnWNpL7JW_Xd8EzGRVDmpbNvvPplaQz"
		traceID      = "6e94ade5-10de-4d67-909a-14d845813500"
		entraMessage = "AADSTS700082: The refresh token has expired due to inactivity. The token was issued on " +
			"2020-02-26T21:52:54.2810613Z and was inactive for 90.00:00:00.\r\nTrace ID: " + traceID
	)
	tests := []struct {
		name    string
		in      string
		want    string   // exact result, when given
		keep    []string // must survive
		redact  []string // must be gone
		maxSize int
	}{
		{name: "Entra message stays readable", in: entraMessage,
			want: "AADSTS700082: The refresh token has expired due to inactivity. The token was issued on " +
				"2020-02-26T21:52:54.2810613Z and was inactive for 90.00:00:00. Trace ID: " + traceID},
		{name: "URLs and words stay", in: "Visit https://aka.ms/NewClientSecret or https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials",
			keep: []string{"https://aka.ms/NewClientSecret", "active-directory-certificate-credentials"}},
		{name: "app ids stay", in: "Application with identifier 'bbe6ea72-3498-452b-9125-787be7a187d4' was not found.",
			keep: []string{"bbe6ea72-3498-452b-9125-787be7a187d4"}},
		{name: "JWT", in: "token " + jwt + " rejected", redact: []string{jwt, "eyJ"}, keep: []string{"token [redacted] rejected"}},
		{name: "Entra client secret", in: "The secret '" + entraSecret + "' is invalid.", redact: []string{entraSecret}, keep: []string{"is invalid."}},
		{name: "hex refresh token", in: "refresh token " + xeroRefresh + ".", redact: []string{xeroRefresh}, keep: []string{"[redacted]."}},
		{name: "Salesforce refresh token", in: "bad token " + sfRefresh, redact: []string{sfRefresh}},
		{name: "echoed form field", in: "grant_type=refresh_token&refresh_token=short-secret&client_id=x",
			redact: []string{"short-secret"}, keep: []string{"refresh_token=[redacted]", "client_id=x"}},
		{name: "echoed client secret", in: `client_secret: "hunter2" was wrong`, redact: []string{"hunter2"}},
		{name: "bearer header", in: "Authorization: Bearer abcdefghijklmnopqrstuvwxyz", redact: []string{"abcdefghijklmnopqrstuvwxyz"}},
		{name: "the word basic stays", in: "Use basic authentication.", want: "Use basic authentication."},
		{name: "log forging", in: "bad request\n2026-01-01 INFO forged line\r\x1b[31mred", want: "bad request 2026-01-01 INFO forged line [31mred"},
		{name: "bidi and non-ASCII", in: "caf\u00e9 \u202eevil", want: "caf? ?evil"},
		{name: "invalid UTF-8", in: "bad \xff\xfe byte", want: "bad ?? byte"},
		{name: "long text is capped", in: strings.Repeat("word ", 200), maxSize: maxSanitized},
		{name: "empty", in: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Sanitize(tt.in)
			if tt.want != "" || tt.in == "" {
				if got != tt.want {
					t.Errorf("Sanitize = %q, want %q", got, tt.want)
				}
			}
			for _, k := range tt.keep {
				if !strings.Contains(got, k) {
					t.Errorf("Sanitize = %q, lost %q", got, k)
				}
			}
			for _, r := range tt.redact {
				if strings.Contains(got, r) {
					t.Errorf("Sanitize = %q, kept %q", got, r)
				}
			}
			if len(got) > maxSanitized {
				t.Errorf("len = %d, over %d", len(got), maxSanitized)
			}
			if tt.maxSize != 0 && !strings.HasSuffix(got, "...") {
				t.Errorf("a capped result should say so: %q", got)
			}
			for _, r := range got {
				if r < 0x20 || r > 0x7e {
					t.Errorf("Sanitize left %q in %q", r, got)
				}
			}
		})
	}
}

// TestErrorCode: the one rule by which a provider's error code is repeated
// (issue 15: the token client, the consent callback and the summaries had
// three, one of which trimmed markup into a code).
func TestErrorCode(t *testing.T) {
	tests := []struct{ in, want string }{
		{"invalid_grant", "invalid_grant"},
		{"BAD_REFRESH_TOKEN", "BAD_REFRESH_TOKEN"},
		{"AADSTS700082", "AADSTS700082"},
		{"invalid.request-2", "invalid.request-2"},
		{"", ""},
		{"invalid grant", ""},
		{"<b>access_denied</b>", ""},
		{"invalid_grant\r\n", ""},
		{"invalid_grant\"", ""},
		{"0123456789abcdefghijklmnopqrstuvwxyz", ""}, // token-shaped
		{"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9", ""}, // a JWT's header
		{strings.Repeat("a", 65), ""},
		{"invalid_gränt", ""},
	}
	for _, tt := range tests {
		if got := ErrorCode(tt.in); got != tt.want {
			t.Errorf("ErrorCode(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}
