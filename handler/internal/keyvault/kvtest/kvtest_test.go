package kvtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault/kvtest"
)

func set(t *testing.T, v *kvtest.Vault, ctx context.Context, name, value string) error {
	t.Helper()
	_, err := v.Client.SetSecret(ctx, name, azsecrets.SetSecretParameters{Value: &value}, nil)
	return err
}

func statusOf(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

func TestHold(t *testing.T) {
	v := kvtest.New(t, nil)
	gate := v.Hold(kvtest.OpSet)
	done := make(chan error, 1)
	go func() { done <- set(t, v, context.Background(), "acme-access-token", "new") }()

	if name := <-gate.Arrived(); name != "acme-access-token" {
		t.Fatalf("arrived %q", name)
	}
	if _, ok := v.Latest("acme-access-token"); ok {
		t.Fatal("a held write was applied")
	}
	if c := v.Counts(); c.Sets != 1 {
		t.Errorf("a held request is counted on arrival: %+v", c)
	}
	gate.Release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, _ := v.Value("acme-access-token"); got != "new" {
		t.Errorf("value %q after release", got)
	}
}

// Close lets held requests go, so the test's cleanup never hangs.
func TestCloseReleasesHeld(t *testing.T) {
	v := kvtest.New(t, nil)
	gate := v.Hold(kvtest.OpGet)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = v.Client.GetSecret(context.Background(), "x", "", nil)
	}()
	<-gate.Arrived()
	v.Close()
	<-done
	v.Close() // twice is fine
}

func TestFaults(t *testing.T) {
	v := kvtest.New(t, nil)
	ctx := t.Context()
	v.Fail(kvtest.OpSet, 1, kvtest.Fault{Secret: "B", Status: 403, Code: "Forbidden", InnerCode: "ForbiddenByRbac"})
	v.Fail(kvtest.OpSet, 1, kvtest.Throttled(90*time.Second))

	if err := set(t, v, ctx, "a", "1"); statusOf(err) != 429 {
		t.Errorf("set a: %v; want the 429 (the 403 is for b only)", err)
	}
	err := set(t, v, ctx, "b", "1")
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 403 || re.ErrorCode != "Forbidden" {
		t.Fatalf("set b: %v; want 403 Forbidden", err)
	}
	if err := set(t, v, ctx, "b", "2"); err != nil {
		t.Errorf("set b after the fault is used up: %v", err)
	}
	if c := v.Counts(); c.Sets != 3 {
		t.Errorf("counts %+v, want 3 sets", c)
	}
}

func TestRetryAfterHeader(t *testing.T) {
	v := kvtest.New(t, nil)
	v.Fail(kvtest.OpGet, 1, kvtest.Throttled(1500*time.Millisecond))
	resp, err := http.Get(v.URL + "/secrets/x/?api-version=2026-04-01")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("status %d, Retry-After %q; want 429 and 2 (seconds, rounded up)", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func TestDelay(t *testing.T) {
	v := kvtest.New(t, nil)
	v.Put("x", "1", time.Time{})
	v.Delay(kvtest.OpGet, time.Minute)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := v.Client.GetSecret(ctx, "x", "", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("delayed get: %v, want the client's deadline", err)
	}
	v.Delay(kvtest.OpGet, 0)
	if _, err := v.Client.GetSecret(t.Context(), "x", "", nil); err != nil {
		t.Fatal(err)
	}
}

func TestVersionsAndWrites(t *testing.T) {
	v := kvtest.New(t, nil)
	ctx := t.Context()
	for _, w := range []struct{ name, value string }{{"rt", "r1"}, {"at", "a1"}, {"RT", "r2"}} {
		if err := set(t, v, ctx, w.name, w.value); err != nil {
			t.Fatal(err)
		}
	}
	vers := v.Versions("rt")
	if len(vers) != 2 || vers[0].Value != "r1" || vers[1].Value != "r2" || vers[1].Name != "rt" {
		t.Fatalf("versions %+v", vers)
	}
	var order []string
	for _, w := range v.Writes() {
		order = append(order, w.Name+"="+w.Value)
	}
	if got := strings.Join(order, ","); got != "rt=r1,at=a1,rt=r2" {
		t.Errorf("writes %s", got)
	}
	// Reading a specific version, by the ID the vault reports.
	resp, err := v.Client.GetSecret(ctx, "rt", vers[0].ID, nil)
	if err != nil || *resp.Value != "r1" || resp.ID.Version() != vers[0].ID {
		t.Fatalf("get version: %v", err)
	}
	// The copies are the caller's.
	vers[0].Tags = map[string]string{"x": "y"}
	if v.Versions("rt")[0].Tags != nil {
		t.Error("Versions returned the vault's own storage")
	}
}

func TestDisableAndDelete(t *testing.T) {
	v := kvtest.New(t, nil)
	ctx := t.Context()
	v.Put("x", "1", time.Time{})
	if !v.Disable("x") {
		t.Fatal("Disable found nothing")
	}
	_, err := v.Client.GetSecret(ctx, "x", "", nil)
	if statusOf(err) != 403 {
		t.Fatalf("get disabled: %v", err)
	}
	// A new version is enabled, as in Key Vault.
	if err := set(t, v, ctx, "x", "2"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Client.GetSecret(ctx, "x", "", nil); err != nil {
		t.Fatalf("get after a new version: %v", err)
	}

	v.SoftDelete("x")
	if _, err := v.Client.GetSecret(ctx, "x", "", nil); statusOf(err) != 404 {
		t.Fatalf("get deleted: %v", err)
	}
	if err := set(t, v, ctx, "x", "3"); statusOf(err) != 409 {
		t.Fatalf("set deleted: %v", err)
	}
	v.Recover("x")
	if got, _ := v.Value("x"); got != "2" {
		t.Errorf("recovered value %q", got)
	}
	v.Purge("x")
	if err := set(t, v, ctx, "x", "4"); err != nil || len(v.Versions("x")) != 1 {
		t.Fatalf("set after purge: %v, %d versions", err, len(v.Versions("x")))
	}
}

// The wire shapes a client other than azsecrets would see.
func TestWire(t *testing.T) {
	v := kvtest.New(t, &kvtest.Options{PageSize: 10})
	for _, n := range []string{"a", "b", "c"} {
		v.Put(n, "v", time.Time{})
	}
	get := func(path string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Get(v.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("%s: %s", path, body)
		}
		return resp.StatusCode, m
	}

	status, page := get("/secrets?api-version=2026-04-01&maxresults=2")
	next, _ := page["nextLink"].(string)
	if status != 200 || len(page["value"].([]any)) != 2 || !strings.Contains(next, "maxresults=2") || !strings.HasPrefix(next, v.URL+"/secrets?") {
		t.Fatalf("first page: %d %v", status, page)
	}
	status, page = get(strings.TrimPrefix(next, v.URL))
	if l, ok := page["nextLink"]; status != 200 || len(page["value"].([]any)) != 1 || !ok || l != nil {
		t.Fatalf("last page: %d %v; want one item and a null nextLink", status, page)
	}
	item := page["value"].([]any)[0].(map[string]any)
	if item["id"] != v.URL+"/secrets/c" || item["value"] != nil {
		t.Errorf("list item %v: want a versionless id and no value", item)
	}

	status, body := get("/secrets/a?api-version=2026-04-01")
	if status != 200 || body["value"] != "v" {
		t.Errorf("get without trailing slash: %d %v", status, body)
	}
	status, body = get("/secrets/a/")
	if status != 400 || body["error"].(map[string]any)["code"] != "BadParameter" {
		t.Errorf("no api-version: %d %v", status, body)
	}
}

func TestTLSChallenge(t *testing.T) {
	v := kvtest.New(t, &kvtest.Options{TLS: true})
	resp, err := v.HTTPClient().Get(v.URL + "/secrets/x/?api-version=2026-04-01")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := `Bearer authorization="https://login.microsoftonline.com/` + kvtest.TenantID + `", resource="https://vault.azure.net"`
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != want {
		t.Fatalf("%d %q; want the challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	v.Put("x", "1", time.Time{})
	if _, err := v.Client.GetSecret(t.Context(), "x", "", nil); err != nil {
		t.Fatal(err)
	}
	if c := v.Counts(); c != (kvtest.Counts{Gets: 1, Challenges: 2}) {
		t.Errorf("counts %+v", c)
	}
}

// TestLimits pins the double's Key Vault limits: within any 10 seconds,
// 300 secret writes and 4,000 other requests are served and the next is
// answered 429 Throttled with a Retry-After of the seconds until it fits; a
// throttled request does not count, and the window slides. Without
// Options.Limits nothing is throttled. In a synctest bubble, in process.
func TestLimits(t *testing.T) {
	for _, tt := range []struct {
		name   string
		op     kvtest.Op
		limit  int
		limits bool
	}{
		{"writes", kvtest.OpSet, kvtest.WritesPer10s, true},
		{"reads", kvtest.OpGet, kvtest.OthersPer10s, true},
		{"writes without limits", kvtest.OpSet, kvtest.WritesPer10s, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				noRetry := &azsecrets.ClientOptions{}
				noRetry.Retry.MaxRetries = -1
				v := kvtest.New(t, &kvtest.Options{Limits: tt.limits, InProcess: true, ClientOptions: noRetry})
				v.Put("s", "v", time.Time{})
				ctx := context.Background()
				do := func() error {
					if tt.op == kvtest.OpSet {
						return set(t, v, ctx, "s", "v")
					}
					_, err := v.Client.GetSecret(ctx, "s", "", nil)
					return err
				}
				// Spread over the first 5 seconds.
				for i := range tt.limit {
					time.Sleep(5 * time.Second / time.Duration(tt.limit))
					if err := do(); err != nil {
						t.Fatalf("request %d of %d: %v", i+1, tt.limit, err)
					}
				}
				err := do()
				if !tt.limits {
					if err != nil || v.Counts().Throttled != 0 {
						t.Fatalf("without limits: %v, %d throttled", err, v.Counts().Throttled)
					}
					return
				}
				var re *azcore.ResponseError
				if !errors.As(err, &re) || re.StatusCode != http.StatusTooManyRequests || re.ErrorCode != "Throttled" {
					t.Fatalf("request %d: %v; want 429 Throttled", tt.limit+1, err)
				}
				// The first request was made at 5s/limit, so it leaves the
				// window a little over 5 s from now: 6 whole seconds.
				if ra := re.RawResponse.Header.Get("Retry-After"); ra != "6" {
					t.Errorf("Retry-After %q, want 6", ra)
				}
				if err := do(); statusOf(err) != http.StatusTooManyRequests {
					t.Fatalf("a second request in the full window: %v, want 429", err)
				}
				if got := v.Counts().Throttled; got != 2 {
					t.Errorf("Throttled = %d, want 2", got)
				}
				time.Sleep(5*time.Second + 5*time.Second/time.Duration(tt.limit) + time.Microsecond)
				// The throttled ones did not count: the oldest request has
				// left the window, so exactly one more fits.
				if err := do(); err != nil {
					t.Fatalf("after the window slid: %v", err)
				}
				if err := do(); statusOf(err) != http.StatusTooManyRequests {
					t.Fatalf("over the limit again: %v, want 429", err)
				}
			})
		})
	}
}
