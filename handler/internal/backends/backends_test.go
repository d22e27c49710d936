package backends

import (
	"context"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/azurite"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/bloblease"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
)

// TestBackendsChooseTheBlobLease: the storage settings the Functions host
// uses select the blob lease, on the account they name.
func TestBackendsChooseTheBlobLease(t *testing.T) {
	t.Parallel()
	az := azurite.Start(t)
	dir := t.TempDir()
	s, err := config.LoadSettings(func(k string) string {
		return map[string]string{
			"CONNECTIONS":         `{"connections": []}`,
			"LOCAL_STATE_DIR":     dir,
			"AzureWebJobsStorage": az.ConnectionString(),
			"LOCK_CONTAINER":      "locks-under-test",
		}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	_, locker, err := Open(s, func(string) string { return "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := locker.(*bloblease.Locker); !ok {
		t.Fatalf("locker is %T, want *bloblease.Locker", locker)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lock, err := locker.Lock(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	if err := lock.Release(ctx); err != nil {
		t.Fatal(err)
	}
	bc, err := azblob.NewClientFromConnectionString(az.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bc.ServiceClient().NewContainerClient("locks-under-test").GetProperties(ctx, nil); err != nil {
		t.Fatalf("the lock container from LOCK_CONTAINER was not created: %v", err)
	}
}
