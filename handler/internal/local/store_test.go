package local_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

func newStore(t *testing.T) *local.Store {
	t.Helper()
	s, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStoreRoundTrip(t *testing.T) {
	expires := time.Date(2031, 2, 3, 4, 5, 6, 789, time.FixedZone("CET", 3600))
	updated := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		secret string // name used by Set
		get    string // name used by Get
		in     broker.StoredSecret
	}{
		{"value only", "xero-refresh-token", "xero-refresh-token", broker.StoredSecret{Value: "rt-1", UpdatedOn: updated}},
		{"all fields", "a", "a", broker.StoredSecret{Value: "at", ExpiresOn: expires, UpdatedOn: updated}},
		{"empty value", "e", "e", broker.StoredSecret{Value: "", UpdatedOn: updated}},
		{"JSON-hostile value", "q", "q", broker.StoredSecret{Value: "\"}\n\\u0000<&>\t\x00é€😀", UpdatedOn: updated}},
		{"long value", "big", "big", broker.StoredSecret{Value: broker.Secret(strings.Repeat("x", 25*1024)), UpdatedOn: updated}},
		{"longest name", strings.Repeat("n", 127), strings.Repeat("n", 127), broker.StoredSecret{Value: "v", UpdatedOn: updated}},
		{"names are case-insensitive", "Xero-Client-Secret", "xero-client-SECRET", broker.StoredSecret{Value: "cs", UpdatedOn: updated}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			ctx := context.Background()
			if err := s.Set(ctx, tt.secret, tt.in); err != nil {
				t.Fatalf("Set: %v", err)
			}
			got, err := s.Get(ctx, tt.get)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if got.Value != tt.in.Value {
				t.Errorf("value differs after round trip (got %d bytes, want %d)", len(got.Value), len(tt.in.Value))
			}
			if !got.ExpiresOn.Equal(tt.in.ExpiresOn) || !got.UpdatedOn.Equal(tt.in.UpdatedOn) {
				t.Errorf("times = %v, %v; want %v, %v", got.ExpiresOn, got.UpdatedOn, tt.in.ExpiresOn, tt.in.UpdatedOn)
			}
		})
	}
}

func TestStoreSetReplaces(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	for i := range 3 {
		v := broker.Secret("v" + strconv.Itoa(i))
		if err := s.Set(ctx, "x", broker.StoredSecret{Value: v}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "x")
		if err != nil || got.Value != v {
			t.Fatalf("after Set #%d: Get = %v, %v; want the value just written", i, got.Value == v, err)
		}
	}
	// Replacing leaves no temporary files behind.
	entries, err := os.ReadDir(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "x.json" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("secrets dir holds %v, want only x.json", names)
	}
}

func TestStoreUpdatedOnDefaultsToNow(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	before := time.Now()
	if err := s.Set(ctx, "x", broker.StoredSecret{Value: "v"}); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	got, err := s.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if got.UpdatedOn.Before(before) || got.UpdatedOn.After(after) {
		t.Errorf("UpdatedOn = %v, want between %v and %v", got.UpdatedOn, before, after)
	}
	if !got.ExpiresOn.IsZero() {
		t.Errorf("ExpiresOn = %v, want zero (none recorded)", got.ExpiresOn)
	}
}

func TestStoreGetNotFound(t *testing.T) {
	s := newStore(t)
	_, err := s.Get(context.Background(), "missing")
	if !errors.Is(err, broker.ErrSecretNotFound) {
		t.Fatalf("Get of a missing secret = %v, want ErrSecretNotFound", err)
	}
}

func TestStoreInvalidNames(t *testing.T) {
	names := []string{
		"", "../x", "a/b", `a\b`, "..", ".", "x.json", "-x", "1x", "a b", "a_b", "a\x00b",
		"é", "x\n", strings.Repeat("n", 128), "/etc/passwd",
	}
	dir := t.TempDir()
	s, err := local.NewStore(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, name := range names {
		t.Run(strconv.Quote(name), func(t *testing.T) {
			var ne *local.NameError
			if err := s.Set(ctx, name, broker.StoredSecret{Value: "v"}); !errors.As(err, &ne) || ne.Name != name {
				t.Errorf("Set = %v, want a *NameError naming it", err)
			}
			if _, err := s.Get(ctx, name); !errors.As(err, &ne) || errors.Is(err, broker.ErrSecretNotFound) {
				t.Errorf("Get = %v, want a *NameError (and not ErrSecretNotFound)", err)
			}
			if err := local.ValidateName(name); err == nil {
				t.Errorf("ValidateName accepted it")
			}
		})
	}
	// Nothing was written anywhere: the only file under dir is the empty
	// secrets directory.
	var files []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if len(files) != 0 {
		t.Errorf("invalid names created files: %v", files)
	}
}

func TestStoreRejectsInvalidUTF8(t *testing.T) {
	s := newStore(t)
	err := s.Set(context.Background(), "x", broker.StoredSecret{Value: secretText + "\xff"})
	if err == nil {
		t.Fatal("Set accepted a value that JSON cannot carry unchanged")
	}
	if strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("error %q quotes the value", err)
	}
	if _, err := s.Get(context.Background(), "x"); !errors.Is(err, broker.ErrSecretNotFound) {
		t.Errorf("Get after a rejected Set = %v, want ErrSecretNotFound", err)
	}
}

func TestStoreCanceledContext(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Set(ctx, "x", broker.StoredSecret{Value: "v"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Set = %v, want context.Canceled", err)
	}
	if _, err := s.Get(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get = %v, want context.Canceled", err)
	}
	if _, err := s.List(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("List = %v, want context.Canceled", err)
	}
}

// secretText appears in every corrupt file below; no error may show it.
const secretText = "s3cr3t-TOKEN"

func TestStoreCorruptFile(t *testing.T) {
	tests := []struct {
		name      string
		content   string
		field     string
		malformed bool
	}{
		{"empty file", "", "", true},
		{"cut short", `{"value":"` + secretText, "", true},
		{"not JSON", secretText, "", true},
		{"trailing data", `{"value":"x"}` + secretText, "", true},
		{"bare string", `"` + secretText + `"`, "", false},
		{"value is a number", `{"value": 31415926535}`, "value", false},
		{"value is null", `{"value": null}`, "value", false},
		{"value missing", `{"expiresOn":"2030-01-01T00:00:00Z"}`, "value", false},
		{"expiresOn not a time", `{"value":"` + secretText + `","expiresOn":"` + secretText + `"}`, "expiresOn", false},
		{"updatedOn a number", `{"value":"` + secretText + `","updatedOn":31415926535}`, "updatedOn", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			path := filepath.Join(s.Dir(), "x.json")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := s.Get(context.Background(), "x")
			var ce *local.CorruptFileError
			if !errors.As(err, &ce) {
				t.Fatalf("Get = %v, want a *CorruptFileError", err)
			}
			if errors.Is(err, broker.ErrSecretNotFound) {
				t.Errorf("a corrupt secret reads as not found; the broker would then lose the refresh token")
			}
			if ce.Path != path || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name %s", err, path)
			}
			if ce.Field != tt.field || (ce.Offset >= 0) != tt.malformed {
				t.Errorf("Field, Offset = %q, %d; want %q, malformed %v", ce.Field, ce.Offset, tt.field, tt.malformed)
			}
			for _, leak := range []string{"s3cr3t", "TOKEN", "31415926535"} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error %q shows the file's content", err)
				}
			}
		})
	}
}

func TestStoreList(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	exp := time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)
	upd := time.Date(2029, 6, 1, 0, 0, 0, 0, time.UTC)
	for _, name := range []string{"b-client-secret", "A-access-token"} {
		if err := s.Set(ctx, name, broker.StoredSecret{Value: secretText, ExpiresOn: exp, UpdatedOn: upd}); err != nil {
			t.Fatal(err)
		}
	}
	// Things that are not secrets: a temporary file a crash left behind, a
	// file whose name breaks the rules, a directory, a corrupt secret.
	for name, content := range map[string]string{
		".a.json.123.tmp": `{"value":"x"}`,
		"not_a_name.json": `{"value":"x"}`,
		"notes.txt":       "x",
		"c.json":          `{"value":` + secretText,
	} {
		if err := os.WriteFile(filepath.Join(s.Dir(), name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(s.Dir(), "d.json"), 0o700); err != nil {
		t.Fatal(err)
	}

	infos, err := s.List(ctx)
	var ce *local.CorruptFileError
	if !errors.As(err, &ce) || filepath.Base(ce.Path) != "c.json" {
		t.Errorf("List error = %v, want a *CorruptFileError for c.json", err)
	} else if strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("List error %q shows a value", err)
	}
	want := []local.SecretInfo{
		{Name: "a-access-token", ExpiresOn: exp, UpdatedOn: upd},
		{Name: "b-client-secret", ExpiresOn: exp, UpdatedOn: upd},
	}
	if fmt.Sprint(infos) != fmt.Sprint(want) {
		t.Errorf("List = %v, want %v", infos, want)
	}
}

// TestStoreConcurrentReadersSeeWholeValues has writers replace one secret
// with values of varying length while readers check that every value they
// read is one that was written, whole. A non-atomic write (truncate, then
// write) fails this quickly with an empty or short value.
func TestStoreConcurrentReadersSeeWholeValues(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	value := func(n int) broker.Secret {
		// Self-describing: "<n>:" then a length and a letter derived from n.
		return broker.Secret(strconv.Itoa(n) + ":" + strings.Repeat(string(rune('a'+n%26)), (n*7919)%20000))
	}
	check := func(v broker.Secret) error {
		n, _, ok := strings.Cut(v.Reveal(), ":")
		i, err := strconv.Atoi(n)
		if !ok || err != nil || v != value(i) {
			return fmt.Errorf("read a value of %d bytes that no writer wrote", len(v.Reveal()))
		}
		return nil
	}
	if err := s.Set(ctx, "shared", broker.StoredSecret{Value: value(0)}); err != nil {
		t.Fatal(err)
	}

	const writers, readers, writes = 3, 4, 40
	var wg, wwg sync.WaitGroup
	done := make(chan struct{})
	errs := make(chan error, writers+readers)
	for w := range writers {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			for i := range writes {
				if err := s.Set(ctx, "shared", broker.StoredSecret{Value: value(1 + w*writes + i)}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	reads := make([]int, readers)
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				got, err := s.Get(ctx, "shared")
				if err == nil {
					err = check(got.Value)
				}
				if err != nil {
					errs <- err
					return
				}
				reads[r]++
			}
		}()
	}
	wwg.Wait()
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for r, n := range reads {
		if n == 0 {
			t.Errorf("reader %d read nothing while writers ran", r)
		}
	}
}
