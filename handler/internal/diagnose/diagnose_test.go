package diagnose

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// Connections the fixtures are diagnosed for, one per kind of provider.
var (
	entraUser = &broker.Connection{Name: "graph", Provider: "microsoft", Grant: broker.GrantRefreshToken,
		TokenURL:  "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
		AuthStyle: broker.AuthBody, Secrets: broker.DefaultSecretNames("graph")}
	entraApp = &broker.Connection{Name: "graph-app", Provider: "microsoft", Grant: broker.GrantClientCredentials,
		TokenURL:  "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
		AuthStyle: broker.AuthBody, Secrets: broker.DefaultSecretNames("graph-app")}
	xero = &broker.Connection{Name: "xero", Provider: "xero", Grant: broker.GrantRefreshToken, Rotating: true,
		TokenURL: "https://identity.xero.com/connect/token", AuthStyle: broker.AuthBasic,
		Secrets: broker.DefaultSecretNames("xero")}
	gmail = &broker.Connection{Name: "gmail", Provider: "google", Grant: broker.GrantRefreshToken,
		TokenURL: "https://oauth2.googleapis.com/token", AuthStyle: broker.AuthBody,
		Secrets: broker.DefaultSecretNames("gmail")}
	crm = &broker.Connection{Name: "crm", Provider: "salesforce", Grant: broker.GrantRefreshToken,
		TokenURL: "https://login.salesforce.com/services/oauth2/token", AuthStyle: broker.AuthBody,
		Secrets: broker.DefaultSecretNames("crm")}
	crmApp = &broker.Connection{Name: "crm-app", Provider: "salesforce", Grant: broker.GrantClientCredentials,
		TokenURL: "https://example.my.salesforce.com/services/oauth2/token", AuthStyle: broker.AuthBody,
		Secrets: broker.DefaultSecretNames("crm-app")}
	hubspot = &broker.Connection{Name: "hubspot", Provider: "hubspot", Grant: broker.GrantRefreshToken,
		TokenURL: "https://api.hubapi.com/oauth/2026-03/token", AuthStyle: broker.AuthBody,
		Secrets: broker.DefaultSecretNames("hubspot")}
	ilevel = &broker.Connection{Name: "ilevel", Provider: "generic", Grant: broker.GrantClientCredentials,
		TokenURL: "https://example.invalid/token", AuthStyle: broker.AuthBody,
		Secrets: broker.DefaultSecretNames("ilevel")}
)

// Which of a connection's secrets a remediation must name.
const (
	nameNone = iota
	nameRefreshToken
	nameClientSecret
	nameClientID
)

type fixtureCase struct {
	file    string
	conn    *broker.Connection
	want    Category
	dead    bool
	aadsts  string
	secret  int
	mention string // another phrase the remediation must contain
}

var fixtureCases = []fixtureCase{
	{file: "entra-70002-adal.txt", conn: entraApp, want: RotateClientSecret, aadsts: "AADSTS70002", secret: nameClientSecret},
	{file: "entra-70002-missing-secret.txt", conn: entraUser, want: RotateClientSecret, aadsts: "AADSTS70002", secret: nameClientSecret},
	{file: "entra-70003.txt", conn: entraUser, want: FixConfiguration, aadsts: "AADSTS70003", mention: `"grant"`},
	{file: "entra-70008.txt", conn: entraUser, want: Reauthorize, dead: true, aadsts: "AADSTS70008", secret: nameRefreshToken},
	{file: "entra-700082.txt", conn: entraUser, want: Reauthorize, dead: true, aadsts: "AADSTS700082", secret: nameRefreshToken, mention: "timer"},
	{file: "entra-7000215.txt", conn: entraApp, want: RotateClientSecret, aadsts: "AADSTS7000215", secret: nameClientSecret, mention: "Value"},
	{file: "entra-7000222.txt", conn: entraApp, want: RotateClientSecret, aadsts: "AADSTS7000222", secret: nameClientSecret, mention: "Certificates & secrets"},
	{file: "entra-7000218.txt", conn: entraUser, want: FixConfiguration, aadsts: "AADSTS7000218", secret: nameClientSecret},
	{file: "entra-50173.txt", conn: entraUser, want: Reauthorize, dead: true, aadsts: "AADSTS50173", secret: nameRefreshToken, mention: "password"},
	{file: "entra-50076.txt", conn: entraUser, want: UserInteractionRequired, dead: true, aadsts: "AADSTS50076", secret: nameRefreshToken, mention: "multi-factor"},
	{file: "entra-50079.txt", conn: entraUser, want: UserInteractionRequired, dead: true, aadsts: "AADSTS50079", secret: nameRefreshToken, mention: "register"},
	{file: "entra-53003.txt", conn: entraUser, want: UserInteractionRequired, aadsts: "AADSTS53003", mention: "Conditional Access"},
	{file: "entra-53003.txt", conn: entraApp, want: FixConfiguration, aadsts: "AADSTS53003", mention: "service principal sign-in logs"},
	{file: "entra-65001.txt", conn: entraUser, want: Reauthorize, dead: true, aadsts: "AADSTS65001", secret: nameRefreshToken, mention: "consent"},
	{file: "entra-65001.txt", conn: entraApp, want: FixConfiguration, aadsts: "AADSTS65001", mention: "Grant admin consent"},
	{file: "entra-50053.txt", conn: entraUser, want: AccountLocked, aadsts: "AADSTS50053", mention: "sign-in logs"},
	{file: "entra-50057.txt", conn: entraUser, want: AccountLocked, aadsts: "AADSTS50057", secret: nameRefreshToken, mention: "disabled"},
	{file: "entra-700016.txt", conn: entraUser, want: FixConfiguration, aadsts: "AADSTS700016", secret: nameClientID, mention: "tenant"},
	{file: "entra-70011.txt", conn: entraUser, want: FixConfiguration, aadsts: "AADSTS70011", mention: "scopes"},
	{file: "entra-90002.txt", conn: entraUser, want: FixConfiguration, aadsts: "AADSTS90002", mention: `"tenant"`},
	{file: "entra-900144.txt", conn: entraUser, want: FixConfiguration, aadsts: "AADSTS900144", secret: nameClientSecret},
	{file: "entra-9002313.txt", conn: entraUser, want: Reauthorize, dead: true, aadsts: "AADSTS9002313", secret: nameRefreshToken},
	{file: "entra-500133-wrapped.txt", conn: entraUser, want: FixConfiguration, aadsts: "AADSTS500133", mention: "clock"},
	{file: "entra-70000.txt", conn: entraUser, want: Reauthorize, dead: true, aadsts: "AADSTS70000", secret: nameRefreshToken},

	{file: "google-invalid-grant.txt", conn: gmail, want: Reauthorize, dead: true, secret: nameRefreshToken, mention: "Testing"},
	{file: "google-invalid-client.txt", conn: gmail, want: FixConfiguration, secret: nameClientID},
	{file: "google-deleted-client.txt", conn: gmail, want: FixConfiguration, secret: nameClientSecret, mention: "deleted"},
	{file: "salesforce-expired.txt", conn: crm, want: Reauthorize, dead: true, secret: nameRefreshToken},
	{file: "salesforce-inactive-user.txt", conn: crm, want: AccountLocked, secret: nameRefreshToken, mention: "reactivate"},
	{file: "salesforce-inactive-user.txt", conn: crmApp, want: FixConfiguration, mention: "run-as user"},
	{file: "salesforce-authentication-failure.txt", conn: crm, want: FixConfiguration, secret: nameRefreshToken, mention: "connected app"},
	{file: "salesforce-authentication-failure.txt", conn: crmApp, want: FixConfiguration, secret: nameClientSecret, mention: "run-as user"},
	{file: "salesforce-invalid-client-id.txt", conn: crm, want: FixConfiguration, secret: nameClientID, mention: "Consumer Key"},
	{file: "salesforce-invalid-client.txt", conn: crm, want: RotateClientSecret, secret: nameClientSecret},
	{file: "xero-invalid-grant.txt", conn: xero, want: Reauthorize, dead: true, secret: nameRefreshToken},
	{file: "xero-invalid-client.txt", conn: xero, want: RotateClientSecret, secret: nameClientSecret, mention: `clientAuth "basic"`},
	{file: "hubspot-bad-refresh-token-legacy.txt", conn: hubspot, want: Reauthorize, dead: true, secret: nameRefreshToken},
	{file: "hubspot-bad-refresh-token.txt", conn: hubspot, want: Reauthorize, dead: true, secret: nameRefreshToken},
	{file: "hubspot-bad-hub.txt", conn: hubspot, want: Reauthorize, dead: true, secret: nameRefreshToken, mention: "install the app"},
	{file: "ilevel-invalid-client.txt", conn: ilevel, want: RotateClientSecret, secret: nameClientSecret},
}

// fixture is a token endpoint's answer quoted in testdata: "#" lines (at
// least one "# source: "), a "status: N" line, a blank line, the body.
type fixture struct {
	status int
	body   []byte
}

func readFixture(t *testing.T, name string) fixture {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	head, body, ok := bytes.Cut(data, []byte("\n\n"))
	if !ok {
		t.Fatalf("%s: no blank line between the header and the body", name)
	}
	var f fixture
	sourced := false
	for line := range strings.Lines(string(head)) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "# source: "):
			sourced = true
		case strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "status: "):
			if f.status, err = strconv.Atoi(strings.TrimPrefix(line, "status: ")); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		default:
			t.Fatalf("%s: unexpected header line %q", name, line)
		}
	}
	if !sourced || f.status == 0 {
		t.Fatalf("%s: the header needs a source and a status", name)
	}
	f.body = bytes.TrimSpace(body)
	return f
}

var uuidInText = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)

func TestDiagnoseRealAnswers(t *testing.T) {
	for _, tc := range fixtureCases {
		t.Run(tc.file+"/"+tc.conn.Name, func(t *testing.T) {
			f := readFixture(t, tc.file)
			body := ParseBody(f.body)
			if body.Code == "" && body.Status == "" {
				t.Fatalf("ParseBody found no error code in %s", f.body)
			}
			d := Diagnose(Input{Connection: tc.conn, HTTPStatus: f.status, Body: body})

			if d.Category != tc.want {
				t.Errorf("Category = %q, want %q (summary: %s)", d.Category, tc.want, d.Summary)
			}
			if !d.Permanent || d.Permanent != d.Category.Permanent() {
				t.Errorf("Permanent = %v for %q, want true", d.Permanent, d.Category)
			}
			if d.RefreshTokenDead != tc.dead {
				t.Errorf("RefreshTokenDead = %v, want %v", d.RefreshTokenDead, tc.dead)
			}
			if d.AADSTS != tc.aadsts {
				t.Errorf("AADSTS = %q, want %q", d.AADSTS, tc.aadsts)
			}
			if d.RetryAfter != 0 {
				t.Errorf("RetryAfter = %v for a permanent failure", d.RetryAfter)
			}
			checkNames(t, d.Remediation, tc.conn, tc.secret)
			if tc.mention != "" && !strings.Contains(d.Remediation, tc.mention) {
				t.Errorf("Remediation does not mention %q:\n%s", tc.mention, d.Remediation)
			}
			if tc.aadsts != "" && !strings.Contains(d.Summary, tc.aadsts) {
				t.Errorf("Summary does not give the code %s: %s", tc.aadsts, d.Summary)
			}
			// Nothing the provider wrote may come back out.
			for _, id := range uuidInText.FindAllString(string(f.body), -1) {
				if strings.Contains(d.Summary+d.Remediation, id) {
					t.Errorf("provider id %s leaked into the diagnosis", id)
				}
			}
			if desc := body.Description; len(desc) > 20 && strings.Contains(d.Summary+d.Remediation, desc[:20]) {
				t.Errorf("the provider's description leaked into the diagnosis")
			}
		})
	}
}

// checkNames asserts that a remediation names the connection, the secret
// it should, and no refresh-token secret for a client-credentials one.
func checkNames(t *testing.T, remediation string, c *broker.Connection, secret int) {
	t.Helper()
	if !strings.Contains(remediation, strconv.Quote(c.Name)) {
		t.Errorf("Remediation does not name connection %q:\n%s", c.Name, remediation)
	}
	want := map[int]string{nameRefreshToken: c.Secrets.RefreshToken, nameClientSecret: c.Secrets.ClientSecret,
		nameClientID: c.Secrets.ClientID}[secret]
	if want != "" && !strings.Contains(remediation, "secret "+strconv.Quote(want)) {
		t.Errorf("Remediation does not name secret %q:\n%s", want, remediation)
	}
	if c.Grant == broker.GrantClientCredentials && strings.Contains(remediation, c.Secrets.RefreshToken) {
		t.Errorf("a client-credentials remediation names the refresh token secret:\n%s", remediation)
	}
	if strings.ContainsAny(remediation, "{}") {
		t.Errorf("Remediation has an unfilled placeholder:\n%s", remediation)
	}
}

func TestEveryListedCodeHasARealAnswer(t *testing.T) {
	// The codes issue 5 asks for by name.
	required := []int{70002, 70003, 70008, 700082, 7000215, 7000222, 7000218, 50173, 50076, 50079,
		53003, 65001, 50053, 50057, 700016, 70011, 90002, 900144}
	for _, code := range required {
		name := "AADSTS" + strconv.Itoa(code)
		if !slices.ContainsFunc(fixtureCases, func(tc fixtureCase) bool { return tc.aadsts == name }) {
			t.Errorf("no fixture for %s", name)
		}
		if _, ok := entraCodes[code]; !ok {
			t.Errorf("%s is not in the table", name)
		}
	}
}

func TestEveryFixtureIsUsed(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		base := filepath.Base(f)
		if !slices.ContainsFunc(fixtureCases, func(tc fixtureCase) bool { return tc.file == base }) {
			t.Errorf("testdata/%s is not diagnosed by any test", base)
		}
	}
}

// allAdvice is every advice in the package's tables, by a name for test
// output.
func allAdvice() map[string]advice {
	all := map[string]advice{
		"throttled": adviceThrottled, "outage": adviceOutage, "unknown code": adviceUnknownCode,
		"network": networkAdvice(errors.New("x")),
	}
	for _, s := range []int{200, 302, 400, 401, 403, 404, 408, 418} {
		all["HTTP "+strconv.Itoa(s)] = statusAdvice(s)
	}
	for code, a := range entraCodes {
		all["AADSTS"+strconv.Itoa(code)] = a
	}
	for code, a := range errorCodes {
		all[code] = a
	}
	for status, a := range hubspotStatuses {
		all[status] = a
	}
	for _, r := range descriptionRules {
		all[r.code+" / "+r.phrase] = r.advice
	}
	return all
}

func TestEveryAdviceIsComplete(t *testing.T) {
	if len(entraCodes) < 25 {
		t.Errorf("the Entra table has %d codes, want at least 25", len(entraCodes))
	}
	for code := range entraWrappers {
		if _, ok := entraCodes[code]; !ok {
			t.Errorf("wrapper AADSTS%d is not in the table", code)
		}
	}
	for name, a := range allAdvice() {
		for _, variant := range []*advice{&a, a.appOnly} {
			if variant == nil {
				continue
			}
			if !slices.Contains(Categories(), variant.category) {
				t.Errorf("%s: invalid category %q", name, variant.category)
			}
			if variant.what == "" || variant.fix == "" {
				t.Errorf("%s: empty meaning or remediation", name)
			}
			if variant.what != strings.ToLower(variant.what[:1])+variant.what[1:] || strings.HasSuffix(variant.what, ".") {
				t.Errorf("%s: meaning %q must be a phrase that continues a sentence", name, variant.what)
			}
		}
		for _, c := range []*broker.Connection{entraUser, entraApp, xero, ilevel} {
			fix := a
			if c.Grant == broker.GrantClientCredentials && a.needsUser() && a.appOnly != nil {
				fix = *a.appOnly
			}
			r := render(fix.fix, Input{Connection: c}, c.Grant, unnamedProvider)
			if !strings.Contains(r, strconv.Quote(c.Name)) && !strings.Contains(r, c.Secrets.ClientSecret) {
				t.Errorf("%s: remediation names neither the connection nor a secret of it:\n%s", name, r)
			}
			if strings.ContainsAny(r, "{}") {
				t.Errorf("%s: remediation has an unknown placeholder:\n%s", name, r)
			}
			if !strings.HasSuffix(r, ".") {
				t.Errorf("%s: remediation is not a finished sentence:\n%s", name, r)
			}
		}
	}
}

// TestClientCredentialsNeverNeedAUser diagnoses every advice in the tables
// for a client-credentials connection: there is no person and no refresh
// token to blame.
func TestClientCredentialsNeverNeedAUser(t *testing.T) {
	for name, a := range allAdvice() {
		fixed := a
		if a.needsUser() {
			fixed = advice{category: FixConfiguration, fix: fixAppOnly}
			if a.appOnly != nil {
				fixed = *a.appOnly
			}
		}
		if fixed.needsUser() {
			t.Errorf("%s: the client-credentials advice still needs a user (%q)", name, fixed.category)
		}
	}
	for code := range entraCodes {
		d := Diagnose(Input{Connection: entraApp, HTTPStatus: 400,
			Body: Body{Code: "invalid_grant", ErrorCodes: []int{code}}})
		if d.RefreshTokenDead || slices.Contains([]Category{Reauthorize, UserInteractionRequired, AccountLocked}, d.Category) {
			t.Errorf("AADSTS%d for a client-credentials connection: %q, refresh token dead %v", code, d.Category, d.RefreshTokenDead)
		}
		checkNames(t, d.Remediation, entraApp, nameNone)
	}
}

func TestDiagnoseWithoutAnOAuthError(t *testing.T) {
	dnsErr := &net.DNSError{Err: "no such host", Name: "identity.xero.com", IsNotFound: true}
	dialErr := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	tests := []struct {
		name       string
		in         Input
		want       Category
		retryAfter time.Duration
		summary    string
		mention    string
	}{
		{name: "timeout", in: Input{Err: context.DeadlineExceeded}, want: Transient, summary: "did not answer in time", mention: "identity.xero.com"},
		{name: "dns", in: Input{Err: &net.OpError{Op: "dial", Err: dnsErr}}, want: Transient, summary: "could not be resolved"},
		{name: "refused", in: Input{Err: dialErr}, want: Transient, summary: "could not be reached"},
		{name: "reset", in: Input{Err: io.ErrUnexpectedEOF}, want: Transient, summary: "connection to the token endpoint failed"},
		{name: "no error at all", in: Input{}, want: Transient},
		{name: "error answer cut off", in: Input{HTTPStatus: 400, Err: io.ErrUnexpectedEOF}, want: Transient},
		{name: "malformed success", in: Input{HTTPStatus: 200, Err: errors.New("malformed")}, want: Transient, summary: "without a usable token"},
		{name: "redirect", in: Input{HTTPStatus: 302}, want: FixConfiguration, mention: "token URL"},
		{name: "bare 400", in: Input{HTTPStatus: 400}, want: FixConfiguration, mention: `clientAuth "basic"`},
		{name: "bare 401", in: Input{HTTPStatus: 401}, want: RotateClientSecret, mention: `secret "xero-client-secret"`},
		{name: "bare 403", in: Input{HTTPStatus: 403}, want: FixConfiguration, mention: "identity.xero.com"},
		{name: "not found", in: Input{HTTPStatus: 404}, want: FixConfiguration, mention: "token URL"},
		{name: "request timeout", in: Input{HTTPStatus: 408}, want: Transient},
		{name: "rate limited", in: Input{HTTPStatus: 429, RetryAfter: 30 * time.Second}, want: Throttled, retryAfter: 30 * time.Second, mention: "after 30s"},
		{name: "rate limited whatever the body", in: Input{HTTPStatus: 429, Body: Body{Code: "invalid_grant"}}, want: Throttled, mention: "after a pause"},
		{name: "server error", in: Input{HTTPStatus: 500}, want: ProviderOutage},
		{name: "unavailable", in: Input{HTTPStatus: 503, RetryAfter: time.Minute, Body: Body{Code: "temporarily_unavailable"}}, want: ProviderOutage, retryAfter: time.Minute},
		{name: "temporarily_unavailable on 400", in: Input{HTTPStatus: 400, Body: Body{Code: "temporarily_unavailable"}}, want: ProviderOutage},
		{name: "error inside a 200", in: Input{HTTPStatus: 200, Body: Body{Code: "invalid_grant"}}, want: Reauthorize},
		{name: "unknown code", in: Input{HTTPStatus: 400, Body: Body{Code: "invalid_foo"}}, want: FixConfiguration, summary: "does not know"},
		{name: "Entra throttling code", in: Input{HTTPStatus: 400, Body: Body{Code: "invalid_request", ErrorCodes: []int{50196}}}, want: Throttled},
		{name: "Entra transient code", in: Input{HTTPStatus: 400, Body: Body{Code: "invalid_request", ErrorCodes: []int{90024}}}, want: Transient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Connection = xero
			d := Diagnose(tt.in)
			if d.Category != tt.want || d.Permanent != tt.want.Permanent() {
				t.Errorf("got %q (permanent %v), want %q (%s)", d.Category, d.Permanent, tt.want, d.Summary)
			}
			if d.RetryAfter != tt.retryAfter {
				t.Errorf("RetryAfter = %v, want %v", d.RetryAfter, tt.retryAfter)
			}
			if !strings.Contains(d.Summary, tt.summary) {
				t.Errorf("Summary %q does not say %q", d.Summary, tt.summary)
			}
			if !strings.Contains(d.Remediation, tt.mention) {
				t.Errorf("Remediation does not mention %q:\n%s", tt.mention, d.Remediation)
			}
			checkNames(t, d.Remediation, xero, nameNone)
		})
	}
}

func TestPickAADSTS(t *testing.T) {
	tests := []struct {
		name        string
		description string
		codes       []int
		want        int
		known       bool
	}{
		{name: "none", description: "invalid client credentials"},
		{name: "one", description: "AADSTS700082: The refresh token has expired", want: 700082, known: true},
		{name: "not a prefix of a longer code", description: "AADSTS7000222: expired", want: 7000222, known: true},
		{name: "error_codes only", codes: []int{7000222}, want: 7000222, known: true},
		{name: "wrapper before the specific code",
			description: "AADSTS70002: Error validating credentials. AADSTS500133: Assertion is not within its valid time range",
			codes:       []int{70002, 500133}, want: 500133, known: true},
		{name: "wrapper with an unknown code", description: "AADSTS70002: Error validating credentials. AADSTS50012: Invalid client secret is provided.",
			want: 70002, known: true},
		{name: "known code after an unknown one", description: "AADSTS530084: blocked", codes: []int{530084, 50076}, want: 50076, known: true},
		{name: "unknown", description: "AADSTS530084: Access has been blocked by conditional access token protection policy", want: 530084},
		{name: "absurdly long digits", description: "AADSTS12345678901234567890"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, known := pickAADSTS(tt.description, tt.codes)
			if got != tt.want || known != tt.known {
				t.Errorf("pickAADSTS = %d, %v; want %d, %v", got, known, tt.want, tt.known)
			}
		})
	}
}

func TestUnknownAADSTSFallsBackToTheErrorCode(t *testing.T) {
	// https://github.com/Azure/azure-dev/issues/7704: a code newer than the
	// table.
	d := Diagnose(Input{Connection: entraUser, HTTPStatus: 400, Body: Body{Code: "invalid_grant",
		Description: "AADSTS530084: Access has been blocked by conditional access token protection policy configured by this organization."}})
	if d.Category != Reauthorize || d.AADSTS != "AADSTS530084" || !d.RefreshTokenDead {
		t.Errorf("got %q, %q, dead %v; want reauthorize on invalid_grant, with the code reported", d.Category, d.AADSTS, d.RefreshTokenDead)
	}
	if !strings.HasPrefix(d.Summary, entraName+":") {
		t.Errorf("an AADSTS code should make the summary name Entra: %s", d.Summary)
	}
}

func TestRemediationNamesWhatTheConnectionUses(t *testing.T) {
	literal := *entraUser
	literal.ClientID = "11111111-2222-3333-4444-555555555555"
	custom := *xero
	custom.Secrets.RefreshToken = "xero-prod-rt"

	tests := []struct {
		name    string
		in      Input
		want    []string
		notWant []string
	}{
		{name: "literal client id", in: Input{Connection: &literal, HTTPStatus: 400, Body: Body{Code: "unauthorized_client", ErrorCodes: []int{700016}}},
			want: []string{"the clientId in the connections file"}, notWant: []string{"graph-client-id", literal.ClientID}},
		{name: "custom secret name", in: Input{Connection: &custom, HTTPStatus: 400, Body: Body{Code: "invalid_grant"}},
			want: []string{`secret "xero-prod-rt"`}, notWant: []string{"xero-refresh-token"}},
		{name: "connect command", in: Input{Connection: xero, HTTPStatus: 400, Body: Body{Code: "invalid_grant"}, ConnectCommand: "handler connect xero"},
			want: []string{"write the new refresh token to secret \"xero-refresh-token\" (run `handler connect xero`)."}},
		{name: "no connect command", in: Input{Connection: xero, HTTPStatus: 400, Body: Body{Code: "invalid_grant"}},
			want: []string{`secret "xero-refresh-token".`}, notWant: []string{"run `"}},
		{name: "secret names left empty", in: Input{Connection: &broker.Connection{Name: "bare"}, HTTPStatus: 400, Body: Body{Code: "invalid_grant"}},
			want: []string{`secret "bare-refresh-token"`}},
		{name: "no connection", in: Input{HTTPStatus: 400, Body: Body{Code: "invalid_client"}},
			want: []string{`"(unnamed)"`, "the connection's client secret", "The provider does not accept"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Diagnose(tt.in)
			for _, w := range tt.want {
				if !strings.Contains(d.Remediation, w) {
					t.Errorf("Remediation lacks %q:\n%s", w, d.Remediation)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(d.Remediation, w) {
					t.Errorf("Remediation has %q:\n%s", w, d.Remediation)
				}
			}
		})
	}
}

func TestSummaryNamesTheProvider(t *testing.T) {
	tests := []struct {
		name string
		in   Input
		want string
	}{
		{name: "preset", in: Input{Connection: xero, HTTPStatus: 400, Body: Body{Code: "invalid_grant"}},
			want: "Xero: the refresh token is no longer valid (invalid_grant, HTTP 400)"},
		{name: "no preset", in: Input{Connection: ilevel, HTTPStatus: 401, Body: Body{Code: "invalid_client"}},
			want: "example.invalid: the client credentials were not accepted (invalid_client, HTTP 401)"},
		{name: "Entra through a generic connection", in: Input{Connection: ilevel, HTTPStatus: 401,
			Body: Body{Code: "invalid_client", ErrorCodes: []int{7000222}}},
			want: "Microsoft Entra ID: the client secret has expired (AADSTS7000222, invalid_client, HTTP 401)"},
		{name: "no connection", in: Input{Err: context.DeadlineExceeded},
			want: "Token endpoint: the token endpoint did not answer in time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Diagnose(tt.in).Summary; got != tt.want {
				t.Errorf("Summary = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestProviderTextNeverComesOut(t *testing.T) {
	const token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNlbnRpbmVs"
	in := Input{Connection: xero, HTTPStatus: 400, Body: Body{
		Code:        "invalid_grant\nforged log line",
		Description: "refresh_token " + token + " is not valid; contact SENTINEL-SUPPORT",
		Status:      "BAD\"STATUS",
	}}
	d := Diagnose(in)
	out := d.Summary + d.Remediation
	for _, leak := range []string{token, "SENTINEL", "forged", "BAD\"STATUS", "\n"} {
		if strings.Contains(out, leak) {
			t.Errorf("diagnosis repeats provider text %q:\n%s", leak, out)
		}
	}
	// The mangled code is unknown, so the failure is a permanent one
	// that someone must look at.
	if d.Category != FixConfiguration {
		t.Errorf("Category = %q, want fix_configuration for an unreadable code", d.Category)
	}
}

func TestCategoriesAreStable(t *testing.T) {
	// These strings are in logs, metrics and blob metadata: changing one
	// breaks dashboards and alerts.
	want := map[Category]bool{
		"reauthorize": true, "rotate_client_secret": true, "fix_configuration": true, "account_locked": true,
		"user_interaction_required": true, "throttled": false, "transient": false, "provider_outage": false,
	}
	got := Categories()
	if len(got) != len(want) {
		t.Fatalf("Categories() = %v", got)
	}
	for _, c := range got {
		permanent, ok := want[c]
		if !ok {
			t.Errorf("unexpected category %q", c)
		}
		if c.Permanent() != permanent {
			t.Errorf("%q.Permanent() = %v", c, c.Permanent())
		}
	}
}

func TestLogValue(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	f := readFixture(t, "entra-700082.txt")
	d := Diagnose(Input{Connection: entraUser, HTTPStatus: f.status, Body: ParseBody(f.body)})
	log.Info("refresh failed", "diagnosis", d)
	var rec struct {
		Diagnosis map[string]any `json:"diagnosis"`
	}
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"category": "reauthorize", "permanent": true, "refresh_token_dead": true, "aadsts": "AADSTS700082"}
	for k, v := range want {
		if rec.Diagnosis[k] != v {
			t.Errorf("diagnosis.%s = %v, want %v (record %s)", k, rec.Diagnosis[k], v, buf.Bytes())
		}
	}
	if _, ok := rec.Diagnosis["remediation"]; ok {
		t.Errorf("the log value carries free text: %s", buf.Bytes())
	}
}
