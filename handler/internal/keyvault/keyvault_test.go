package keyvault_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets/fake"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault/kvtest"
)

var (
	_ broker.SecretStore  = (*keyvault.Store)(nil)
	_ broker.SecretLister = (*keyvault.Store)(nil)
)

// vaultURL is the vault the Store names in its errors; the requests go to
// the kvtest server.
const vaultURL = "https://kv-test.vault.azure.net/"

// value is a distinctive secret value: no error may ever contain it.
const value = "tok-VALUE-5f3b9c1e-never-print-me"

// clock is the kvtest vault's time: whole seconds, as Key Vault records.
var clock = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func newStore(t *testing.T, o *kvtest.Options) (*keyvault.Store, *kvtest.Vault) {
	t.Helper()
	if o == nil {
		o = &kvtest.Options{}
	}
	if o.Now == nil {
		o.Now = func() time.Time { return clock }
	}
	v := kvtest.New(t, o)
	return keyvault.New(v.Client, keyvault.Options{VaultURL: vaultURL}), v
}

func assertNoValue(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range []string{err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err)} {
		if strings.Contains(s, value) {
			t.Fatalf("error contains the secret value: %s", strings.ReplaceAll(s, value, "[THE VALUE]"))
		}
	}
}

func TestSetGet(t *testing.T) {
	expiry := time.Date(2026, 5, 1, 13, 0, 0, 987654321, time.FixedZone("CEST", 2*3600))
	tests := []struct {
		name      string
		expiresOn time.Time
		wantExp   time.Time // what the vault records: UTC, whole seconds
		wantTag   string    // expires-on tag; "" means no tag
	}{
		{"with expiry", expiry, time.Date(2026, 5, 1, 11, 0, 0, 0, time.UTC), "2026-05-01T11:00:00Z"},
		{"without expiry", time.Time{}, time.Time{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, v := newStore(t, nil)
			ctx := t.Context()
			const name = "acme-access-token"
			if err := s.Set(ctx, name, broker.StoredSecret{Value: value, ExpiresOn: tt.expiresOn, UpdatedOn: clock.Add(-time.Hour)}); err != nil {
				t.Fatal(err)
			}

			ver, ok := v.Latest(name)
			if !ok {
				t.Fatal("vault has no version after Set")
			}
			if ver.Value != value || !ver.Enabled || ver.ContentType != "" {
				t.Errorf("stored value ok=%v, enabled %v, content type %q", ver.Value == value, ver.Enabled, ver.ContentType)
			}
			if !ver.Expires.Equal(tt.wantExp) {
				t.Errorf("exp attribute = %v, want %v", ver.Expires, tt.wantExp)
			}
			wantTags := map[string]string{keyvault.TagManagedBy: keyvault.ManagedBy}
			if tt.wantTag != "" {
				wantTags[keyvault.TagExpiresOn] = tt.wantTag
			}
			if fmt.Sprint(ver.Tags) != fmt.Sprint(wantTags) {
				t.Errorf("tags = %v, want %v", ver.Tags, wantTags)
			}

			got, err := s.Get(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if got.Value.Reveal() != value || !got.ExpiresOn.Equal(tt.wantExp) || !got.UpdatedOn.Equal(clock) {
				t.Errorf("Get: value ok=%v, ExpiresOn %v (want %v), UpdatedOn %v (want the vault's %v)",
					got.Value.Reveal() == value, got.ExpiresOn, tt.wantExp, got.UpdatedOn, clock)
			}
			if c := v.Counts(); c != (kvtest.Counts{Gets: 1, Sets: 1}) {
				t.Errorf("requests = %+v, want one get and one set", c)
			}
		})
	}
}

func TestSetWritesNewVersion(t *testing.T) {
	s, v := newStore(t, nil)
	ctx := t.Context()
	for _, val := range []string{"first", "second"} {
		if err := s.Set(ctx, "acme-refresh-token", broker.StoredSecret{Value: broker.Secret(val)}); err != nil {
			t.Fatal(err)
		}
	}
	vers := v.Versions("acme-refresh-token")
	if len(vers) != 2 || vers[0].ID == vers[1].ID || vers[0].Value != "first" || vers[1].Value != "second" {
		t.Fatalf("versions = %+v, want first then second with distinct IDs", vers)
	}
	got, err := s.Get(ctx, "ACME-refresh-token") // names are case-insensitive
	if err != nil || got.Value.Reveal() != "second" {
		t.Fatalf("Get = %q, %v; want the latest version", got.Value.Reveal(), err)
	}
}

// An empty value is stored and read back as such; the broker treats it as
// unset.
func TestEmptyValue(t *testing.T) {
	s, v := newStore(t, nil)
	if err := s.Set(t.Context(), "empty", broker.StoredSecret{}); err != nil {
		t.Fatal(err)
	}
	if val, ok := v.Value("empty"); !ok || val != "" {
		t.Fatalf("vault holds %q, %v; want an empty value", val, ok)
	}
	got, err := s.Get(t.Context(), "empty")
	if err != nil || !got.Value.IsZero() {
		t.Fatalf("Get = %v, %v; want an empty value", got, err)
	}
}

func TestList(t *testing.T) {
	s, v := newStore(t, &kvtest.Options{PageSize: 2})
	exp := clock.Add(time.Hour)
	for _, name := range []string{"c-access-token", "a-access-token", "b-client-secret", "d-refresh-token", "disabled", "deleted", "e-access-token"} {
		v.Put(name, value, exp)
	}
	v.Disable("disabled")
	v.SoftDelete("deleted")
	v.ResetCounts()

	infos, err := s.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, in := range infos {
		names = append(names, in.Name)
		if !in.ExpiresOn.Equal(exp) || !in.UpdatedOn.Equal(clock) {
			t.Errorf("%s: ExpiresOn %v, UpdatedOn %v; want %v, %v", in.Name, in.ExpiresOn, in.UpdatedOn, exp, clock)
		}
	}
	want := []string{"a-access-token", "b-client-secret", "c-access-token", "d-refresh-token", "e-access-token"}
	if !slices.Equal(names, want) {
		t.Errorf("names = %v, want %v (disabled and deleted left out)", names, want)
	}
	// Six secrets the vault lists (the disabled one too), two per page:
	// three requests, and no reads of values.
	if c := v.Counts(); c != (kvtest.Counts{Lists: 3}) {
		t.Errorf("requests = %+v, want 3 list pages and nothing else", c)
	}
}

func TestListEmptyVault(t *testing.T) {
	s, v := newStore(t, nil)
	infos, err := s.List(t.Context())
	if err != nil || len(infos) != 0 || v.Counts().Lists != 1 {
		t.Fatalf("List = %v, %v after %d requests; want nothing, in one request", infos, err, v.Counts().Lists)
	}
}

// A page that fails leaves the pages before it.
func TestListPartial(t *testing.T) {
	s, v := newStore(t, &kvtest.Options{PageSize: 2})
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		v.Put(name, value, time.Time{})
	}
	f := kvtest.ForbiddenByFirewall
	f.Skip = 1
	v.Fail(kvtest.OpList, 1, f)
	infos, err := s.List(t.Context())
	var kerr *keyvault.Error
	if !errors.As(err, &kerr) || kerr.Op != "list" || kerr.InnerCode != keyvault.CodeForbiddenByFirewall {
		t.Fatalf("err = %v, want a list *Error for the firewall", err)
	}
	if len(infos) != 2 || infos[0].Name != "a" || infos[1].Name != "b" {
		t.Errorf("infos = %v, want the first page (a, b)", infos)
	}
}

func TestErrors(t *testing.T) {
	const name = "acme-refresh-token"
	tests := []struct {
		name   string
		op     kvtest.Op // the operation the Store performs
		absent bool      // the secret is not put in the vault first
		setup  func(v *kvtest.Vault)

		status       int
		code, inner  string
		notFound     bool
		retryable    bool
		retryAfter   time.Duration
		requests     int // attempts of op the vault saw: SDK retries count
		wantContains []string
	}{
		{
			name: "404 not found", op: kvtest.OpGet, absent: true, setup: func(v *kvtest.Vault) {},
			status: 404, code: keyvault.CodeSecretNotFound, notFound: true, requests: 1,
			wantContains: []string{`get secret "acme-refresh-token" in vault kv-test.vault.azure.net`, "does not exist",
				"az keyvault secret set --vault-name kv-test --name acme-refresh-token --file"},
		},
		{
			name: "404 soft-deleted reads as not found", op: kvtest.OpGet, setup: func(v *kvtest.Vault) { v.SoftDelete(name) },
			status: 404, code: keyvault.CodeSecretNotFound, notFound: true, requests: 1,
		},
		{
			name: "403 rbac", op: kvtest.OpGet, setup: func(v *kvtest.Vault) { v.Fail(kvtest.OpGet, 1, kvtest.ForbiddenByRbac) },
			status: 403, code: "Forbidden", inner: keyvault.CodeForbiddenByRbac, requests: 1,
			wantContains: []string{`"Key Vault Secrets Officer" role on vault kv-test`, "HTTP 403 Forbidden/ForbiddenByRbac",
				"oid=11111111-1111-1111-1111-111111111111", `get secret "acme-refresh-token"`},
		},
		{
			name: "403 rbac on set", op: kvtest.OpSet, setup: func(v *kvtest.Vault) { v.Fail(kvtest.OpSet, 1, kvtest.ForbiddenByRbac) },
			status: 403, code: "Forbidden", inner: keyvault.CodeForbiddenByRbac, requests: 1,
			wantContains: []string{`set secret "acme-refresh-token"`, "Key Vault Secrets Officer"},
		},
		{
			name: "403 access policy", op: kvtest.OpGet, setup: func(v *kvtest.Vault) {
				v.Fail(kvtest.OpGet, 1, kvtest.Fault{Status: 403, Code: "Forbidden", InnerCode: "AccessDenied",
					Message: "The user, group or application 'appid=x;oid=y' does not have secrets get permission on key vault 'kv-test'."})
			},
			status: 403, code: "Forbidden", inner: keyvault.CodeAccessDenied, requests: 1,
			wantContains: []string{"az keyvault set-policy --name kv-test", "--secret-permissions get list set"},
		},
		{
			name: "403 firewall", op: kvtest.OpGet, setup: func(v *kvtest.Vault) { v.Fail(kvtest.OpGet, 1, kvtest.ForbiddenByFirewall) },
			status: 403, code: "Forbidden", inner: keyvault.CodeForbiddenByFirewall, requests: 1,
			wantContains: []string{"firewall", "network rules", "kv-test", "Client address: 203.0.113.7"},
		},
		{
			name: "403 disabled", op: kvtest.OpGet, setup: func(v *kvtest.Vault) { v.Disable(name) },
			status: 403, code: "Forbidden", inner: keyvault.CodeSecretDisabled, requests: 1,
			wantContains: []string{"disabled", "az keyvault secret set-attributes --vault-name kv-test --name acme-refresh-token --enabled true"},
		},
		{
			name: "409 deleted but recoverable", op: kvtest.OpSet, setup: func(v *kvtest.Vault) { v.SoftDelete(name) },
			status: 409, code: "Conflict", inner: keyvault.CodeObjectIsDeletedButRecoverable, requests: 1,
			wantContains: []string{"deleted but recoverable", "az keyvault secret recover --vault-name kv-test --name acme-refresh-token",
				"az keyvault secret purge --vault-name kv-test --name acme-refresh-token"},
		},
		{
			name: "409 being deleted", op: kvtest.OpSet, setup: func(v *kvtest.Vault) {
				v.Fail(kvtest.OpSet, 1, kvtest.Fault{Status: 409, Code: "Conflict", InnerCode: "ObjectIsBeingDeleted"})
			},
			status: 409, code: "Conflict", inner: keyvault.CodeObjectIsBeingDeleted, requests: 1,
			wantContains: []string{"being deleted", "az keyvault secret recover"},
		},
		{
			// The Retry-After is beyond the client's cap, so azcore returns
			// at once rather than wait.
			name: "429 throttled", op: kvtest.OpGet, setup: func(v *kvtest.Vault) { v.Fail(kvtest.OpGet, 1, kvtest.Throttled(30*time.Second)) },
			status: 429, code: keyvault.CodeThrottled, retryable: true, retryAfter: 30 * time.Second, requests: 1,
			wantContains: []string{"throttling", "retryable after 30s", "VaultRequestTypeLimitReached"},
		},
		{
			name: "401 unauthorized", op: kvtest.OpGet, setup: func(v *kvtest.Vault) { v.Fail(kvtest.OpGet, 1, kvtest.Unauthorized) },
			status: 401, code: "Unauthorized", requests: 1,
			wantContains: []string{"did not accept this app's token", "tenant", "AKV10032"},
		},
		{
			name: "503 after the SDK's retries", op: kvtest.OpSet, setup: func(v *kvtest.Vault) { v.Fail(kvtest.OpSet, 3, kvtest.ServiceUnavailable) },
			status: 503, code: "ServiceUnavailable", retryable: true, requests: 3,
			wantContains: []string{"Key Vault failed", "(retryable)"},
		},
		{
			name: "404 that is not a secret's", op: kvtest.OpGet, setup: func(v *kvtest.Vault) {
				v.Fail(kvtest.OpGet, 1, kvtest.Fault{Status: 404, Code: "NotFound", Message: "no such path"})
			},
			status: 404, code: "NotFound", requests: 1,
			wantContains: []string{"KEY_VAULT_URL"},
		},
		{
			name: "a message quoting the value is withheld", op: kvtest.OpSet, setup: func(v *kvtest.Vault) {
				v.Fail(kvtest.OpSet, 1, kvtest.Fault{Status: 400, Code: "BadParameter", Message: "Property value " + value + " is invalid"})
			},
			status: 400, code: "BadParameter", requests: 1,
			wantContains: []string{"withheld"},
		},
		{
			name: "list forbidden", op: kvtest.OpList, setup: func(v *kvtest.Vault) { v.Fail(kvtest.OpList, 1, kvtest.ForbiddenByRbac) },
			status: 403, code: "Forbidden", inner: keyvault.CodeForbiddenByRbac, requests: 1,
			wantContains: []string{"list secrets in vault kv-test.vault.azure.net", "Key Vault Secrets Officer"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, v := newStore(t, nil)
			if !tt.absent {
				v.Put(name, value, time.Time{})
			}
			tt.setup(v)
			v.ResetCounts()

			var err error
			switch tt.op {
			case kvtest.OpGet:
				_, err = s.Get(t.Context(), name)
			case kvtest.OpSet:
				err = s.Set(t.Context(), name, broker.StoredSecret{Value: value, ExpiresOn: clock.Add(time.Hour)})
			case kvtest.OpList:
				_, err = s.List(t.Context())
			}
			assertNoValue(t, err)
			var kerr *keyvault.Error
			if !errors.As(err, &kerr) {
				t.Fatalf("err = %v (%T), want *keyvault.Error", err, err)
			}
			if kerr.StatusCode != tt.status || kerr.Code != tt.code || kerr.InnerCode != tt.inner {
				t.Errorf("status %d code %q inner %q; want %d %q %q", kerr.StatusCode, kerr.Code, kerr.InnerCode, tt.status, tt.code, tt.inner)
			}
			if got := errors.Is(err, broker.ErrSecretNotFound); got != tt.notFound {
				t.Errorf("errors.Is(err, ErrSecretNotFound) = %v, want %v", got, tt.notFound)
			}
			if kerr.Retryable() != tt.retryable || kerr.RetryAfter != tt.retryAfter {
				t.Errorf("Retryable %v RetryAfter %v; want %v %v", kerr.Retryable(), kerr.RetryAfter, tt.retryable, tt.retryAfter)
			}
			var re *azcore.ResponseError
			if !errors.As(err, &re) || re.StatusCode != tt.status {
				t.Errorf("does not unwrap to the *azcore.ResponseError")
			}
			if kerr.Vault != "kv-test.vault.azure.net" {
				t.Errorf("Vault = %q", kerr.Vault)
			}
			msg := err.Error()
			for _, want := range tt.wantContains {
				if !strings.Contains(msg, want) {
					t.Errorf("message lacks %q:\n%s", want, msg)
				}
			}
			c := v.Counts()
			if got := map[kvtest.Op]int{kvtest.OpGet: c.Gets, kvtest.OpSet: c.Sets, kvtest.OpList: c.Lists}[tt.op]; got != tt.requests {
				t.Errorf("vault saw %d %s requests, want %d", got, tt.op, tt.requests)
			}
		})
	}
}

// Without Options.VaultURL the Store names the vault the request went to.
func TestErrorNamesVaultFromRequest(t *testing.T) {
	v := kvtest.New(t, nil)
	s := keyvault.New(v.Client, keyvault.Options{})
	_, err := s.Get(t.Context(), "missing")
	var kerr *keyvault.Error
	if !errors.As(err, &kerr) || !strings.HasPrefix(v.URL, "http://"+kerr.Vault) || kerr.Vault == "" {
		t.Fatalf("err = %v; want the vault named %s", err, v.URL)
	}
	if !strings.Contains(err.Error(), "--vault-name <vault>") {
		t.Errorf("a host outside Key Vault's domains should give a placeholder: %s", err)
	}
}

func TestNoResponse(t *testing.T) {
	tests := []struct {
		name      string
		ctx       func(t *testing.T) context.Context
		retryable bool
		want      string
	}{
		{"cancelled", func(t *testing.T) context.Context {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			return ctx
		}, false, "gave up waiting for Key Vault"},
		{"deadline", func(t *testing.T) context.Context {
			ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
			t.Cleanup(cancel)
			return ctx
		}, true, "gave up waiting for Key Vault"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, v := newStore(t, nil)
			gate := v.Hold(kvtest.OpSet)
			defer gate.Release()
			err := s.Set(tt.ctx(t), "acme-access-token", broker.StoredSecret{Value: value})
			assertNoValue(t, err)
			var kerr *keyvault.Error
			if !errors.As(err, &kerr) || kerr.StatusCode != 0 || kerr.Retryable() != tt.retryable || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want a retryable=%v *Error saying %q", err, tt.retryable, tt.want)
			}
			if _, ok := v.Latest("acme-access-token"); ok {
				t.Error("the held write reached the vault")
			}
		})
	}
}

func TestCredentialFailure(t *testing.T) {
	cred := &azfake.TokenCredential{}
	cred.SetError(errors.New("managed identity endpoint unreachable"))
	v := kvtest.New(t, &kvtest.Options{TLS: true, Credential: cred})
	s := keyvault.New(v.Client, keyvault.Options{VaultURL: vaultURL})
	_, err := s.Get(t.Context(), "acme-access-token")
	var kerr *keyvault.Error
	if !errors.As(err, &kerr) || kerr.StatusCode != 0 || !strings.Contains(err.Error(), "managed identity endpoint unreachable") {
		t.Fatalf("err = %v; want an *Error carrying the credential's failure", err)
	}
	if c := v.Counts(); c.Gets != 0 || c.Challenges != 1 {
		t.Errorf("requests = %+v; want only the challenge", c)
	}
}

func TestValueLimits(t *testing.T) {
	tests := []struct {
		name        string
		value       string
		wantErr     bool
		invalidUTF8 bool
	}{
		{"at the limit", strings.Repeat("v", keyvault.MaxValueBytes), false, false},
		{"over the limit", value + strings.Repeat("v", keyvault.MaxValueBytes-len(value)+1), true, false},
		{"not UTF-8", value + "\xff", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, v := newStore(t, nil)
			err := s.Set(t.Context(), "big", broker.StoredSecret{Value: broker.Secret(tt.value)})
			assertNoValue(t, err)
			if !tt.wantErr {
				if got, _ := v.Value("big"); err != nil || got != tt.value {
					t.Fatalf("Set = %v, stored %d bytes; want %d bytes stored", err, len(got), len(tt.value))
				}
				return
			}
			var verr *keyvault.ValueError
			if !errors.As(err, &verr) || verr.Size != len(tt.value) || verr.InvalidUTF8 != tt.invalidUTF8 || verr.Secret != "big" {
				t.Fatalf("err = %v, want a *ValueError of %d bytes", err, len(tt.value))
			}
			if c := v.Counts(); c.Sets != 0 {
				t.Errorf("%d requests made for a refused value", c.Sets)
			}
		})
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		name  string
		valid bool
	}{
		{"a", true},
		{"Acme-Refresh-Token-2", true},
		{strings.Repeat("a", 127), true},
		{"", false},
		{strings.Repeat("a", 128), false},
		{"1acme", false},
		{"-acme", false},
		{"acme_token", false},
		{"acme.token", false},
		{"acme/token", false},
		{"acme token", false},
		{"äcme", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%.20q", tt.name), func(t *testing.T) {
			s, v := newStore(t, nil)
			setErr := s.Set(t.Context(), tt.name, broker.StoredSecret{Value: "v"})
			_, getErr := s.Get(t.Context(), tt.name)
			if tt.valid {
				if setErr != nil || getErr != nil {
					t.Fatalf("Set: %v, Get: %v", setErr, getErr)
				}
				return
			}
			for _, err := range []error{setErr, getErr, keyvault.ValidateName(tt.name)} {
				var nerr *keyvault.NameError
				if !errors.As(err, &nerr) || nerr.Name != tt.name {
					t.Errorf("err = %v, want *NameError", err)
				}
			}
			if c := v.Counts(); c != (kvtest.Counts{}) {
				t.Errorf("requests made for an invalid name: %+v", c)
			}
		})
	}
}

// recordingCredential notes the token requests the challenge policy makes.
type recordingCredential struct {
	azfake.TokenCredential
	mu   sync.Mutex
	reqs []policy.TokenRequestOptions
}

func (c *recordingCredential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	c.reqs = append(c.reqs, o)
	c.mu.Unlock()
	return c.TokenCredential.GetToken(ctx, o)
}

// The real challenge flow: the first request goes without a token (and
// without its body), the vault answers 401 with its tenant and resource,
// and the client asks the credential for that and sends the request again.
func TestTLSChallenge(t *testing.T) {
	cred := &recordingCredential{}
	s, v := newStore(t, &kvtest.Options{TLS: true, Credential: cred})
	if !strings.HasPrefix(v.URL, "https://") {
		t.Fatalf("URL = %s, want https", v.URL)
	}
	ctx := t.Context()
	if err := s.Set(ctx, "acme-access-token", broker.StoredSecret{Value: value, ExpiresOn: clock.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "acme-access-token")
	if err != nil || got.Value.Reveal() != value {
		t.Fatalf("Get: value ok=%v, %v", got.Value.Reveal() == value, err)
	}
	if c := v.Counts(); c != (kvtest.Counts{Gets: 1, Sets: 1, Challenges: 1}) {
		t.Errorf("requests = %+v; want one challenge, then authorized requests", c)
	}
	cred.mu.Lock()
	defer cred.mu.Unlock()
	if len(cred.reqs) == 0 {
		t.Fatal("the credential was never asked for a token")
	}
	for _, r := range cred.reqs {
		if r.TenantID != kvtest.TenantID || !slices.Equal(r.Scopes, []string{kvtest.Resource + "/.default"}) {
			t.Errorf("token request for tenant %q scopes %v; want the challenge's", r.TenantID, r.Scopes)
		}
	}
}

// NewClient's retry defaults apply field by field: here the delays are
// the test's, and the retry count and Retry-After cap are DefaultRetry's.
func TestNewClientRetries(t *testing.T) {
	v := kvtest.New(t, &kvtest.Options{TLS: true})
	client, err := keyvault.NewClient(v.URL, &azfake.TokenCredential{}, &azsecrets.ClientOptions{
		ClientOptions:                        azcore.ClientOptions{Transport: v.HTTPClient(), Retry: policy.RetryOptions{RetryDelay: time.Millisecond}},
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := keyvault.New(client, keyvault.Options{VaultURL: vaultURL})
	v.Put("acme-access-token", value, time.Time{})

	v.ResetCounts()
	v.Fail(kvtest.OpGet, 3, kvtest.ServiceUnavailable)
	if _, err := s.Get(t.Context(), "acme-access-token"); err == nil {
		t.Fatal("Get succeeded through three failures")
	}
	if got := v.Counts().Gets; got != 1+int(keyvault.DefaultRetry.MaxRetries) {
		t.Errorf("%d attempts, want 1 + %d retries", got, keyvault.DefaultRetry.MaxRetries)
	}

	// A Retry-After beyond MaxRetryDelay is not waited for.
	v.ResetCounts()
	v.Fail(kvtest.OpGet, 1, kvtest.Throttled(keyvault.DefaultRetry.MaxRetryDelay+time.Second))
	_, err = s.Get(t.Context(), "acme-access-token")
	var kerr *keyvault.Error
	if !errors.As(err, &kerr) || kerr.StatusCode != 429 || kerr.RetryAfter != keyvault.DefaultRetry.MaxRetryDelay+time.Second {
		t.Fatalf("err = %v; want the 429 with its Retry-After", err)
	}
	if got := v.Counts().Gets; got != 1 {
		t.Errorf("%d attempts, want 1", got)
	}

	// A short one is, and the retry succeeds.
	v.ResetCounts()
	v.Fail(kvtest.OpGet, 1, kvtest.Fault{Status: 429, Code: "Throttled"})
	if got, err := s.Get(t.Context(), "acme-access-token"); err != nil || got.Value.Reveal() != value {
		t.Fatalf("Get after one 429: %v", err)
	}
	if got := v.Counts().Gets; got != 2 {
		t.Errorf("%d attempts, want 2", got)
	}
}

func TestNewClientURL(t *testing.T) {
	tests := []struct {
		url       string
		anyDomain bool
		wantErr   string // "" means accepted
	}{
		{"https://kv1.vault.azure.net", false, ""},
		{"https://kv1.vault.azure.net/", false, ""},
		{" https://KV1.Vault.Azure.Net/ ", false, ""},
		{"https://kv1.vault.azure.cn/", false, ""},
		{"https://kv1.vault.usgovcloudapi.net/", false, ""},
		{"https://kv1.vault.local.azurestack.external/", true, ""},
		{"https://kv1.vault.local.azurestack.external/", false, "not under a Key Vault domain"},
		{"kv1", false, "vault name, not its URL (https://kv1.vault.azure.net/)"},
		{"", false, "not an absolute URL"},
		{"http://kv1.vault.azure.net/", false, "not https"},
		{"https://kv1.vault.azure.net/secrets/acme", false, "has a path; give the vault URL alone, https://kv1.vault.azure.net/"},
		{"https://example.com/", false, "not under a Key Vault domain"},
		{"https://user:hunter2@kv1.vault.azure.net/", false, "user information"},
		{"https://kv1.vault.azure.net/?sig=hunter2", false, "a query"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			c, err := keyvault.NewClient(tt.url, &azfake.TokenCredential{}, &azsecrets.ClientOptions{DisableChallengeResourceVerification: tt.anyDomain})
			if tt.wantErr == "" {
				if err != nil || c == nil {
					t.Fatalf("NewClient: %v", err)
				}
				return
			}
			var uerr *keyvault.VaultURLError
			if !errors.As(err, &uerr) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want a *VaultURLError saying %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error repeats a credential: %v", err)
			}
		})
	}
}

// The Store works against the SDK's own fake server too (which answers
// the challenge itself), here backed by a map.
func TestSDKFakeServer(t *testing.T) {
	var mu sync.Mutex
	stored := map[string]azsecrets.Secret{}
	srv := fake.Server{
		GetSecret: func(_ context.Context, name, version string, _ *azsecrets.GetSecretOptions) (resp azfake.Responder[azsecrets.GetSecretResponse], errResp azfake.ErrorResponder) {
			mu.Lock()
			defer mu.Unlock()
			sec, ok := stored[name]
			if !ok || version != "" {
				errResp.SetResponseError(http.StatusNotFound, keyvault.CodeSecretNotFound)
				return
			}
			resp.SetResponse(http.StatusOK, azsecrets.GetSecretResponse{Secret: sec}, nil)
			return
		},
		SetSecret: func(_ context.Context, name string, p azsecrets.SetSecretParameters, _ *azsecrets.SetSecretOptions) (resp azfake.Responder[azsecrets.SetSecretResponse], errResp azfake.ErrorResponder) {
			mu.Lock()
			defer mu.Unlock()
			now := clock
			attrs := &azsecrets.SecretAttributes{Enabled: new(true), Updated: &now}
			if p.SecretAttributes != nil {
				attrs.Expires = p.SecretAttributes.Expires
			}
			id := azsecrets.ID("https://fake-vault.vault.azure.net/secrets/" + name + "/0123456789abcdef0123456789abcdef")
			sec := azsecrets.Secret{ID: &id, Value: p.Value, Attributes: attrs, Tags: p.Tags}
			stored[name] = sec
			resp.SetResponse(http.StatusOK, azsecrets.SetSecretResponse{Secret: sec}, nil)
			return
		},
		NewListSecretPropertiesPager: func(*azsecrets.ListSecretPropertiesOptions) (resp azfake.PagerResponder[azsecrets.ListSecretPropertiesResponse]) {
			mu.Lock()
			defer mu.Unlock()
			// One page per secret: the Store must follow the links.
			for _, name := range slices.Sorted(func(yield func(string) bool) {
				for k := range stored {
					if !yield(k) {
						return
					}
				}
			}) {
				sec := stored[name]
				id := azsecrets.ID("https://fake-vault.vault.azure.net/secrets/" + name)
				resp.AddPage(http.StatusOK, azsecrets.ListSecretPropertiesResponse{SecretPropertiesListResult: azsecrets.SecretPropertiesListResult{
					Value: []*azsecrets.SecretProperties{{ID: &id, Attributes: sec.Attributes}},
				}}, nil)
			}
			return
		},
	}
	client, err := keyvault.NewClient("https://fake-vault.vault.azure.net/", &azfake.TokenCredential{}, &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: fake.NewServerTransport(&srv)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var store broker.SecretStore = keyvault.New(client, keyvault.Options{VaultURL: "https://fake-vault.vault.azure.net/"})
	ctx := t.Context()

	exp := clock.Add(time.Hour)
	for _, name := range []string{"b-refresh-token", "a-access-token"} {
		if err := store.Set(ctx, name, broker.StoredSecret{Value: value, ExpiresOn: exp}); err != nil {
			t.Fatal(err)
		}
	}
	if got := stored["a-access-token"].Tags[keyvault.TagExpiresOn]; got == nil || *got != exp.Format(time.RFC3339) {
		t.Errorf("expires-on tag = %v", got)
	}
	got, err := store.Get(ctx, "a-access-token")
	if err != nil || got.Value.Reveal() != value || !got.ExpiresOn.Equal(exp) || !got.UpdatedOn.Equal(clock) {
		t.Fatalf("Get = value ok=%v, %v, %v; %v", got.Value.Reveal() == value, got.ExpiresOn, got.UpdatedOn, err)
	}
	_, err = store.Get(ctx, "missing")
	if !errors.Is(err, broker.ErrSecretNotFound) || !strings.Contains(err.Error(), "--vault-name fake-vault --name missing") {
		t.Fatalf("Get(missing) = %v, want ErrSecretNotFound naming the vault", err)
	}
	// The SDK fake hands out a disabled secret's value; the Store refuses
	// it as Key Vault would.
	mu.Lock()
	off := stored["a-access-token"]
	off.Attributes = &azsecrets.SecretAttributes{Enabled: new(false)}
	stored["c-disabled"] = off
	mu.Unlock()
	_, err = store.Get(ctx, "c-disabled")
	var kerr *keyvault.Error
	if !errors.As(err, &kerr) || kerr.InnerCode != keyvault.CodeSecretDisabled || errors.Is(err, broker.ErrSecretNotFound) || kerr.Retryable() {
		t.Fatalf("Get(disabled) = %v, want a SecretDisabled *Error", err)
	}
	assertNoValue(t, err)

	infos, err := store.(broker.SecretLister).List(ctx)
	if err != nil || len(infos) != 2 || infos[0].Name != "a-access-token" || infos[1].Name != "b-refresh-token" || !infos[0].ExpiresOn.Equal(exp) {
		t.Fatalf("List = %+v, %v", infos, err)
	}
}

// Through the broker's port: what the broker relies on.
func TestBrokerPort(t *testing.T) {
	s, v := newStore(t, nil)
	var store broker.SecretStore = s
	ctx := t.Context()
	if _, err := store.Get(ctx, "acme-refresh-token"); !errors.Is(err, broker.ErrSecretNotFound) {
		t.Fatalf("Get of a missing secret = %v, want ErrSecretNotFound", err)
	}
	// The broker writes the refresh token before the access token; the
	// vault keeps that order.
	if err := store.Set(ctx, "acme-refresh-token", broker.StoredSecret{Value: "rt"}); err != nil {
		t.Fatal(err)
	}
	if err := store.Set(ctx, "acme-access-token", broker.StoredSecret{Value: value, ExpiresOn: clock.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	w := v.Writes()
	if len(w) != 2 || w[0].Name != "acme-refresh-token" || w[1].Name != "acme-access-token" || w[0].Seq >= w[1].Seq {
		t.Fatalf("writes = %+v", w)
	}
	// A failure the broker wraps keeps the value out of its message too.
	v.Fail(kvtest.OpSet, 1, kvtest.ForbiddenByRbac)
	err := store.Set(ctx, "acme-access-token", broker.StoredSecret{Value: value})
	be := &broker.Error{Code: broker.CodeUnavailable, Connection: "acme", Message: "could not write", Err: err}
	assertNoValue(t, be)
	var kerr *keyvault.Error
	if !errors.As(be, &kerr) || kerr.InnerCode != keyvault.CodeForbiddenByRbac {
		t.Fatalf("broker error does not unwrap to the *keyvault.Error: %v", be)
	}
}
