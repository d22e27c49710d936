package oauth_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/redact"
)

// echoSecret is the client secret of the echo fuzz: characters that every
// encoding changes, so that an encoded echo is not the raw value.
const echoSecret = `ech0+S3cr/t=with space&"q"<x>`

// plant replaces each marker in body with an encoding of the secret: the
// fuzzer moves and multiplies the markers, and the provider's body around
// them is whatever it makes of the seeds.
func plant(body, secret string) string {
	j, _ := json.Marshal(secret)
	return strings.NewReplacer(
		"{RAW}", secret,
		"{JSON}", string(j[1:len(j)-1]),
		"{QUERY}", url.QueryEscape(secret),
		"{B64}", base64.StdEncoding.EncodeToString([]byte(secret)),
		"{B64URL}", base64.RawURLEncoding.EncodeToString([]byte(secret)),
		"{BASIC}", base64.StdEncoding.EncodeToString([]byte("fuzz-client:"+url.QueryEscape(secret))),
		"{HALF}", secret[:len(secret)/2],
	).Replace(body)
}

// FuzzProviderEcho feeds random provider answers with the client secret
// planted in them, in every encoding, through the token client, on the
// refresh, client-credentials and code-exchange requests, and asserts
// that no 12 characters of any form of the secret come out: not in the
// error, not in a log line.
func FuzzProviderEcho(f *testing.F) {
	for _, s := range []struct {
		status      int
		contentType string
		header      string
		body        string
	}{
		{400, "application/json", "", `{"error":"invalid_client","error_description":"secret {RAW} is wrong"}`},
		{401, "application/json", "", `{"error":"{RAW}","error_description":"{JSON} {QUERY}"}`},
		{400, "application/json", "{B64}", `{"error":"invalid_request","error_description":"Basic {BASIC}","error_uri":"https://x/{QUERY}","trace_id":"{HALF}"}`},
		{200, "application/json", "", `{"access_token":"at-1","expires_in":"{RAW}"}`},
		{200, "application/json", "", `{"access_token":"{RAW}","token_type":`},
		{200, "application/x-www-form-urlencoded", "", `access_token=at-1&expires_in={QUERY}&error={B64URL}`},
		{500, "text/html", "{RAW}", `<pre>client_secret={QUERY}&x={B64URL}</pre>`},
		{400, "application/{HALF}", "", `{"error":"invalid_grant","error_description":"{HALF}...{B64}"}`},
	} {
		f.Add(s.status, s.contentType, s.header, s.body)
	}
	f.Fuzz(func(t *testing.T, status int, contentType, header, body string) {
		if status < 100 || status > 599 {
			status = 200 + (status%400+400)%400
		}
		body = plant(body, echoSecret)
		header = plant(header, echoSecret)
		contentType = plant(contentType, echoSecret)
		transport := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			h := http.Header{}
			h.Set("Content-Type", strings.Map(dropCTL, contentType))
			h.Set("WWW-Authenticate", strings.Map(dropCTL, header))
			return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
		})
		var logs bytes.Buffer
		c := oauth.New(oauth.Options{Transport: transport, MaxAttempts: 1, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
		cred := broker.Credentials{ClientID: "fuzz-client", ClientSecret: echoSecret}
		var out []string
		for _, run := range []func() (*broker.Token, error){
			func() (*broker.Token, error) {
				return c.Token(context.Background(), ccConn("https://idp.example/token"), cred)
			},
			func() (*broker.Token, error) {
				rc := cred
				rc.RefreshToken = "rt-fuzz-0123456789"
				return c.Token(context.Background(), refreshConn("https://idp.example/token", broker.AuthBasic, true, 0), rc)
			},
			func() (*broker.Token, error) {
				return c.Exchange(context.Background(), refreshConn("https://idp.example/token", broker.AuthBody, true, 0), cred, "code-1", "verifier-1", "http://127.0.0.1:1/cb")
			},
		} {
			tok, err := run()
			if err != nil {
				out = append(out, err.Error())
				var pe *broker.ProviderError
				if errorsAs(err, &pe) {
					out = append(out, pe.Code, pe.Description, pe.Remediation, pe.ErrorURI, pe.TraceID, pe.CorrelationID)
				}
			}
			if tok != nil {
				// A token the provider issued is the caller's; its type
				// is not.
				out = append(out, tok.TokenType)
			}
		}
		out = append(out, logs.String())
		checkNoForm(t, strings.Join(out, "\n"), echoSecret)
	})
}

func dropCTL(r rune) rune {
	if r < 0x20 || r == 0x7f {
		return -1
	}
	return r
}

func errorsAs(err error, pe **broker.ProviderError) bool {
	for err != nil {
		if p, ok := err.(*broker.ProviderError); ok {
			*pe = p
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// checkNoForm fails when out holds redact.Window characters of a form of
// secret: raw, query-encoded, JSON-escaped, or base64 at any alignment.
func checkNoForm(t *testing.T, out, secret string) {
	t.Helper()
	j, _ := json.Marshal(secret)
	forms := []string{secret, url.QueryEscape(secret), string(j[1 : len(j)-1])}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for _, s := range []string{secret, url.QueryEscape(secret)} {
			for pad := range 3 {
				e := enc.EncodeToString(append(make([]byte, pad), s...))
				forms = append(forms, e[(8*pad+5)/6:8*(pad+len(s))/6])
			}
		}
	}
	for _, f := range forms {
		for i := 0; i+redact.Window <= len(f); i++ {
			if strings.Contains(out, f[i:i+redact.Window]) {
				t.Fatalf("the output holds %q, a piece of a form of the secret:\n%s", f[i:i+redact.Window], out)
			}
		}
	}
}
