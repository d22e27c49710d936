// Package metrics turns what the broker reports (broker.Observer) into
// OpenTelemetry instruments, and hands them out two ways: Prometheus text
// for a standalone handler's /metrics (prometheus.go), and Application
// Insights customMetrics for a handler in Azure (appinsights.go).
//
// The instruments are made through OpenTelemetry's metric API
// (go.opentelemetry.io/otel/metric), the ecosystem's one instrument API;
// the SDK (go.opentelemetry.io/otel/sdk/metric) aggregates them, and its
// readers feed the two outputs. The broker itself knows none of this: it
// imports only the standard library (broker/imports_test.go).
package metrics

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// The instruments' names, as Application Insights records them
// (customMetrics.name) and, with dots made underscores and the unit's
// suffix, as Prometheus exposes them (prometheus.go).
const (
	NameTokensServed     = "tokenrefresher.tokens.served"
	NameTokenAge         = "tokenrefresher.token.age"
	NameRefreshes        = "tokenrefresher.refreshes"
	NameRefreshDuration  = "tokenrefresher.refresh.duration"
	NameEndpointDuration = "tokenrefresher.token_endpoint.duration"
	NameLockWait         = "tokenrefresher.lock.wait"
	NameStoreErrors      = "tokenrefresher.store.errors"
)

// latencyBuckets are the histogram bounds, in seconds, of the three
// latencies: a token endpoint answers in tens to hundreds of
// milliseconds, a lock wait may last up to LOCK_WAIT (30 s).
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// ageBuckets are the bounds, in seconds, of a served token's age: from
// fresh to the 24 hours the longest-lived tokens reach.
var ageBuckets = []float64{1, 10, 60, 300, 600, 1200, 1800, 2700, 3600, 7200, 21600, 86400}

// Metrics is a broker.Observer recording into OpenTelemetry instruments.
// It is safe for concurrent use.
type Metrics struct {
	provider *sdkmetric.MeterProvider
	manual   *sdkmetric.ManualReader

	served      metric.Int64ObservableCounter
	age         metric.Float64Histogram
	refreshes   metric.Int64Counter
	refreshDur  metric.Float64Histogram
	endpointDur metric.Float64Histogram
	lockWait    metric.Float64Histogram
	storeErrors metric.Int64Counter

	// sets holds the options of each connection and label, made once: the
	// cache hit records on every request, and building the attribute set,
	// the variadic slices or a boxed map key each time would allocate
	// (TestCacheHitAllocations). They are kept by connection, a few labels
	// each: a map keyed by one string is read with its fast string hash,
	// where a key of three strings went through the generic hash on every
	// cache hit.
	mu   sync.RWMutex
	sets map[string][]labelSet
}

// labelSet is the options of one connection and one more label.
type labelSet struct {
	key, value string
	o          *options
}

// find returns the options of key and value in sets, nil when absent.
func find(sets []labelSet, key, value string) *options {
	for _, s := range sets {
		if s.key == key && s.value == value {
			return s.o
		}
	}
	return nil
}

// options are one attribute set as both kinds of measurement option, and,
// for a connection and source, the tokens served with it.
type options struct {
	add    []metric.AddOption
	record []metric.RecordOption
	// observe is the set as an observation option and served the count
	// of tokens served: a cache hit adds to it (one atomic add), and
	// the served counter reports it when it is collected (observeServed),
	// instead of an Add through the SDK on every request (about 0.1-0.2 µs:
	// its attribute lookup, exemplar filter and sum's atomics).
	observe []metric.ObserveOption
	served  atomic.Int64
	// agedSecond is the whole second of age (plus one; 0 for none) of
	// the answer last recorded in the age histogram with this set
	// (TokenServed).
	agedSecond atomic.Int64
}

// Options configure New.
type Options struct {
	// Exporter, when set, is sent the metrics every Interval (the Azure
	// path: AppInsights). Its Temporality decides whether it gets deltas.
	Exporter sdkmetric.Exporter
	// Interval is the export period. Default one minute, the grain of an
	// Application Insights metric chart.
	Interval time.Duration
}

// New makes the instruments. The Prometheus reader is always there
// (WritePrometheus); opts.Exporter adds a periodic export.
func New(opts Options) (*Metrics, error) {
	m := &Metrics{manual: sdkmetric.NewManualReader(), sets: map[string][]labelSet{}}
	po := []sdkmetric.Option{sdkmetric.WithReader(m.manual), sdkmetric.WithResource(resource.Empty())}
	if opts.Exporter != nil {
		if opts.Interval <= 0 {
			opts.Interval = time.Minute
		}
		po = append(po, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(opts.Exporter, sdkmetric.WithInterval(opts.Interval))))
	}
	m.provider = sdkmetric.NewMeterProvider(po...)
	meter := m.provider.Meter("github.com/tokenrefresher/tokenrefresher/handler")
	var err error
	mk := func(f func() error) {
		if err == nil {
			err = f()
		}
	}
	mk(func() (e error) {
		// Observable: the count is kept per series (options.served) and
		// read at collection; the exported names, attributes and values
		// are those of the synchronous counter it replaces. Every series
		// is observed at every collection, so the SDK's deltas are right;
		// a delta of zero is not sent to Application Insights
		// (envelopes), where a synchronous counter sent nothing.
		// (go.opentelemetry.io/otel/sdk/metric v1.47.0,
		// internal/aggregate/sum.go, precomputedSum.delta: the delta is
		// the observed value less the one last reported for the series,
		// and a series not observed in a collection is dropped from
		// reported, so its next delta would be its whole count.)
		m.served, e = meter.Int64ObservableCounter(NameTokensServed, metric.WithUnit("{token}"),
			metric.WithDescription("Tokens handed to callers, by connection and source (memory is a cache hit)."),
			metric.WithInt64Callback(m.observeServed))
		return
	})
	mk(func() (e error) {
		m.age, e = meter.Float64Histogram(NameTokenAge, metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(ageBuckets...),
			metric.WithDescription("Age of a token when it was handed to a caller, by connection and source; at most one answer per series in each second of age."))
		return
	})
	mk(func() (e error) {
		m.refreshes, e = meter.Int64Counter(NameRefreshes, metric.WithUnit("{refresh}"),
			metric.WithDescription("Refreshes (token endpoint call and persisting its result), by connection and outcome."))
		return
	})
	mk(func() (e error) {
		m.refreshDur, e = meter.Float64Histogram(NameRefreshDuration, metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(latencyBuckets...),
			metric.WithDescription("Duration of a refresh, by connection and outcome."))
		return
	})
	mk(func() (e error) {
		m.endpointDur, e = meter.Float64Histogram(NameEndpointDuration, metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(latencyBuckets...),
			metric.WithDescription("Duration of a token endpoint request, by connection and outcome."))
		return
	})
	mk(func() (e error) {
		m.lockWait, e = meter.Float64Histogram(NameLockWait, metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(latencyBuckets...),
			metric.WithDescription("Time spent taking a connection's refresh lock, by connection and outcome."))
		return
	})
	mk(func() (e error) {
		m.storeErrors, e = meter.Int64Counter(NameStoreErrors, metric.WithUnit("{error}"),
			metric.WithDescription("Secret store reads and writes that failed, by connection and operation."))
		return
	})
	if err != nil {
		_ = m.provider.Shutdown(context.Background())
		return nil, err
	}
	return m, nil
}

// Shutdown sends what the exporter has not yet been sent, then stops.
func (m *Metrics) Shutdown(ctx context.Context) error { return m.provider.Shutdown(ctx) }

// ForceFlush sends the exporter what it has not yet been sent.
func (m *Metrics) ForceFlush(ctx context.Context) error { return m.provider.ForceFlush(ctx) }

// collect reads every instrument's cumulative state.
func (m *Metrics) collect(ctx context.Context) (metricdata.ResourceMetrics, error) {
	var rm metricdata.ResourceMetrics
	err := m.manual.Collect(ctx, &rm)
	return rm, err
}

// attrs is the options of a connection and one more label.
func (m *Metrics) attrs(connection, key, value string) *options {
	m.mu.RLock()
	o := find(m.sets[connection], key, value)
	m.mu.RUnlock()
	if o != nil {
		return o
	}
	set := metric.WithAttributeSet(attribute.NewSet(attribute.String("connection", connection), attribute.String(key, value)))
	m.mu.Lock()
	defer m.mu.Unlock()
	if o = find(m.sets[connection], key, value); o == nil {
		o = &options{add: []metric.AddOption{set}, record: []metric.RecordOption{set}, observe: []metric.ObserveOption{set}}
		m.sets[connection] = append(m.sets[connection], labelSet{key, value, o})
	}
	return o
}

// observeServed reports every series of the served counter: a set made by
// TokenServed (its key is "source"), which has served at least one token.
func (m *Metrics) observeServed(_ context.Context, obs metric.Int64Observer) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, sets := range m.sets {
		for _, s := range sets {
			if s.key == "source" {
				obs.Observe(s.o.served.Load(), s.o.observe...)
			}
		}
	}
	return nil
}

var _ broker.Observer = (*Metrics)(nil)

// TokenServed implements broker.Observer. Every token is counted; the age
// histogram records at most one answer per series in each second of age.
// A histogram's Record costs a cache hit about 165 ns, most of a hit's
// work in process (go.opentelemetry.io/otel/sdk/metric v1.47.0
// instrument.go, float64Inst.Record: resolveAttributes dedups the set's
// values on every call, then each reader's aggregation looks the set up),
// where the count costs an atomic add. Answers within one second of age
// carry the same age to within the histogram's finest bound (1 s), so
// the histogram keeps each series' ages as they move, its oldest and
// newest; what it gives up at more than one answer per second is the
// weight of each answer, which the served counter carries.
func (m *Metrics) TokenServed(connection string, source broker.Source, age time.Duration) {
	o := m.attrs(connection, "source", string(source))
	o.served.Add(1) // reported at collection (observeServed)
	if age < 0 {
		return
	}
	if sec := int64(age/time.Second) + 1; o.agedSecond.Swap(sec) != sec {
		m.age.Record(context.Background(), age.Seconds(), o.record...)
	}
}

// Refreshed implements broker.Observer.
func (m *Metrics) Refreshed(connection string, outcome broker.Outcome, d time.Duration) {
	o := m.attrs(connection, "outcome", string(outcome))
	m.refreshes.Add(context.Background(), 1, o.add...)
	m.refreshDur.Record(context.Background(), d.Seconds(), o.record...)
}

// TokenEndpoint implements broker.Observer.
func (m *Metrics) TokenEndpoint(connection string, outcome broker.Outcome, d time.Duration) {
	m.endpointDur.Record(context.Background(), d.Seconds(), m.attrs(connection, "outcome", string(outcome)).record...)
}

// LockWaited implements broker.Observer.
func (m *Metrics) LockWaited(connection, outcome string, d time.Duration) {
	m.lockWait.Record(context.Background(), d.Seconds(), m.attrs(connection, "outcome", outcome).record...)
}

// StoreFailed implements broker.Observer.
func (m *Metrics) StoreFailed(connection, op string) {
	m.storeErrors.Add(context.Background(), 1, m.attrs(connection, "operation", op).add...)
}
