package promtext_test

import (
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/metrics/promtext"
)

// TestParseRefuses: the parser the metrics tests rely on must refuse what
// the format does not allow, or it proves nothing.
func TestParseRefuses(t *testing.T) {
	const hist = "# TYPE h histogram\n"
	for _, tt := range []struct{ name, text, want string }{
		{"no final line feed", "a 1", "line feed"},
		{"bad name", "1a 1\n", "bad metric name"},
		{"bad label name", "a{1x=\"v\"} 1\n", "bad label name"},
		{"unquoted value", "a{x=v} 1\n", "not quoted"},
		{"bad escape", "a{x=\"\\t\"} 1\n", "bad escape"},
		{"open value", "a{x=\"v} 1\n", "not closed"},
		{"bad value", "a 1x\n", "bad value"},
		{"value 'inf'", "a inf\n", "bad value"},
		{"no value", "a\n", "no value"},
		{"type after samples", "a 1\n# TYPE a counter\n", "after its samples"},
		{"type twice", "# TYPE a counter\n# TYPE a counter\n", "second TYPE"},
		{"bad type", "# TYPE a meter\n", "bad type"},
		{"repeated sample", "a 1\na 2\n", "repeated"},
		{"split family", "a 1\nb 1\na{x=\"1\"} 1\n", "not together"},
		{"no +Inf", hist + "h_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", "no +Inf"},
		{"count differs", hist + "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n", "_count"},
		{"not cumulative", hist + "h_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n", "fewer"},
		{"no sum", hist + "h_bucket{le=\"+Inf\"} 1\nh_count 1\n", "no _sum"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := promtext.Parse(tt.text)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) = %v, want an error with %q", tt.text, err, tt.want)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	text := "# HELP a Some help.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\",y=\"2\"} 3 1700000000000\n# a comment\n" +
		"# TYPE h histogram\nh_bucket{c=\"x\",le=\"0.5\"} 1\nh_bucket{c=\"x\",le=\"+Inf\"} 2\nh_sum{c=\"x\"} 1.5\nh_count{c=\"x\"} 2\n"
	fams, err := promtext.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	if got := fams["a_total"].Samples[`a_total{x="q\"\\\n",y="2"}`]; got != 3 {
		t.Errorf("a_total = %v; families %v", got, fams["a_total"].Samples)
	}
	if fams["h"].Type != "histogram" || fams["h"].Samples[`h_count{c="x"}`] != 2 {
		t.Errorf("h = %+v", fams["h"])
	}
}
