package metrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/metrics"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/metrics/promtext"
)

// record plays one of each event the broker reports.
func record(m *metrics.Metrics) {
	m.TokenServed("xero", broker.SourceMemory, 90*time.Second)
	m.TokenServed("xero", broker.SourceMemory, 100*time.Second)
	m.TokenServed("xero", broker.SourceRefresh, 0)
	m.TokenServed("sf", broker.SourceStore, -1) // age unknown: counted, not recorded
	m.Refreshed("xero", broker.OutcomeSuccess, 300*time.Millisecond)
	m.Refreshed("sf", broker.Outcome(broker.CodeRejected), 80*time.Millisecond)
	m.TokenEndpoint("xero", broker.OutcomeSuccess, 200*time.Millisecond)
	m.LockWaited("xero", "acquired", 3*time.Millisecond)
	m.StoreFailed("sf", "write")
}

func TestPrometheusText(t *testing.T) {
	m, err := metrics.New(metrics.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	record(m)
	var buf bytes.Buffer
	if err := m.WritePrometheus(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	fams, err := promtext.Parse(buf.String())
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, buf.String())
	}
	for _, tt := range []struct {
		family string
		typ    string
		sample string
		want   float64
	}{
		{"tokenrefresher_tokens_served_total", "counter", `tokenrefresher_tokens_served_total{connection="xero",source="memory"}`, 2},
		{"tokenrefresher_tokens_served_total", "counter", `tokenrefresher_tokens_served_total{connection="sf",source="store"}`, 1},
		{"tokenrefresher_refreshes_total", "counter", `tokenrefresher_refreshes_total{connection="sf",outcome="provider_rejected"}`, 1},
		{"tokenrefresher_refreshes_total", "counter", `tokenrefresher_refreshes_total{connection="xero",outcome="success"}`, 1},
		{"tokenrefresher_store_errors_total", "counter", `tokenrefresher_store_errors_total{connection="sf",operation="write"}`, 1},
		{"tokenrefresher_refresh_duration_seconds", "histogram", `tokenrefresher_refresh_duration_seconds_count{connection="xero",outcome="success"}`, 1},
		{"tokenrefresher_refresh_duration_seconds", "histogram", `tokenrefresher_refresh_duration_seconds_bucket{connection="xero",outcome="success",le="0.25"}`, 0},
		{"tokenrefresher_refresh_duration_seconds", "histogram", `tokenrefresher_refresh_duration_seconds_bucket{connection="xero",outcome="success",le="0.5"}`, 1},
		{"tokenrefresher_token_endpoint_duration_seconds", "histogram", `tokenrefresher_token_endpoint_duration_seconds_sum{connection="xero",outcome="success"}`, 0.2},
		{"tokenrefresher_lock_wait_seconds", "histogram", `tokenrefresher_lock_wait_seconds_count{connection="xero",outcome="acquired"}`, 1},
		{"tokenrefresher_token_age_seconds", "histogram", `tokenrefresher_token_age_seconds_sum{connection="xero",source="memory"}`, 190},
		{"tokenrefresher_token_age_seconds", "histogram", `tokenrefresher_token_age_seconds_count{connection="xero",source="memory"}`, 2},
	} {
		f, ok := fams[tt.family]
		if !ok {
			t.Errorf("no family %s in\n%s", tt.family, buf.String())
			continue
		}
		if f.Type != tt.typ {
			t.Errorf("%s: TYPE %s, want %s", tt.family, f.Type, tt.typ)
		}
		got, ok := f.Samples[tt.sample]
		if !ok {
			t.Errorf("no sample %s in\n%s", tt.sample, buf.String())
		} else if got != tt.want {
			t.Errorf("%s = %v, want %v", tt.sample, got, tt.want)
		}
	}
	if _, ok := fams["tokenrefresher_token_age_seconds"].Samples[`tokenrefresher_token_age_seconds_count{connection="sf",source="store"}`]; ok {
		t.Error("a token of unknown age was recorded in the age histogram")
	}
}

// TestTokenAgeOncePerSecondOfAge: every token served is counted, and the
// age histogram takes at most one answer per series in each second of
// age: a busy connection answers thousands of times a second with the
// same token, and recording each cost most of a cache hit's work.
func TestTokenAgeOncePerSecondOfAge(t *testing.T) {
	type served struct {
		conn   string
		source broker.Source
		age    time.Duration
		times  int
	}
	tests := []struct {
		name            string
		served          []served
		wantCount       float64 // xero's memory series in the histogram
		wantSum         float64
		wantServedTotal float64 // xero's memory series in the counter
	}{
		{"one second of age, many answers", []served{{"xero", broker.SourceMemory, 61200 * time.Millisecond, 100}}, 1, 61.2, 100},
		{"the next second", []served{
			{"xero", broker.SourceMemory, 61200 * time.Millisecond, 10},
			{"xero", broker.SourceMemory, 62 * time.Second, 10},
		}, 2, 123.2, 20},
		{"a new token starts again at 0", []served{
			{"xero", broker.SourceMemory, 3599 * time.Second, 5},
			{"xero", broker.SourceMemory, 500 * time.Millisecond, 5},
		}, 2, 3599.5, 10},
		{"each series on its own", []served{
			{"xero", broker.SourceMemory, 10 * time.Second, 3},
			{"xero", broker.SourceRefresh, 10 * time.Second, 3},
			{"sf", broker.SourceMemory, 10 * time.Second, 3},
			{"xero", broker.SourceMemory, 10 * time.Second, 3},
		}, 1, 10, 6},
		{"unknown age is counted only", []served{{"xero", broker.SourceMemory, -1, 7}}, 0, 0, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := metrics.New(metrics.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Shutdown(context.Background())
			for _, s := range tt.served {
				for range s.times {
					m.TokenServed(s.conn, s.source, s.age)
				}
			}
			var buf bytes.Buffer
			if err := m.WritePrometheus(context.Background(), &buf); err != nil {
				t.Fatal(err)
			}
			fams, err := promtext.Parse(buf.String())
			if err != nil {
				t.Fatal(err)
			}
			const series = `{connection="xero",source="memory"}`
			sample := func(family, name string) float64 {
				if f, ok := fams[family]; ok {
					return f.Samples[name+series]
				}
				return 0 // absent
			}
			if got := sample("tokenrefresher_token_age_seconds", "tokenrefresher_token_age_seconds_count"); got != tt.wantCount {
				t.Errorf("age histogram count %v, want %v", got, tt.wantCount)
			}
			if got := sample("tokenrefresher_token_age_seconds", "tokenrefresher_token_age_seconds_sum"); got != tt.wantSum {
				t.Errorf("age histogram sum %v, want %v", got, tt.wantSum)
			}
			if got := sample("tokenrefresher_tokens_served_total", "tokenrefresher_tokens_served_total"); got != tt.wantServedTotal {
				t.Errorf("served %v, want %v", got, tt.wantServedTotal)
			}
		})
	}
}

// TestPrometheusEscapesLabelValues: a connection name is the operator's,
// and the format's quoting must survive any of it.
func TestPrometheusEscapesLabelValues(t *testing.T) {
	m, err := metrics.New(metrics.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	m.StoreFailed("a\"b\\c\nd", "read")
	var buf bytes.Buffer
	if err := m.WritePrometheus(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	fams, err := promtext.Parse(buf.String())
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	want := `tokenrefresher_store_errors_total{connection="a\"b\\c\nd",operation="read"}`
	if fams["tokenrefresher_store_errors_total"].Samples[want] != 1 {
		t.Errorf("no sample %s in\n%s", want, buf.String())
	}
}

// fakeCredential hands out a fixed token and counts what it was asked.
type fakeCredential struct {
	mu     sync.Mutex
	scopes []string
}

func (c *fakeCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scopes = append(c.scopes, o.Scopes...)
	return azcore.AccessToken{Token: "entra-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// TestAppInsightsExport posts to a double of the ingestion endpoint and
// checks what customMetrics would get: one MetricData envelope per series,
// named as the instruments, attributes as properties, histograms as sum,
// count, min and max, signed with an Entra ID token for Azure Monitor.
func TestAppInsightsExport(t *testing.T) {
	type posted struct {
		path, auth, ctype string
		items             []map[string]any
	}
	got := make(chan posted, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var items []map[string]any
		if err := json.NewDecoder(r.Body).Decode(&items); err != nil {
			t.Errorf("body is not a JSON array: %v", err)
		}
		got <- posted{r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), items}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"itemsReceived":1,"itemsAccepted":1,"errors":[]}`))
	}))
	defer srv.Close()
	cs, err := metrics.ParseConnectionString("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=" + srv.URL + "/;LiveEndpoint=https://live.example/")
	if err != nil {
		t.Fatal(err)
	}
	cred := &fakeCredential{}
	m, err := metrics.New(metrics.Options{
		Exporter: &metrics.AppInsights{Conn: cs, Credential: cred, Role: "func-tokenrefresher", RoleInstance: "instance-1", Client: srv.Client()},
		Interval: time.Hour, // exported by ForceFlush only
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	record(m)
	if err := m.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var p posted
	select {
	case p = <-got:
	default:
		t.Fatal("nothing was posted")
	}
	if p.path != "/v2.1/track" || p.auth != "Bearer entra-token" || !strings.HasPrefix(p.ctype, "application/json") {
		t.Errorf("posted to %s with Authorization %q, Content-Type %q", p.path, p.auth, p.ctype)
	}
	if len(cred.scopes) == 0 || cred.scopes[0] != "https://monitor.azure.com//.default" {
		t.Errorf("token asked for scopes %v", cred.scopes)
	}
	find := func(name string, props map[string]string) map[string]any {
		for _, it := range p.items {
			data := it["data"].(map[string]any)
			base := data["baseData"].(map[string]any)
			mt := base["metrics"].([]any)[0].(map[string]any)
			if mt["name"] != name {
				continue
			}
			match := true
			for k, v := range props {
				pr, _ := base["properties"].(map[string]any)
				if pr[k] != v {
					match = false
				}
			}
			if match {
				if it["name"] != "Microsoft.ApplicationInsights.Metric" || data["baseType"] != "MetricData" ||
					it["iKey"] != "00000000-0000-0000-0000-000000000001" {
					t.Errorf("envelope %v", it)
				}
				if tags := it["tags"].(map[string]any); tags["ai.cloud.role"] != "func-tokenrefresher" || tags["ai.cloud.roleInstance"] != "instance-1" {
					t.Errorf("tags %v", tags)
				}
				return mt
			}
		}
		t.Errorf("no %s %v among %d items", name, props, len(p.items))
		return nil
	}
	if mt := find(metrics.NameRefreshes, map[string]string{"connection": "sf", "outcome": "provider_rejected"}); mt != nil && mt["value"] != 1.0 {
		t.Errorf("refreshes = %v", mt)
	}
	if mt := find(metrics.NameTokensServed, map[string]string{"connection": "xero", "source": "memory"}); mt != nil && mt["value"] != 2.0 {
		t.Errorf("served = %v", mt)
	}
	if mt := find(metrics.NameTokenAge, map[string]string{"connection": "xero", "source": "memory"}); mt != nil &&
		(mt["value"] != 190.0 || mt["count"] != 2.0 || mt["min"] != 90.0 || mt["max"] != 100.0) {
		t.Errorf("age = %v", mt)
	}
	find(metrics.NameStoreErrors, map[string]string{"connection": "sf", "operation": "write"})

	// Deltas: an interval with no event posts nothing of that series.
	m.StoreFailed("sf", "write")
	if err := m.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	p = <-got
	if mt := find(metrics.NameStoreErrors, map[string]string{"connection": "sf", "operation": "write"}); mt != nil && mt["value"] != 1.0 {
		t.Errorf("second interval's store errors = %v, want the delta 1", mt)
	}
	// The served count is read at collection (an observable counter):
	// an interval without a token served posts none of its series, and
	// the next posts what was served since, not the running total.
	for _, it := range p.items {
		base := it["data"].(map[string]any)["baseData"].(map[string]any)
		for _, pt := range base["metrics"].([]any) {
			if name := pt.(map[string]any)["name"]; name == metrics.NameTokensServed {
				t.Errorf("second interval posts %s %v with no token served", name, base["properties"])
			}
		}
	}
	m.TokenServed("xero", broker.SourceMemory, -1)
	if err := m.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	p = <-got
	if mt := find(metrics.NameTokensServed, map[string]string{"connection": "xero", "source": "memory"}); mt != nil && mt["value"] != 1.0 {
		t.Errorf("third interval's served = %v, want the delta 1", mt)
	}
}

func TestAppInsightsRefusal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
	}))
	defer srv.Close()
	a := &metrics.AppInsights{Conn: metrics.ConnectionString{InstrumentationKey: "k", IngestionEndpoint: srv.URL}, Client: srv.Client()}
	m, err := metrics.New(metrics.Options{Exporter: a, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	m.StoreFailed("x", "read")
	if err := m.ForceFlush(context.Background()); err == nil || !strings.Contains(err.Error(), "HTTP 403") {
		t.Errorf("ForceFlush = %v, want the 403", err)
	}
}

func TestParseConnectionString(t *testing.T) {
	for _, tt := range []struct {
		in       string
		endpoint string
		bad      bool
	}{
		{"InstrumentationKey=k;IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/;LiveEndpoint=https://x/", "https://westeurope-5.in.applicationinsights.azure.com/", false},
		{"instrumentationkey=k", metrics.DefaultIngestionEndpoint, false},
		{"IngestionEndpoint=https://x/", "", true},
		{"InstrumentationKey=k;IngestionEndpoint=ftp://x/", "", true},
	} {
		cs, err := metrics.ParseConnectionString(tt.in)
		if (err != nil) != tt.bad {
			t.Errorf("%q: err = %v", tt.in, err)
			continue
		}
		if !tt.bad && cs.IngestionEndpoint != tt.endpoint {
			t.Errorf("%q: endpoint %q, want %q", tt.in, cs.IngestionEndpoint, tt.endpoint)
		}
	}
}
