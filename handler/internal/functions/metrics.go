package functions

import (
	"context"
	"io"
	"net/http"
)

// PrometheusWriter writes the handler's metrics in the Prometheus text
// format (package metrics).
type PrometheusWriter interface {
	WritePrometheus(ctx context.Context, w io.Writer) error
}

// prometheusContentType is the text exposition format's media type,
// version 0.0.4.
const prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

// handleMetrics serves GET /metrics, a standalone handler's scrape target.
// It is not a function: the Functions host passes on only /api/ routes,
// and in Azure the metrics go to Application Insights instead. The API
// key guards it as every route (a scraper sends it as ?code=, Prometheus's
// scrape_config params).
func handleMetrics(m PrometheusWriter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", prometheusContentType)
		w.Header().Set("Cache-Control", "no-store")
		if err := m.WritePrometheus(r.Context(), w); err != nil {
			// The header is out; the scraper sees a truncated body.
			return
		}
	})
}
