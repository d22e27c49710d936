package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Why the handler posts to Application Insights itself (README, "Metrics
// in Azure"):
//
//   - Azure Monitor ships OpenTelemetry exporters and distros for .NET,
//     Java, Node.js and Python only; there is none for Go
//     (https://learn.microsoft.com/azure/azure-monitor/app/opentelemetry-help-support-feedback).
//   - The Functions host does not receive a worker's metrics. With
//     host.json's "telemetryMode": "OpenTelemetry" it exports its own logs
//     and traces (OpenTelemetryConfigurationExtensions.ConfigureOpenTelemetry
//     in azure-functions-host: AddOpenTelemetry for logs, WithTracing, no
//     worker metrics and no OTLP receiver); a custom handler's stdout
//     becomes traces, never customMetrics.
//   - Every Azure Monitor exporter sends metrics as MetricData envelopes
//     named "Microsoft.ApplicationInsights.Metric", POSTed as a JSON array
//     to <IngestionEndpoint>/v2.1/track (azure-monitor-opentelemetry-exporter
//     for Python, export/metrics/_exporter.py _convert_point_to_envelope;
//     for Java, getFullIngestionUrl). They land in customMetrics with the
//     attributes in customDimensions, which charts and alerts read by name.
//
// The app's Application Insights refuses local (instrumentation key)
// authentication (infra/modules/monitoring.bicep DisableLocalAuth), so the
// post carries an Entra ID token for https://monitor.azure.com
// (https://learn.microsoft.com/azure/azure-monitor/app/azure-ad-authentication),
// of the identity APPLICATIONINSIGHTS_AUTHENTICATION_STRING names, which
// holds Monitoring Metrics Publisher (infra/modules/roles.bicep).

// DefaultIngestionEndpoint is where telemetry goes when the connection
// string names no IngestionEndpoint.
const DefaultIngestionEndpoint = "https://dc.services.visualstudio.com/"

// monitorScope is the Entra ID scope of Application Insights ingestion.
const monitorScope = "https://monitor.azure.com//.default"

// envelopeName is the name every Azure Monitor exporter gives a metric's
// envelope.
const envelopeName = "Microsoft.ApplicationInsights.Metric"

// ConnectionString is what the exporter needs of
// APPLICATIONINSIGHTS_CONNECTION_STRING.
type ConnectionString struct {
	InstrumentationKey string
	IngestionEndpoint  string
}

// ParseConnectionString reads an Application Insights connection string
// (key=value pairs separated by semicolons, keys in any case).
func ParseConnectionString(s string) (ConnectionString, error) {
	var cs ConnectionString
	for part := range strings.SplitSeq(s, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "instrumentationkey":
			cs.InstrumentationKey = strings.TrimSpace(v)
		case "ingestionendpoint":
			cs.IngestionEndpoint = strings.TrimSpace(v)
		}
	}
	if cs.InstrumentationKey == "" {
		return cs, errors.New("APPLICATIONINSIGHTS_CONNECTION_STRING has no InstrumentationKey")
	}
	if cs.IngestionEndpoint == "" {
		cs.IngestionEndpoint = DefaultIngestionEndpoint
	}
	u, err := url.Parse(cs.IngestionEndpoint)
	if err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
		return cs, fmt.Errorf("APPLICATIONINSIGHTS_CONNECTION_STRING: IngestionEndpoint %q is not an http(s) URL", cs.IngestionEndpoint)
	}
	return cs, nil
}

// AppInsights is an OpenTelemetry metric exporter that posts to
// Application Insights' ingestion endpoint. It asks for delta temporality:
// each envelope is one interval's aggregate (sum, count, min, max), as
// customMetrics keeps them.
type AppInsights struct {
	Conn ConnectionString
	// Credential, when set, signs each post with an Entra ID token
	// (Authorization=AAD in APPLICATIONINSIGHTS_AUTHENTICATION_STRING).
	Credential azcore.TokenCredential
	// Role and RoleInstance fill cloud_RoleName and cloud_RoleInstance.
	Role, RoleInstance string
	// Client defaults to a client with a 30-second timeout.
	Client *http.Client
}

var _ sdkmetric.Exporter = (*AppInsights)(nil)

// Temporality implements sdkmetric.Exporter: deltas.
func (*AppInsights) Temporality(sdkmetric.InstrumentKind) metricdata.Temporality {
	return metricdata.DeltaTemporality
}

// Aggregation implements sdkmetric.Exporter: the SDK's defaults.
func (*AppInsights) Aggregation(k sdkmetric.InstrumentKind) sdkmetric.Aggregation {
	return sdkmetric.DefaultAggregationSelector(k)
}

// ForceFlush implements sdkmetric.Exporter; nothing is buffered.
func (*AppInsights) ForceFlush(context.Context) error { return nil }

// Shutdown implements sdkmetric.Exporter.
func (*AppInsights) Shutdown(context.Context) error { return nil }

// envelope is one telemetry item of the track API.
type envelope struct {
	Name string            `json:"name"`
	Time string            `json:"time"`
	IKey string            `json:"iKey"`
	Tags map[string]string `json:"tags,omitempty"`
	Data envelopeData      `json:"data"`
}

type envelopeData struct {
	BaseType string     `json:"baseType"`
	BaseData metricData `json:"baseData"`
}

type metricData struct {
	Ver        int               `json:"ver"`
	Metrics    []dataPoint       `json:"metrics"`
	Properties map[string]string `json:"properties,omitempty"`
}

type dataPoint struct {
	Name  string   `json:"name"`
	Value float64  `json:"value"`
	Count *int64   `json:"count,omitempty"`
	Min   *float64 `json:"min,omitempty"`
	Max   *float64 `json:"max,omitempty"`
}

// trackResponse is the track API's answer.
type trackResponse struct {
	ItemsReceived int `json:"itemsReceived"`
	ItemsAccepted int `json:"itemsAccepted"`
	Errors        []struct {
		Index      int    `json:"index"`
		StatusCode int    `json:"statusCode"`
		Message    string `json:"message"`
	} `json:"errors"`
}

// envelopes converts one collection into track API items: one per data
// point, its attributes as properties (customDimensions).
func (a *AppInsights) envelopes(rm *metricdata.ResourceMetrics) []envelope {
	var out []envelope
	add := func(name string, t time.Time, props map[string]string, p dataPoint) {
		p.Name = name
		e := envelope{Name: envelopeName, Time: t.UTC().Format(time.RFC3339Nano), IKey: a.Conn.InstrumentationKey,
			Data: envelopeData{BaseType: "MetricData", BaseData: metricData{Ver: 2, Metrics: []dataPoint{p}, Properties: props}}}
		if a.Role != "" || a.RoleInstance != "" {
			e.Tags = map[string]string{"ai.cloud.role": a.Role, "ai.cloud.roleInstance": a.RoleInstance}
		}
		out = append(out, e)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			switch d := mt.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					if p.Value == 0 && d.IsMonotonic {
						// An observable counter's series that did not
						// move in the interval (the served counter); a
						// synchronous counter's delta is never 0
						// (sdk/metric internal/aggregate/sum.go,
						// deltaSum.collect clears its series at every
						// collection: "Unused attribute sets do not
						// report").
						continue
					}
					add(mt.Name, p.Time, properties(p.Attributes.ToSlice()), dataPoint{Value: float64(p.Value)})
				}
			case metricdata.Sum[float64]:
				for _, p := range d.DataPoints {
					add(mt.Name, p.Time, properties(p.Attributes.ToSlice()), dataPoint{Value: p.Value})
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					if p.Count == 0 {
						continue
					}
					count := int64(min(p.Count, 1<<62)) // #nosec G115 -- bounded just above
					dp := dataPoint{Value: p.Sum, Count: &count}
					if v, ok := p.Min.Value(); ok {
						dp.Min = &v
					}
					if v, ok := p.Max.Value(); ok {
						dp.Max = &v
					}
					add(mt.Name, p.Time, properties(p.Attributes.ToSlice()), dp)
				}
			}
		}
	}
	return out
}

func properties(kvs []attribute.KeyValue) map[string]string {
	if len(kvs) == 0 {
		return nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.AsString()
	}
	return m
}

// Export implements sdkmetric.Exporter: one POST of every data point.
func (a *AppInsights) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	items := a.envelopes(rm)
	if len(items) == 0 {
		return nil
	}
	body, err := json.Marshal(items)
	if err != nil {
		return err
	}
	endpoint, err := url.JoinPath(a.Conn.IngestionEndpoint, "v2.1/track")
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if a.Credential != nil {
		tok, err := a.Credential.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{monitorScope}})
		if err != nil {
			return fmt.Errorf("metrics: no Entra ID token for Application Insights: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok.Token)
	}
	client := a.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("metrics: posting to Application Insights: %w", err)
	}
	defer resp.Body.Close()
	var tr trackResponse
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&tr)
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusPartialContent:
		return fmt.Errorf("metrics: Application Insights accepted %d of %d items", tr.ItemsAccepted, len(items))
	}
	return fmt.Errorf("metrics: Application Insights answered HTTP %d to %d items", resp.StatusCode, len(items))
}
