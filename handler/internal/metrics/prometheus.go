package metrics

import (
	"bufio"
	"context"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// ContentType is the media type of WritePrometheus's output: the
// Prometheus text exposition format, version 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/).
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// WritePrometheus writes every instrument's cumulative state in the
// Prometheus text format. It is written here rather than through
// go.opentelemetry.io/otel/exporters/prometheus, which would bring in
// prometheus/client_golang and its dependencies for seven instruments.
//
// Names: dots become underscores, a unit of seconds adds "_seconds", a
// counter adds "_total" (the family name carries it, as the format's
// examples do). Families are sorted by name and samples by labels, so the
// output is stable.
func (m *Metrics) WritePrometheus(ctx context.Context, w io.Writer) error {
	rm, err := m.collect(ctx)
	if err != nil {
		return err
	}
	var all []metricdata.Metrics
	for _, sm := range rm.ScopeMetrics {
		all = append(all, sm.Metrics...)
	}
	slices.SortFunc(all, func(a, b metricdata.Metrics) int { return strings.Compare(a.Name, b.Name) })
	bw := bufio.NewWriter(w)
	for _, mt := range all {
		writeFamily(bw, mt)
	}
	return bw.Flush()
}

// promName is the Prometheus family name of an instrument.
func promName(mt metricdata.Metrics, counter bool) string {
	n := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == ':' {
			return r
		}
		return '_'
	}, mt.Name)
	if mt.Unit == "s" {
		n += "_seconds"
	}
	if counter {
		n += "_total"
	}
	return n
}

func writeFamily(w *bufio.Writer, mt metricdata.Metrics) {
	switch d := mt.Data.(type) {
	case metricdata.Sum[int64]:
		writeSum(w, mt, d.IsMonotonic, d.DataPoints)
	case metricdata.Sum[float64]:
		writeSum(w, mt, d.IsMonotonic, d.DataPoints)
	case metricdata.Histogram[float64]:
		name := promName(mt, false)
		writeHeader(w, name, mt.Description, "histogram")
		points := slices.Clone(d.DataPoints)
		slices.SortFunc(points, func(a, b metricdata.HistogramDataPoint[float64]) int {
			return strings.Compare(labels(a.Attributes, "", 0), labels(b.Attributes, "", 0))
		})
		for _, p := range points {
			var cum uint64
			for i, c := range p.BucketCounts {
				cum += c
				le := math.Inf(1)
				if i < len(p.Bounds) {
					le = p.Bounds[i]
				}
				sample(w, name+"_bucket", labels(p.Attributes, "le", le), float64(cum))
			}
			sample(w, name+"_sum", labels(p.Attributes, "", 0), p.Sum)
			sample(w, name+"_count", labels(p.Attributes, "", 0), float64(p.Count))
		}
	}
}

func writeSum[N int64 | float64](w *bufio.Writer, mt metricdata.Metrics, monotonic bool, points []metricdata.DataPoint[N]) {
	name, typ := promName(mt, monotonic), "gauge"
	if monotonic {
		typ = "counter"
	}
	writeHeader(w, name, mt.Description, typ)
	points = slices.Clone(points)
	slices.SortFunc(points, func(a, b metricdata.DataPoint[N]) int {
		return strings.Compare(labels(a.Attributes, "", 0), labels(b.Attributes, "", 0))
	})
	for _, p := range points {
		sample(w, name, labels(p.Attributes, "", 0), float64(p.Value))
	}
}

// writeHeader and sample ignore WriteString's error: a bufio.Writer keeps
// its first error and returns it from Flush, which the caller checks.
func writeHeader(w *bufio.Writer, name, help, typ string) {
	if help != "" {
		// HELP escapes backslash and line feed.
		help = strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(help)
		_, _ = w.WriteString("# HELP " + name + " " + help + "\n")
	}
	_, _ = w.WriteString("# TYPE " + name + " " + typ + "\n")
}

func sample(w *bufio.Writer, name, labels string, v float64) {
	_, _ = w.WriteString(name + labels + " " + formatFloat(v) + "\n")
}

// labelEscaper escapes a label value as the format requires: backslash,
// double quote and line feed.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// labels renders a point's attributes, sorted by key (attribute.Set keeps
// them so), with le appended when leKey is set.
func labels(set attribute.Set, leKey string, le float64) string {
	var b strings.Builder
	iter := set.Iter()
	for iter.Next() {
		kv := iter.Attribute()
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(promLabelName(string(kv.Key)) + `="` + labelEscaper.Replace(kv.Value.AsString()) + `"`)
	}
	if leKey != "" {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(leKey + `="` + formatFloat(le) + `"`)
	}
	if b.Len() == 0 {
		return ""
	}
	return "{" + b.String() + "}"
}

func promLabelName(k string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, k)
}

// formatFloat writes a value as the format takes it: Go's shortest float
// syntax, and +Inf, -Inf and NaN spelled so.
func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
