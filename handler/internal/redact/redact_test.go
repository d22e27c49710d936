package redact

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"html"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// secret has characters every encoding changes: space, +, /, =, ", <, &, '.
const secret = `cs~Q8 x+y/z=ab"c<d&e'fGHIJKLMNOPQRSTUV`

// encodings are the ways a provider echoes a value, each applied to the
// whole secret or to a piece of it.
var encodings = map[string]func(string) string{
	"raw":            func(s string) string { return s },
	"query":          url.QueryEscape,
	"query lower":    func(s string) string { return lowerHex(url.QueryEscape(s)) },
	"path":           func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") },
	"path lower":     func(s string) string { return lowerHex(strings.ReplaceAll(url.QueryEscape(s), "+", "%20")) },
	"json":           func(s string) string { b, _ := json.Marshal(s); return string(b[1 : len(b)-1]) },
	"json no html":   jsonNoHTML,
	"json slash":     func(s string) string { return strings.ReplaceAll(jsonNoHTML(s), "/", `\/`) },
	"html":           html.EscapeString,
	"base64":         func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
	"base64 raw":     func(s string) string { return base64.RawStdEncoding.EncodeToString([]byte(s)) },
	"base64url":      func(s string) string { return base64.URLEncoding.EncodeToString([]byte(s)) },
	"base64url raw":  func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) },
	"basic id:s":     func(s string) string { return base64.StdEncoding.EncodeToString([]byte("client-id:" + s)) },
	"basic i:s":      func(s string) string { return base64.StdEncoding.EncodeToString([]byte("i:" + s)) },
	"basic form":     func(s string) string { return base64.StdEncoding.EncodeToString([]byte("ab:" + url.QueryEscape(s))) },
	"base64url id:s": func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte("id:" + s + ":tail")) },
}

func jsonNoHTML(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	out := strings.TrimSpace(b.String())
	return out[1 : len(out)-1]
}

// pieces of the secret that must each be found: the whole, both halves,
// and every 12-character piece.
func pieces(s string) map[string]string {
	p := map[string]string{"whole": s, "first half": s[:len(s)/2], "second half": s[len(s)/2:]}
	for i := 0; i+Window <= len(s); i += 5 {
		p["piece at "+string(rune('a'+i))] = s[i : i+Window]
	}
	return p
}

func TestRedactsEveryEncodingAndPiece(t *testing.T) {
	r := New()
	r.Remember("cs", secret)
	for name, enc := range encodings {
		for pname, piece := range pieces(secret) {
			echo := enc(piece)
			for _, wrap := range []string{"%s", "prefix %s suffix", "error_description=%s.", `{"e":"%s"}`} {
				text := strings.Replace(wrap, "%s", echo, 1)
				got := r.String(text)
				if strings.Contains(got, echo) {
					t.Errorf("%s of the %s (%q) in %q: not redacted: %q", name, pname, echo, wrap, got)
				}
				if !strings.Contains(got, Placeholder) {
					t.Errorf("%s of the %s in %q: no placeholder in %q", name, pname, wrap, got)
				}
				// What is left of the piece's encoding is too short to be
				// a piece of it (base64 keeps a character or two at each
				// end that also depend on its neighbours). An encoding of
				// the piece with a client id before it keeps the id's part.
				if strings.Contains(name, ":") {
					continue
				}
				for i := 0; i+Window <= len(echo); i++ {
					if strings.Contains(got, echo[i:i+Window]) {
						t.Errorf("%s of the %s: %q survives in %q", name, pname, echo[i:i+Window], got)
						break
					}
				}
			}
		}
	}
}

func TestLeavesOtherTextAlone(t *testing.T) {
	r := New()
	r.Remember("cs", secret)
	r.Remember("rt", "rt_0123456789abcdefghij")
	for _, text := range []string{
		"",
		"AADSTS70008: The provided authorization code or refresh token has expired due to inactivity.",
		`{"error":"invalid_grant","error_description":"bad","trace_id":"8d0a5f5e-2c4b-4f1e-9f7a-1b2c3d4e5f60"}`,
		"cs~Q8 x+y/z", // 11 characters of the secret: shorter than a window
		strings.Repeat("A", 5000),
	} {
		if got := r.String(text); got != text {
			t.Errorf("String(%q) = %q, want it unchanged", text, got)
		}
	}
}

func TestShortValuesAreMatchedWhole(t *testing.T) {
	r := New()
	r.Remember("k", "k3y-val!") // 8 characters: MinLength
	r.Remember("tiny", "abc")   // under MinLength: ignored
	for text, want := range map[string]string{
		"key k3y-val! here":   "key [redacted] here",
		"key k3y-val%21 here": "key [redacted] here",
		"k3y-val":             "k3y-val",
		"abc abc":             "abc abc",
		base64.StdEncoding.EncodeToString([]byte("k3y-val!")): "[redacted]",
	} {
		if got := r.String(text); !strings.HasPrefix(got, want[:min(len(want), len(got))]) || strings.Contains(got, "k3y-val!") || (want == "[redacted]") != strings.HasPrefix(got, Placeholder) {
			t.Errorf("String(%q) = %q, want %q", text, got, want)
		}
	}
}

func TestRememberForgetsSupersededValues(t *testing.T) {
	r := New()
	values := []string{"rt-first-0000000000", "rt-second-000000000", "rt-third-0000000000"}
	for _, v := range values {
		r.Remember("xero-refresh-token", v)
	}
	if r.Contains(values[0]) {
		t.Error("a value two generations old is still redacted: memory grows with every rotation")
	}
	for _, v := range values[1:] {
		if !r.Contains(v) {
			t.Errorf("%s: the current or previous value is not redacted", v[:9])
		}
	}
	// A value held under two keys stays while either holds it.
	r.Remember("a", "shared-value-00000")
	r.Remember("b", "shared-value-00000")
	r.Remember("a", "a-second-00000000")
	r.Remember("a", "a-third-000000000")
	if !r.Contains("shared-value-00000") {
		t.Error("a value still held by key b was forgotten")
	}
	r.Remember("b", "b-second-00000000")
	r.Remember("b", "b-third-000000000")
	if r.Contains("shared-value-00000") {
		t.Error("a value neither key holds is still redacted")
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.values) != 6 {
		t.Errorf("%d values held, want 6 (two per key)", len(r.values))
	}
}

func TestNilRedactsNothing(t *testing.T) {
	var r *Redactor
	r.Remember("k", secret)
	if got := r.String(secret); got != secret {
		t.Errorf("nil Redactor changed the text: %q", got)
	}
}

func TestJSONStaysJSON(t *testing.T) {
	r := New()
	r.Remember("cs", secret)
	in, _ := json.Marshal(map[string]any{"message": "client secret " + secret + " refused", "n": 3, "list": []any{secret[:20], "ok"}})
	out := r.JSON(append(in, '\n'))
	var v map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("redacted JSON does not parse: %v: %s", err, out)
	}
	if v["message"] != "client secret [redacted] refused" || v["n"] != json.Number("3") && v["n"] != 3.0 {
		t.Errorf("redacted JSON = %s", out)
	}
	if !bytes.HasSuffix(out, []byte("\n")) {
		t.Error("the trailing newline was lost")
	}
}

func TestHandlerRedactsRecords(t *testing.T) {
	r := New()
	r.Remember("cs", secret)
	var buf bytes.Buffer
	log := slog.New(NewHandler(slog.NewJSONHandler(&buf, nil), r))
	log = log.With("bound", "x"+secret)
	log.Warn("echo "+secret, "s", secret, "err", errTest(secret), "any", []string{secret}, slog.Group("g", "inner", url.QueryEscape(secret)))
	out := buf.String()
	for _, enc := range []string{secret, jsonNoHTML(secret), url.QueryEscape(secret), secret[:Window]} {
		if strings.Contains(out, enc) {
			t.Errorf("the log line holds the secret: %s", out)
		}
	}
	if strings.Count(out, Placeholder) < 6 {
		t.Errorf("want six placeholders: %s", out)
	}
}

type errTest string

func (e errTest) Error() string { return "failed with " + string(e) }

type memStore map[string]broker.StoredSecret

func (m memStore) Get(_ context.Context, n string) (broker.StoredSecret, error) {
	s, ok := m[n]
	if !ok {
		return s, broker.ErrSecretNotFound
	}
	return s, nil
}

func (m memStore) Set(_ context.Context, n string, s broker.StoredSecret) error {
	m[n] = s
	return nil
}

func TestStoreRegistersWhatItReadsAndWrites(t *testing.T) {
	r := New()
	s := Store(memStore{"cs": {Value: broker.Secret(secret)}}, r)
	if _, err := s.Get(context.Background(), "cs"); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(context.Background(), "rt", broker.StoredSecret{Value: "rt-written-000000000"}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{secret, "rt-written-000000000"} {
		if !r.Contains(v) {
			t.Errorf("%.6s… was not registered", v)
		}
	}
}

// TestConsentRecordsRegisterOnlyTheVerifier: the consent flow's bookkeeping
// records (broker.ConsentRecord) are JSON whose other fields are public: the
// connection's name, the callback address, timestamps. Registered whole,
// every 12 characters they share with a status answer were cut out of it
// (the status of a connection consented a minute ago lost its dates and its
// name). Only the PKCE verifier is a secret.
func TestConsentRecordsRegisterOnlyTheVerifier(t *testing.T) {
	const verifier = "verifier-0123456789abcdefghijklmnopqrstuvwxyzABCD"
	pending := `{"state":"erp-demo.AAAAAADLCZTJZSZVTRF45ABV4IRIRACMSY5Z","verifier":"` + verifier +
		`","redirectUri":"http://127.0.0.1:41959/api/consent/callback","expiry":"2026-12-07T07:56:12.5Z"}`
	used := `{"d1b6a0b7c1e2":"2026-12-07T07:56:12.5Z"}`
	status := `{"accessTokenExpiresOn":"2026-12-07T08:16:12.5Z","name":"erp-demo","redirect":"http://127.0.0.1:41959/api/consent/callback"}`
	for _, tc := range []struct {
		name, value string
		read        bool
	}{
		{"erp-demo-consent-state", pending, false},
		{"erp-demo-consent-state", pending, true},
		{"erp-demo-consent-links-used", used, false},
		{"erp-demo-consent-links-used", used, true},
	} {
		r := New()
		m := memStore{}
		s := Store(m, r)
		var err error
		if tc.read {
			m[tc.name] = broker.StoredSecret{Value: broker.Secret(tc.value)}
			_, err = s.Get(context.Background(), tc.name)
		} else {
			err = s.Set(context.Background(), tc.name, broker.StoredSecret{Value: broker.Secret(tc.value)})
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := r.String(status); got != status {
			t.Errorf("%s (read %v): a status answer became %s", tc.name, tc.read, got)
		}
		if strings.Contains(tc.value, verifier) && !r.Contains("code_verifier="+verifier) {
			t.Errorf("%s (read %v): the PKCE verifier is not registered", tc.name, tc.read)
		}
	}
	// A connection's secret whose name merely ends alike is registered whole.
	r := New()
	if err := Store(memStore{}, r).Set(context.Background(), "x-client-secret", broker.StoredSecret{Value: broker.Secret(pending)}); err != nil {
		t.Fatal(err)
	}
	if !r.Contains(pending) {
		t.Error("an ordinary secret holding JSON was not registered whole")
	}
}

// BenchmarkScan measures a scan of a 1 KiB log line with 100 connections'
// secrets registered (a client secret, a refresh token, a 1.5 KB JWT).
func BenchmarkScan(b *testing.B) {
	r := New()
	for i := range 100 {
		n := string(rune('a'+i%26)) + strings.Repeat("x", i)
		r.Remember(n+"cs", "cs-"+n+"-0123456789abcdef0123456789")
		r.Remember(n+"rt", "rt-"+n+strings.Repeat("-0123456789abcdef", 6))
		r.Remember(n+"at", "eyJ"+n+strings.Repeat("QWxhZGRpbjpvcGVuIHNlc2FtZQ", 60))
	}
	line := []byte(strings.Repeat(`{"level":"WARN","msg":"token request failed","connection":"xero"} `, 16))
	b.SetBytes(int64(len(line)))
	b.ResetTimer()
	for range b.N {
		_ = r.Bytes(line)
	}
}
