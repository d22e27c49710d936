package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// TestForceRefreshTooSoonIsRetryable: a force-refresh answered 429 with a
// Retry-After is retryable after that time, and says so.
func TestForceRefreshTooSoonIsRetryable(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	b := e.broker([]broker.Connection{c})
	ctx := context.Background()
	if _, err := b.ForceRefresh(ctx, "xero"); err != nil {
		t.Fatal(err)
	}
	_, err := b.ForceRefresh(ctx, "xero")
	var be *broker.Error
	if !errors.As(err, &be) || be.Code != broker.CodeTooManyRequests || be.RetryAfter <= 0 {
		t.Fatalf("second force-refresh: %v, want too_many_requests with a RetryAfter", err)
	}
	if !be.Retryable() {
		t.Errorf("a 429 with Retry-After %v is not retryable", be.RetryAfter)
	}
	if got := be.Code.HTTPStatus(); got != http.StatusTooManyRequests {
		t.Errorf("HTTP status %d, want 429", got)
	}
}

// TestStatusSaysRetriedOnce: the next action of a failing connection says
// once that it is retried, whether this instance failed or a peer did.
func TestStatusSaysRetriedOnce(t *testing.T) {
	for _, tt := range []struct {
		name  string
		fault testprovider.FaultKind
	}{
		{"server error", testprovider.FaultServerError},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testprovider.Config{Rotate: true})
			c := e.conn("xero", broker.GrantRefreshToken)
			e.seed(c)
			sl := &statusLocker{Locker: e.locker, status: map[string]broker.SharedStatus{}}
			a := e.broker([]broker.Connection{c}, func(o *broker.Options) { o.Locker = sl; o.Instance = "a" })
			peer := e.broker([]broker.Connection{c}, func(o *broker.Options) { o.Locker = sl; o.Instance = "b" })
			ctx := context.Background()
			e.provider.InjectFault(testprovider.Fault{Kind: tt.fault})
			if _, err := a.Token(ctx, "xero", 0); err == nil {
				t.Fatal("the injected fault did not fail the call")
			}
			for who, b := range map[string]*broker.Broker{"failing instance": a, "peer": peer} {
				st, _ := b.ConnectionStatus(ctx, "xero")
				if st.State != broker.StateFailing {
					t.Fatalf("%s: state %s, want failing", who, st.State)
				}
				if n := strings.Count(strings.ToLower(st.NextAction), "retried"); n != 1 {
					t.Errorf("%s: next action says %d times that it is retried:\n%s", who, n, st.NextAction)
				}
				if s, ok := repeatedSentence(st.NextAction); ok {
					t.Errorf("%s: next action repeats %q:\n%s", who, s, st.NextAction)
				}
			}
		})
	}
}

// repeatedSentence returns a sentence (or clause) that text has twice.
func repeatedSentence(text string) (string, bool) {
	seen := map[string]bool{}
	for _, s := range strings.FieldsFunc(text, func(r rune) bool { return r == '.' || r == ';' }) {
		s = strings.ToLower(strings.TrimSpace(s))
		if s == "" {
			continue
		}
		if seen[s] {
			return s, true
		}
		seen[s] = true
	}
	return "", false
}

// TestSharedFailureWords: a failure a peer recorded beside the lock by
// one word, as this version (a category) or an older one (an RFC 6749
// code, an ErrorCode) wrote it, is answered from the vocabulary.
func TestSharedFailureWords(t *testing.T) {
	tests := []struct {
		word     string
		code     broker.ErrorCode
		category string
		mention  string
	}{
		{"reauthorize", broker.CodeRejected, "reauthorize", `secret "xero-refresh-token"`},
		{"invalid_grant", broker.CodeRejected, "reauthorize", `secret "xero-refresh-token"`},
		{"rotate_client_secret", broker.CodeRejected, "rotate_client_secret", `secret "xero-client-secret"`},
		{"provider_rejected", broker.CodeRejected, "fix_configuration", "connections file"},
		{"lock_unavailable", broker.CodeUnavailable, "lock_unavailable", "lock storage"},
		{"provider_outage", broker.CodeProviderFailed, "provider_outage", "retried"},
		{"provider_unavailable", broker.CodeProviderFailed, "provider_unavailable", "Retried on the next call or sweep"},
	}
	for _, tt := range tests {
		t.Run(tt.word, func(t *testing.T) {
			e := newEnv(t, testprovider.Config{Rotate: true})
			c := e.conn("xero", broker.GrantRefreshToken)
			e.seed(c)
			sl := &statusLocker{Locker: e.locker, status: map[string]broker.SharedStatus{
				"xero": {LastError: tt.word, Failures: 2, Instance: "peer", RecordedOn: e.clock.Now()},
			}}
			b := e.broker([]broker.Connection{c}, func(o *broker.Options) { o.Locker = sl })
			st, _ := b.ConnectionStatus(context.Background(), "xero")
			if st.LastError == nil || st.LastError.Code != tt.code || st.LastError.Category != tt.category {
				t.Fatalf("last error %+v, want code %s category %s", st.LastError, tt.code, tt.category)
			}
			if !strings.Contains(st.LastError.Remediation, tt.mention) {
				t.Errorf("remediation does not mention %q:\n%s", tt.mention, st.LastError.Remediation)
			}
		})
	}
}

// TestStatusSaysWhoseRefreshes: the refresh counter is the answering
// instance's, named so, and absent where that instance refreshed nothing
// (handler status), rather than a 0 that reads as "never refreshed".
func TestStatusSaysWhoseRefreshes(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	c := e.conn("xero", broker.GrantRefreshToken)
	e.seed(c)
	refresher, reader := e.broker([]broker.Connection{c}), e.broker([]broker.Connection{c})
	ctx := context.Background()
	if _, err := refresher.Token(ctx, "xero", 0); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		b    *broker.Broker
		want string // the JSON member, "" for none
	}{
		{"the instance that refreshed", refresher, `"refreshesByThisInstance":1`},
		{"an instance that did not", reader, ""},
	} {
		st, _ := tt.b.ConnectionStatus(ctx, "xero")
		js, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(js, []byte(`"refreshes"`)) {
			t.Errorf("%s: status has an unqualified refreshes count: %s", tt.name, js)
		}
		if tt.want != "" && !bytes.Contains(js, []byte(tt.want)) {
			t.Errorf("%s: status lacks %s: %s", tt.name, tt.want, js)
		}
		if tt.want == "" && bytes.Contains(js, []byte("refreshesByThisInstance")) {
			t.Errorf("%s: status counts refreshes it did not do: %s", tt.name, js)
		}
	}
}

// TestVocabularyIsComplete: every category has an answer, a meaning and a
// remediation that names the connection, every error code an HTTP status,
// and every provider code a category of the vocabulary.
func TestVocabularyIsComplete(t *testing.T) {
	c := &broker.Connection{Name: "x", Grant: broker.GrantRefreshToken, Secrets: broker.DefaultSecretNames("x")}
	for _, k := range broker.FailureKinds() {
		if k.Means == "" || k.Code == "" || k.Code.HTTPStatus() == http.StatusInternalServerError {
			t.Errorf("%s: incomplete row %+v", k.Category, k)
		}
		if k.Permanent != (k.Code == broker.CodeRejected) {
			t.Errorf("%s: permanent %v but answered %s", k.Category, k.Permanent, k.Code)
		}
		if !k.Permanent && k.RetryAfter <= 0 {
			t.Errorf("%s: passes by itself, yet tells no Retry-After", k.Category)
		}
		r := k.Remediation(c)
		if strings.ContainsAny(r, "{}") || !strings.HasSuffix(r, ".") {
			t.Errorf("%s: remediation %q has a placeholder left or is not a sentence", k.Category, r)
		}
		if got, ok := broker.Failure(k.Category); !ok || got.Category != k.Category || k.Category.Permanent() != k.Permanent {
			t.Errorf("%s: Failure and Permanent disagree with the table", k.Category)
		}
	}
	for _, code := range broker.ProviderCodes() {
		cat, ok := broker.CodeCategory(code)
		if _, known := broker.Failure(cat); !ok || !known {
			t.Errorf("provider code %q maps to %q, which the vocabulary lacks", code, cat)
		}
	}
	for _, code := range []broker.ErrorCode{broker.CodeBadRequest, broker.CodeForbidden, broker.CodeNotFound, broker.CodeRejected,
		broker.CodeNotConfigured, broker.CodeProviderFailed, broker.CodeUnavailable, broker.CodeTooManyRequests} {
		if code.HTTPStatus() == http.StatusInternalServerError {
			t.Errorf("%s has no HTTP status", code)
		}
	}
}

// The README's troubleshooting table is generated from the vocabulary, so
// the two cannot drift: TestREADMETroubleshootingTable fails when they
// differ, and rewrites the table when run with -update-readme.
var updateREADME = flag.Bool("update-readme", false, "rewrite the troubleshooting table in README.md from the failure vocabulary")

const (
	readmePath           = "../../../README.md"
	troubleshootingBegin = "<!-- BEGIN generated from handler/internal/broker/failures.go; to change, edit the vocabulary and run: go test ./handler/internal/broker -run TestREADMETroubleshootingTable -update-readme -->"
	troubleshootingEnd   = "<!-- END generated troubleshooting table -->"
)

func TestREADMETroubleshootingTable(t *testing.T) {
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	begin := bytes.Index(readme, []byte(troubleshootingBegin))
	end := bytes.Index(readme, []byte(troubleshootingEnd))
	if begin < 0 || end < begin {
		t.Fatalf("%s has no %q ... %q block for the troubleshooting table", readmePath, troubleshootingBegin, troubleshootingEnd)
	}
	begin += len(troubleshootingBegin)
	want := "\n" + troubleshootingTable()
	if string(readme[begin:end]) == want {
		return
	}
	if !*updateREADME {
		t.Fatalf("the troubleshooting table in %s is not what the failure vocabulary says; run\n\tgo test ./handler/internal/broker -run TestREADMETroubleshootingTable -update-readme\nwant:%s", readmePath, want)
	}
	updated := slices.Concat(readme[:begin], []byte(want), readme[end:])
	if err := os.WriteFile(readmePath, updated, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("rewrote the troubleshooting table in %s", readmePath)
}

// troubleshootingTable renders the vocabulary as the README shows it: one
// row a category, with the answer, the provider error codes that fall in
// it, and the remediation for a connection named x.
func troubleshootingTable() string {
	codes := map[broker.Category][]string{}
	for _, code := range broker.ProviderCodes() {
		cat, _ := broker.CodeCategory(code)
		codes[cat] = append(codes[cat], "`"+code+"`")
	}
	c := &broker.Connection{Name: "x", Grant: broker.GrantRefreshToken, Secrets: broker.DefaultSecretNames("x"),
		AuthStyle: broker.AuthStyle("basic"), TokenURL: "https://login.example.com/token"}
	var b strings.Builder
	b.WriteString("| you see | category | it means | do this |\n| --- | --- | --- | --- |\n")
	for _, k := range broker.FailureKinds() {
		see := fmt.Sprintf("`%d %s`", k.Code.HTTPStatus(), k.Code)
		if !k.Permanent {
			see += fmt.Sprintf(", `Retry-After` ≥ %s", k.RetryAfter)
		}
		means := k.Means
		if cs := codes[k.Category]; len(cs) > 0 {
			slices.Sort(cs)
			means += " (error " + strings.Join(cs, ", ") + ")"
		}
		fmt.Fprintf(&b, "| %s | `%s` | %s | %s |\n", see, k.Category, means, k.Remediation(c))
	}
	b.WriteString("\nThe remediation a caller gets is more precise when the provider's answer says more: an AADSTS\n" +
		"code, a provider's status or a known error description names the exact secret or setting\n" +
		"(package diagnose), and Key Vault's answer names the role, firewall rule or deleted secret.\n")
	return b.String()
}
