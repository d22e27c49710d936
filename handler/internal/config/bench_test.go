package config

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkParseThousandConnections is start-up's share of a large
// deployment: reading and checking a connections file of 1,000 entries.
func BenchmarkParseThousandConnections(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"connections":[`)
	for i := range 1000 {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `{"name":"c%04d","provider":"xero"}`, i)
	}
	sb.WriteString("]}")
	data := []byte(sb.String())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseConnections(data); err != nil {
			b.Fatal(err)
		}
	}
}
