package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/azurite"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/bloblease"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// BenchmarkLossWindow measures our part of the loss window: from the
// moment the token endpoint's answer is in our hands (the grant returned)
// to the moment the rotated refresh token is durable (the write-ahead
// write returned), under 30 callers, each forcing a refresh of its own
// connection over and over, so that 30 refreshes and their durable writes
// overlap. It
// reports p50, p99 and max in milliseconds. The provider's own part (from
// its commit to its answer reaching us) is the provider's and the
// network's; TestKilledInstance/provider-committed shows what a kill there
// costs.
//
//	go test -run '^$' -bench LossWindow -benchtime 3000x ./handler
//
// local: the local lock and its journal (one append and one fsync);
// azurite: blob leases on Azurite, the record in the lock blob (one Put
// Blob under the lease).
func BenchmarkLossWindow(b *testing.B) {
	for _, backend := range []string{lockLocal, lockBlob} {
		b.Run(map[string]string{lockLocal: "local", lockBlob: "azurite"}[backend], func(b *testing.B) { benchLossWindow(b, backend) })
	}
}

// timingGrant notes when each connection's answer arrived.
type timingGrant struct {
	broker.Grant
	answered func(name string)
}

func (g timingGrant) Token(ctx context.Context, c *broker.Connection, cred broker.Credentials) (*broker.Token, error) {
	tok, err := g.Grant.Token(ctx, c, cred)
	g.answered(c.Name)
	return tok, err
}

func benchLossWindow(b *testing.B, backend string) {
	const callers = 30
	clientSecret := "cs_" + rand.Text()
	provider := testprovider.New(testprovider.Config{ClientID: "client", ClientSecret: clientSecret, AuthStyle: broker.AuthBasic, Rotate: true})
	ps := httptest.NewServer(provider)
	b.Cleanup(ps.Close)
	dir := b.TempDir()
	store, err := local.NewStore(dir)
	if err != nil {
		b.Fatal(err)
	}
	var locker broker.Locker
	if backend == lockLocal {
		locker, err = local.NewLocker(dir, local.LockerOptions{})
	} else {
		az := azurite.Start(b)
		var bc *azblob.Client
		if bc, err = azblob.NewClientFromConnectionString(az.ConnectionString(), bloblease.ClientOptions()); err == nil {
			locker, err = bloblease.New(bc, bloblease.Options{Container: "bench-window"})
		}
	}
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var conns []broker.Connection
	for i := range callers {
		c := crashConnection(ps.URL+"/token", 0)
		c.Name = fmt.Sprintf("c%02d", i)
		c.Secrets = broker.DefaultSecretNames(c.Name)
		conns = append(conns, c)
		for n, v := range map[string]string{c.Secrets.ClientSecret: clientSecret, c.Secrets.RefreshToken: provider.IssueRefreshToken()} {
			if err := store.Set(ctx, n, broker.StoredSecret{Value: broker.Secret(v)}); err != nil {
				b.Fatal(err)
			}
		}
	}

	var mu sync.Mutex
	answered := map[string]time.Time{}
	var windows, writes []time.Duration
	grant := timingGrant{Grant: oauth.New(oauth.Options{}), answered: func(name string) {
		mu.Lock()
		answered[name] = time.Now()
		mu.Unlock()
	}}
	write := func(ctx context.Context, name string, wal broker.WriteAheadLog, rec []byte) error {
		start := time.Now()
		err := wal.WriteAhead(ctx, rec)
		durable := time.Now()
		mu.Lock()
		windows = append(windows, durable.Sub(answered[name]))
		writes = append(writes, durable.Sub(start))
		mu.Unlock()
		return err
	}
	var clock atomic.Int64
	br, err := broker.New(broker.Options{
		Store: store, Locker: hookedLocker{Locker: locker, write: write}, Grant: grant, Connections: conns,
		WriteAheadKey: broker.StoredKey(store, locker),
		// The broker's clock gains an hour at every reading, so that each
		// ForceRefresh below is past the previous one's rate limit.
		Now: func() time.Time { return time.Now().Add(time.Duration(clock.Add(1)) * time.Hour) },
	})
	if err != nil {
		b.Fatal(err)
	}
	// Not closed: Close waits for flights, and every flight has ended
	// when the callers have.
	for _, c := range conns { // warm: the key, the lock blobs, the journals
		if _, err := br.ForceRefresh(ctx, c.Name); err != nil {
			b.Fatal(err)
		}
	}
	mu.Lock()
	windows, writes = windows[:0], writes[:0]
	mu.Unlock()

	var next, failed atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for i := range callers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if _, err := br.ForceRefresh(ctx, conns[i].Name); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d refreshes failed", n, b.N)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(windows) == 0 {
		b.Fatal("no refresh measured")
	}
	slices.Sort(windows)
	slices.Sort(writes)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(windows[len(windows)/2]), "p50-ms")
	b.ReportMetric(ms(windows[len(windows)*99/100]), "p99-ms")
	b.ReportMetric(ms(windows[len(windows)-1]), "max-ms")
	// The write alone: what is left is scheduling and sealing.
	b.ReportMetric(ms(writes[len(writes)/2]), "write-p50-ms")
	b.ReportMetric(ms(writes[len(writes)*99/100]), "write-p99-ms")
	b.ReportMetric(float64(len(windows)), "refreshes")
	if st := provider.Stats(); st.ReuseDetected != 0 {
		b.Fatalf("%d refresh tokens reused", st.ReuseDetected)
	}
}
