package oauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/diagnose"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
)

// The fuzzed refresh sends these; neither may come back in an error or a
// log line, whatever the provider answers.
const (
	fuzzClientSecret = "cs-S3CRET-9f2c41d07b"
	fuzzRefreshToken = "rt-S3CRET-sent-5e8a1c"
	// bodyTokenMarker marks tokens the seeds put in response bodies: a
	// refresh or access token the provider issued is as secret as the ones
	// sent.
	bodyTokenMarker = "S3CRET"
)

const fuzzDefaultLifetime = 45 * time.Minute

// responseSeed is one provider answer the fuzzer starts from.
type responseSeed struct {
	status      int
	contentType string
	retryAfter  string
	body        string
}

func tokenResponseSeeds() []responseSeed {
	const j = "application/json"
	const form = "application/x-www-form-urlencoded"
	echo := `"error_description":"refresh token ` + fuzzRefreshToken + ` for client secret ` + fuzzClientSecret + ` is invalid"`
	return []responseSeed{
		// Good answers.
		{200, j, "", `{"access_token":"at-1","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-new-S3CRET-1"}`},
		{200, "application/json; charset=utf-8", "", `{"access_token":"at-1","expires_in":"3600"}`},
		{200, form, "", `access_token=at-1&token_type=bearer&expires_in=60&refresh_token=rt-new-S3CRET-2`},
		{200, "text/plain", "", `access_token=at-1&expires_in=60`},
		{200, j, "", `{"access_token":"at-1","expires_in":null}`},
		{200, j, "", `{"access_token":"at-1","refresh_token":"` + fuzzRefreshToken + `"}`},
		{201, "application/vnd.api+json", "", `{"access_token":"at-1","expires_in":7200}`},
		// HTML, text and other non-token bodies at 200.
		{200, "text/html; charset=utf-8", "", `<!doctype html><html><body><form action="/login">Sign in</form></body></html>`},
		{200, "", "", `<html>no content type</html>`},
		{200, j, "", `{"token_type":"Bearer","expires_in":3600}`},
		{200, j, "", `{"access_token":"","expires_in":3600}`},
		{200, j, "", `{"error":"invalid_grant","error_description":"AADSTS70008: expired"}`},
		{200, j, "", `{"error":"invalid_grant",` + echo + `}`},
		{200, j, "", `{"access_token":"at-1","error":"server_error"}`},
		// expires_in of every wrong kind.
		{200, j, "", `{"access_token":"at-1","expires_in":"soon","refresh_token":"rt-new-S3CRET-3"}`},
		{200, j, "", `{"access_token":"at-1","expires_in":-5,"refresh_token":"rt-new-S3CRET-4"}`},
		{200, j, "", `{"access_token":"at-1","expires_in":0}`},
		{200, j, "", `{"access_token":"at-1","expires_in":99999999999999999999}`},
		{200, j, "", `{"access_token":"at-1","expires_in":40000000}`},
		{200, j, "", `{"access_token":"at-1","expires_in":3600.5}`},
		{200, j, "", `{"access_token":"at-1","expires_in":3.6e3}`},
		{200, j, "", `{"access_token":"at-1","expires_in":"3600s"}`},
		{200, j, "", `{"access_token":"at-1","expires_in":true}`},
		{200, j, "", `{"access_token":"at-1","expires_in":[3600]}`},
		{200, form, "", `access_token=at-1&expires_in=0.5`},
		{200, form, "", `access_token=at-1&expires_in=1e-10`},
		{200, form, "", `access_token=at-1&expires_in=NaN`},
		{200, form, "", `access_token=at-1&expires_in=%2BInf&refresh_token=rt-new-S3CRET-5`},
		{200, form, "", `access_token=at-1&expires_in=0x10`},
		// Bodies that are not what they say.
		{200, j, "", "\uFEFF" + `{"access_token":"at-1","expires_in":60}`},
		{200, j, "", "{\"access_token\":\"at-\xff\xfe\",\"expires_in\":60}"},
		{200, j, "", "\xff\xfe\x00{"},
		{200, j, "", `{"access_token":{"nested":{"value":"at-1"}},"expires_in":60}`},
		{200, j, "", `[{"access_token":"at-1","expires_in":60}]`},
		{200, j, "", `null`},
		{200, j, "", ``},
		{200, j, "", `{"access_token":"at-1","expires_in":60}{"second":true}`},
		{200, j, "", `{"access_token":"at-1","access_token":"at-2","expires_in":60,"expires_in":-1}`},
		// Errors.
		{400, j, "", `{"error":"invalid_grant",` + echo + `}`},
		{400, j, "", `{"error":"invalid_grant","error_description":"new token rt-new-S3CRET-6 issued","refresh_token":"rt-new-S3CRET-6"}`},
		{400, j, "", `{"error":"invalid_grant","error_description":"` + strings.Repeat("é", 500) + `"}`},
		{400, j, "", "{\"error\":\"invalid_grant\",\"error_description\":\"line1\\nline2\\u001b[31m\\u202e\xff\"}"},
		{400, j, "", `{"error":"` + strings.Repeat("e", 200) + `"}`},
		{400, j, "", `{"error":"bad \" code\\u0000","error_description":7}`},
		{401, form, "", `error=invalid_client&error_description=secret+` + url.QueryEscape(fuzzClientSecret)},
		{401, "text/plain", "", `nope`},
		{403, j, "", `{"error":"unauthorized_client"}`},
		{429, j, "7", `{"error":"slow_down"}`},
		{429, "", "Wed, 21 Oct 2015 07:28:00 GMT", ``},
		{503, "text/html", "120", `<h1>down</h1>`},
		{503, j, "-1", `{"error":"temporarily_unavailable"}`},
		{500, j, "99999999999", `{"error":"server_error","error_description":"` + fuzzRefreshToken + `"}`},
		{302, "text/html", "", `<a href="https://login.example.com/">moved</a>`},
		{404, "text/html", "", `<h1>not found</h1>`},
		{101, "", "", ``},
		{599, "application/problem+json", "", `{"type":"about:blank","title":"weird"}`},
	}
}

func FuzzTokenResponse(f *testing.F) {
	for _, s := range tokenResponseSeeds() {
		f.Add(s.status, s.contentType, s.retryAfter, []byte(s.body))
	}
	// Past the 1 MiB limit. Only as a seed of go test: while fuzzing, every
	// mutation of it would copy 2 MB, and minimising it stalls the engine.
	if fl := flag.Lookup("test.fuzz"); fl == nil || fl.Value.String() == "" {
		f.Add(200, "application/json", "", []byte(`{"access_token":"at-1","expires_in":60,"pad":"`+strings.Repeat("x", 2<<20)+`"}`))
	}
	f.Fuzz(func(t *testing.T, status int, contentType, retryAfter string, body []byte) {
		if status < 100 || status > 599 {
			status = 100 + int(uint(status)%500) // a status a server can send
		}
		sent := 0
		transport := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			sent++
			if err := r.ParseForm(); err != nil || r.PostForm.Get("refresh_token") != fuzzRefreshToken ||
				r.PostForm.Get("client_secret") != fuzzClientSecret || r.PostForm.Get("grant_type") != "refresh_token" {
				t.Errorf("the request does not carry the refresh grant and the credentials (%v)", err)
			}
			h := http.Header{}
			if contentType != "" {
				h.Set("Content-Type", contentType)
			}
			if retryAfter != "" {
				h.Set("Retry-After", retryAfter)
			}
			return &http.Response{
				StatusCode: status, Status: strconv.Itoa(status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
				Header: h, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)), Request: r,
			}, nil
		})
		var logs bytes.Buffer
		client := oauth.New(oauth.Options{
			Transport: transport, MaxAttempts: 1, Backoff: time.Millisecond, Timeout: 5 * time.Second,
			Now:    func() time.Time { return fixedNow },
			Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		conn := &broker.Connection{
			Name: "fuzz", Grant: broker.GrantRefreshToken, TokenURL: "https://login.example.com/oauth2/token",
			AuthStyle: broker.AuthBody, Rotating: true, DefaultLifetime: fuzzDefaultLifetime,
		}
		cred := broker.Credentials{ClientID: "fuzz-client", ClientSecret: fuzzClientSecret, RefreshToken: fuzzRefreshToken}

		tok, err := client.Token(context.Background(), conn, cred)

		if sent != 1 {
			t.Fatalf("%d requests with MaxAttempts 1", sent)
		}
		var shown []string
		if err == nil {
			checkIssuedToken(t, status, contentType, body, tok)
		} else {
			shown = checkProviderError(t, status, err)
		}
		shown = append(shown, logs.String())
		secrets := append([]string{fuzzClientSecret, fuzzRefreshToken}, bodyTokens(body)...)
		for _, out := range shown {
			for _, s := range secrets {
				if strings.Contains(out, s) && !strings.Contains(contentType, s) {
					redacted := out
					for _, s := range secrets {
						redacted = strings.ReplaceAll(redacted, s, "<LEAKED>")
					}
					t.Errorf("a secret (%d chars) appears in an error or the log: %q", len(s), redacted)
				}
			}
		}
	})
}

// checkIssuedToken asserts what the broker relies on in a token.
func checkIssuedToken(t *testing.T, status int, contentType string, body []byte, tok *broker.Token) {
	t.Helper()
	if tok == nil {
		t.Fatal("no token and no error")
	}
	if status < 200 || status > 299 {
		t.Errorf("a token from an HTTP %d answer", status)
	}
	if tok.AccessToken.IsZero() || tok.TokenType == "" {
		t.Errorf("token without an access token or a type (type %q)", tok.TokenType)
	}
	// RFC 6749 A.12: access-token = 1*VSCHAR. Anything else was mangled on
	// the way (invalid UTF-8 decoded to U+FFFD) or would break the
	// Authorization header the caller builds from it.
	if strings.ContainsFunc(tok.AccessToken.Reveal(), func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		t.Error("access token with characters outside VSCHAR")
	}
	if !tok.IssuedAt.Equal(fixedNow) {
		t.Errorf("IssuedAt %v, want the client's clock %v", tok.IssuedAt, fixedNow)
	}
	life := tok.Expiry.Sub(tok.IssuedAt)
	// expires_in counts whole seconds (RFC 6749 §5.1); a lifetime below one
	// would have the broker refresh on every call.
	if life < time.Second || life > 365*24*time.Hour {
		t.Errorf("lifetime %v outside [1s, 365d]", life)
	}
	if tok.RefreshToken.Reveal() == fuzzRefreshToken {
		t.Error("the redeemed refresh token is returned as a new one")
	}
	// A JSON answer without expires_in gets the connection's lifetime.
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt != "application/x-www-form-urlencoded" && mt != "text/plain" {
		var fields map[string]json.RawMessage
		if json.Unmarshal(body, &fields) == nil {
			if raw, ok := fields["expires_in"]; !ok || string(raw) == "null" {
				if life != fuzzDefaultLifetime {
					t.Errorf("no expires_in, lifetime %v, want DefaultLifetime %v", life, fuzzDefaultLifetime)
				}
			}
		}
	}
}

// checkProviderError asserts the shape of a failure and returns its
// renderings.
func checkProviderError(t *testing.T, status int, err error) []string {
	t.Helper()
	var pe *broker.ProviderError
	if !errors.As(err, &pe) {
		t.Fatalf("error %T is not a *broker.ProviderError: %v", err, err)
	}
	if pe.StatusCode != status {
		t.Errorf("StatusCode %d, want the answer's %d", pe.StatusCode, status)
	}
	if pe.Code == "" && pe.Description == "" {
		t.Errorf("error says nothing: %v", err)
	}
	if len(pe.Code) > 64 || strings.ContainsFunc(pe.Code, func(r rune) bool { return r < 0x20 || r > 0x7e || r == '"' || r == '\\' }) {
		t.Errorf("Code %q is not a short RFC 6749 error code", pe.Code)
	}
	// Whatever the answer, the description stays one line: the 300 runes
	// kept of the provider's text at most, and the client's own sentence.
	if !utf8.ValidString(pe.Description) || utf8.RuneCountInString(pe.Description) > 600 ||
		strings.ContainsFunc(pe.Description, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }) {
		t.Errorf("Description not sanitised: %q", pe.Description)
	}
	permanentCodes := map[string]bool{"invalid_request": true, "invalid_client": true, "invalid_grant": true,
		"unauthorized_client": true, "unsupported_grant_type": true, "invalid_scope": true}
	knownPermanent := false
	if c, ok := broker.CodeCategory(pe.Code); ok {
		knownPermanent = c.Permanent()
	}
	rfcPermanent := permanentCodes[pe.Code] && (status/100 == 2 || status == 400 || status == 401 || status == 403) ||
		status/100 == 2 && knownPermanent
	diagnosedPermanent := status/100 == 4 && status != 408 && status != 429 && diagnose.Category(pe.Category).Permanent()
	if pe.Permanent && !rfcPermanent && !diagnosedPermanent {
		t.Errorf("HTTP %d %q (category %q) reported permanent", status, pe.Code, pe.Category)
	}
	if pe.Category == "" || pe.Remediation == "" {
		t.Errorf("failure without a diagnosis: category %q, remediation %q", pe.Category, pe.Remediation)
	}
	if pe.RetryAfter < 0 {
		t.Errorf("RetryAfter %v", pe.RetryAfter)
	}
	if rt := pe.IssuedRefreshToken.Reveal(); rt == fuzzRefreshToken || rt == fuzzClientSecret {
		t.Error("IssuedRefreshToken is a secret that was sent, not one the provider issued")
	}
	return []string{err.Error(), pe.Description, pe.Code, pe.Remediation, pe.AADSTS}
}

// bodyTokens returns the marked tokens a response body carries, JSON or
// form-encoded: the provider issued them, so they are secrets too.
func bodyTokens(body []byte) []string {
	var out []string
	add := func(s string) {
		if len(s) >= len(bodyTokenMarker)+4 && strings.Contains(s, bodyTokenMarker) {
			out = append(out, s)
		}
	}
	var fields map[string]any
	if json.Unmarshal(body, &fields) == nil {
		for _, k := range []string{"access_token", "refresh_token", "id_token"} {
			if s, ok := fields[k].(string); ok {
				add(s)
			}
		}
	}
	if vals, err := url.ParseQuery(string(body)); err == nil {
		for _, k := range []string{"access_token", "refresh_token", "id_token"} {
			for _, s := range vals[k] {
				add(s)
			}
		}
	}
	return out
}
