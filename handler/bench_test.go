package main

// Benchmarks of what the product costs, run by `make bench` with
// -benchtime 1x: each iteration is a whole scenario, and the figures are
// reported as custom metrics (go test prints them beside ns/op).

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/azurite"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/bloblease"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault/kvtest"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testclock"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// countingPolicy counts the requests an azblob client sends.
type countingPolicy struct{ n *atomic.Int64 }

func (p countingPolicy) Do(req *policy.Request) (*http.Response, error) {
	p.n.Add(1)
	return req.Next()
}

// benchWorld is a provider, a Key Vault double and Azurite, shared by
// brokers that stand for instances of the function app.
type benchWorld struct {
	clock      *testclock.Clock
	provider   *testprovider.Provider
	tokenURL   string
	vault      *kvtest.Vault
	az         *azurite.Instance
	blobOps    atomic.Int64
	secret     string
	refreshTok map[string]string
}

func newBenchWorld(b *testing.B, latency time.Duration, pageSize int) *benchWorld {
	b.Helper()
	w := &benchWorld{clock: testclock.New(time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)), secret: "cs_" + rand.Text(), refreshTok: map[string]string{}}
	w.provider = testprovider.New(testprovider.Config{ClientID: "client", ClientSecret: w.secret, AuthStyle: broker.AuthBasic,
		Rotate: true, AccessTokenLifetime: time.Hour, Now: w.clock.Now})
	var h http.Handler = w.provider
	if latency > 0 {
		// The provider's own processing time, as a real token endpoint
		// takes it: this is a simulated server, not a test waiting.
		h = http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			time.Sleep(latency)
			w.provider.ServeHTTP(rw, r)
		})
	}
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)
	w.tokenURL = srv.URL + "/token"
	w.vault = kvtest.New(b, &kvtest.Options{Now: w.clock.Now, PageSize: pageSize})
	w.az = azurite.Start(b)
	return w
}

func (w *benchWorld) connection(name string) broker.Connection {
	c := broker.Connection{Name: name, Provider: "test", Grant: broker.GrantRefreshToken, TokenURL: w.tokenURL,
		AuthStyle: broker.AuthBasic, ClientID: "client", Secrets: broker.DefaultSecretNames(name), Rotating: true,
		RefreshBefore: 5 * time.Minute, DefaultLifetime: time.Hour, KeepWarm: true}
	w.vault.Put(c.Secrets.ClientSecret, w.secret, time.Time{})
	rt := w.provider.IssueRefreshToken()
	w.vault.Put(c.Secrets.RefreshToken, rt, time.Time{})
	w.refreshTok[name] = rt
	return c
}

func (w *benchWorld) broker(b *testing.B, conns []broker.Connection, instance string) *broker.Broker {
	b.Helper()
	o := &azblob.ClientOptions{ClientOptions: bloblease.ClientOptions().ClientOptions}
	o.PerCallPolicies = []policy.Policy{countingPolicy{&w.blobOps}}
	bc, err := azblob.NewClientFromConnectionString(w.az.ConnectionString(), o)
	if err != nil {
		b.Fatal(err)
	}
	locker, err := bloblease.New(bc, bloblease.Options{PollInterval: 20 * time.Millisecond, Instance: instance})
	if err != nil {
		b.Fatal(err)
	}
	br, err := broker.New(broker.Options{
		Store: keyvault.New(w.vault.Client, keyvault.Options{}), Locker: locker,
		Grant:       oauth.New(oauth.Options{Now: w.clock.Now, Timeout: 30 * time.Second}),
		Connections: conns, Instance: instance, Now: w.clock.Now,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = br.Close(context.Background()) })
	return br
}

// BenchmarkCostPerThousandRequests: 1,000 token requests from 3 instances
// across 10 expiries of one connection, against what the refresh-as-
// first-step pattern costs for 1,000 pipeline runs (3 Key Vault reads, 1
// token call and 2 Key Vault writes each).
func BenchmarkCostPerThousandRequests(b *testing.B) {
	const (
		instances = 3
		requests  = 1000
		expiries  = 10
	)
	for range b.N {
		w := newBenchWorld(b, 0, 25)
		c := w.connection("xero")
		var brokers []*broker.Broker
		for i := range instances {
			brokers = append(brokers, w.broker(b, []broker.Connection{c}, fmt.Sprint("instance-", i)))
		}
		w.vault.ResetCounts()
		w.blobOps.Store(0)
		ctx := context.Background()
		for e := range expiries {
			var wg sync.WaitGroup
			for r := range requests / expiries {
				br := brokers[(e*requests/expiries+r)%instances]
				wg.Go(func() {
					if _, err := br.Token(ctx, "xero", 0); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
			w.clock.Advance(time.Hour)
		}
		counts := w.vault.Counts()
		calls := w.provider.Stats().TokenRequests
		b.ReportMetric(float64(calls), "token-calls")
		b.ReportMetric(float64(counts.Gets), "kv-reads")
		b.ReportMetric(float64(counts.Sets), "kv-writes")
		b.ReportMetric(float64(w.blobOps.Load()), "blob-ops")
		b.Logf("1,000 requests, 3 instances, 10 expiries: %d token calls, %d Key Vault reads, %d writes, %d blob operations; refresh-as-first-step: 1,000 token calls, 3,000 reads, 2,000 writes",
			calls, counts.Gets, counts.Sets, w.blobOps.Load())
		if calls != expiries {
			b.Errorf("%d token-endpoint calls, want %d", calls, expiries)
		}
	}
}

// BenchmarkSweepThousandConnections: one sweep over 1,000 connections whose
// tokens all need refreshing, against a provider that takes 200 ms per
// token request: one paged list of the vault, and at most
// broker.DefaultSweepParallelism refreshes at a time.
func BenchmarkSweepThousandConnections(b *testing.B) {
	const connections = 1000
	for range b.N {
		b.StopTimer()
		w := newBenchWorld(b, 200*time.Millisecond, 25)
		conns := make([]broker.Connection, connections)
		for i := range conns {
			conns[i] = w.connection(fmt.Sprintf("c%04d", i))
		}
		br := w.broker(b, conns, "sweeper")
		w.vault.ResetCounts()
		b.StartTimer()
		start := time.Now()
		results := br.Sweep(context.Background(), 10*time.Minute)
		elapsed := time.Since(start)
		b.StopTimer()
		failed := 0
		for _, r := range results {
			if r.Action != broker.SweepRefreshed {
				failed++
			}
		}
		counts := w.vault.Counts()
		b.ReportMetric(elapsed.Seconds(), "sweep-s")
		b.ReportMetric(float64(counts.Lists), "kv-list-pages")
		b.ReportMetric(float64(w.provider.Stats().TokenRequests), "token-calls")
		b.Logf("sweep of %d connections: %v, %d refreshed, %d not; one list walk of %d pages (25 secrets a page, as Key Vault), %d reads, %d writes",
			connections, elapsed.Round(time.Millisecond), connections-failed, failed, counts.Lists, counts.Gets, counts.Sets)
		if failed > 0 {
			b.Errorf("%d connections not refreshed", failed)
		}
	}
}
