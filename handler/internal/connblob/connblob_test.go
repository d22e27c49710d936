package connblob

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/azurite"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
)

const (
	good     = `{"connections": [{"name": "xero", "provider": "xero"}]}`
	goodTwo  = `{"connections": [{"name": "xero", "provider": "xero"}, {"name": "graph", "provider": "microsoft", "tenant": "common"}]}`
	misspelt = `{"connections": [{"name": "xero", "provider": "xeroo"}]}`
)

// newStore returns a Store on a container of its own in az, and a second
// Store on the same blob with a client of its own, as another workstation
// or instance would have.
func newStore(t *testing.T, az *azurite.Instance, container string) (*Store, *Store) {
	t.Helper()
	var stores [2]*Store
	for i := range stores {
		c, err := azblob.NewClientFromConnectionString(az.ConnectionString(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if _, err := c.CreateContainer(context.Background(), container, nil); err != nil {
				t.Fatal(err)
			}
		}
		stores[i] = New(c, Location{Container: container, Blob: "connections.json"})
	}
	return stores[0], stores[1]
}

func TestStore(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()

	t.Run("put creates, read returns it, a conditional read is unchanged", func(t *testing.T) {
		s, _ := newStore(t, az, "c-create")
		if _, err := s.Read(ctx, ""); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Read before any put = %v; want ErrNotFound", err)
		}
		etag, err := s.Put(ctx, []byte(good), "")
		if err != nil {
			t.Fatal(err)
		}
		v, err := s.Read(ctx, "")
		if err != nil || string(v.Data) != good || v.ETag != etag {
			t.Fatalf("Read = %q %s %v; want the file with ETag %s", v.Data, v.ETag, err, etag)
		}
		if _, err := s.Read(ctx, etag); !errors.Is(err, ErrUnchanged) {
			t.Fatalf("Read(If-None-Match current) = %v; want ErrUnchanged", err)
		}
	})

	t.Run("put refuses what the validator refuses, and writes nothing", func(t *testing.T) {
		s, _ := newStore(t, az, "c-invalid")
		etag, err := s.Put(ctx, []byte(good), "")
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Put(ctx, []byte(misspelt), etag)
		var ve *config.ValidationError
		if !errors.As(err, &ve) || !strings.Contains(err.Error(), `did you mean "xero"`) {
			t.Fatalf("Put(misspelt) = %v; want the validator's problems with did-you-mean", err)
		}
		if v, err := s.Read(ctx, ""); err != nil || string(v.Data) != good {
			t.Fatalf("after a refused put the file is %q (%v); want it unchanged", v.Data, err)
		}
	})

	t.Run("two operators: the second put, based on the old version, is refused", func(t *testing.T) {
		alice, bob := newStore(t, az, "c-conflict")
		base, err := alice.Put(ctx, []byte(good), "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.Put(ctx, []byte(goodTwo), base); err != nil {
			t.Fatal(err)
		}
		_, err = bob.Put(ctx, []byte(good), base)
		var ce *ConflictError
		if !errors.As(err, &ce) || ce.Based != base {
			t.Fatalf("Put on a stale ETag = %v; want a ConflictError based on %s", err, base)
		}
		if _, err := bob.Put(ctx, []byte(good), ""); !errors.As(err, &ce) {
			t.Fatalf("Put creating over an existing file = %v; want a ConflictError", err)
		}
		if v, _ := bob.Read(ctx, ""); string(v.Data) != goodTwo {
			t.Fatalf("the file is %q; want alice's %q", v.Data, goodTwo)
		}
	})
}

func TestWatcher(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()
	operator, instance := newStore(t, az, "c-watch")
	w := NewWatcher(instance)

	if _, err := w.Check(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Check with no file = %v; want ErrNotFound", err)
	}
	etag, err := operator.Put(ctx, []byte(good), "")
	if err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		name string
		// put, when not "", is written (bypassing Put's validation, as a
		// portal upload would) before Check.
		put         string
		wantConns   []string
		wantRefused string
		// wantCurrent is the set the Watcher holds afterwards.
		wantCurrent []string
	}{
		{name: "first version accepted", wantConns: []string{"xero"}, wantCurrent: []string{"xero"}},
		{name: "unchanged", wantCurrent: []string{"xero"}},
		{name: "bad change refused, the running set stays", put: misspelt, wantRefused: `did you mean "xero"`, wantCurrent: []string{"xero"}},
		{name: "the refused version is reported once", wantCurrent: []string{"xero"}},
		{name: "a good change is accepted", put: goodTwo, wantConns: []string{"xero", "graph"}, wantCurrent: []string{"xero", "graph"}},
	}
	for _, st := range steps {
		if st.put != "" {
			etag = uploadUnchecked(t, operator, st.put, etag)
		}
		ch, err := w.Check(ctx)
		if err != nil {
			t.Fatalf("%s: Check = %v", st.name, err)
		}
		if got := names(ch.Conns); strings.Join(got, ",") != strings.Join(st.wantConns, ",") {
			t.Errorf("%s: Check gave %v; want %v", st.name, got, st.wantConns)
		}
		switch {
		case st.wantRefused == "" && ch.Refused != nil:
			t.Errorf("%s: refused: %v", st.name, ch.Refused)
		case st.wantRefused != "" && (ch.Refused == nil || !strings.Contains(ch.Refused.Error(), st.wantRefused)):
			t.Errorf("%s: Refused = %v; want %q", st.name, ch.Refused, st.wantRefused)
		}
		cur, _ := w.Current()
		if got := names(cur); strings.Join(got, ",") != strings.Join(st.wantCurrent, ",") {
			t.Errorf("%s: Current = %v; want %v", st.name, got, st.wantCurrent)
		}
	}
}

// uploadUnchecked writes data over based without validating it.
func uploadUnchecked(t *testing.T, s *Store, data string, based azcore.ETag) azcore.ETag {
	t.Helper()
	resp, err := s.blob.UploadBuffer(context.Background(), []byte(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	if *resp.ETag == based {
		t.Fatal("the upload kept the ETag")
	}
	return *resp.ETag
}

func names(conns []broker.Connection) []string {
	var out []string
	for _, c := range conns {
		out = append(out, c.Name)
	}
	return out
}
