package bloblease

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

func TestSanitize(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"invalid_grant", 64, "invalid_grant"},
		{"AADSTS700082", 64, "AADSTS700082"},
		{"rate limited", 64, "rate_limited"},
		{"bad\r\nx-ms-meta-evil: 1", 64, "bad__x-ms-meta-evil__1"},
		{"café", 64, "caf__"},
		{" edge ", 64, "_edge_"},
		{strings.Repeat("x", 100), 64, strings.Repeat("x", 64)},
		{"host.internal:443", 128, "host.internal_443"},
		{"", 64, ""},
	}
	for _, tt := range tests {
		if got := sanitize(tt.in, tt.max); got != tt.want {
			t.Errorf("sanitize(%q, %d) = %q; want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

// TestStatusMetadata checks the encoding on its own; the service's side
// is in TestStatusSharedWithNonHolders.
func TestStatusMetadata(t *testing.T) {
	full := broker.SharedStatus{
		LastRefresh: time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC),
		// Kept in whole milliseconds.
		LastRefreshDuration: 1234 * time.Millisecond,
		LastError:           "invalid_grant",
		Failures:            3,
		Instance:            "web-1",
		RecordedOn:          time.Date(2026, 3, 1, 12, 5, 0, 0, time.FixedZone("CET", 3600)),
	}
	md := encodeStatus(full)
	for k, v := range md {
		if k != strings.ToLower(k) || v == nil || *v == "" {
			t.Errorf("metadata %q=%v; want lower-case names and no empty values", k, v)
		}
	}
	// The service hands names back as Go's header handling left them.
	recased := map[string]*string{}
	for k, v := range md {
		recased[strings.ToUpper(k[:1])+k[1:]] = v
	}
	got := decodeStatus(recased)
	if !got.LastRefresh.Equal(full.LastRefresh) || !got.RecordedOn.Equal(full.RecordedOn) ||
		got.LastError != full.LastError || got.Failures != full.Failures || got.Instance != full.Instance ||
		got.LastRefreshDuration != full.LastRefreshDuration {
		t.Errorf("round trip = %+v; want %+v", got, full)
	}

	if md := encodeStatus(broker.SharedStatus{}); len(md) != 0 {
		t.Errorf("zero status encodes as %v; want nothing", md)
	}
	if got := decodeStatus(encodeStatus(broker.SharedStatus{LastRefreshDuration: 300 * time.Microsecond})); got.LastRefreshDuration != time.Millisecond {
		t.Errorf("a sub-millisecond refresh reads back as %v; want 1ms (a timed refresh is never unknown)", got.LastRefreshDuration)
	}
	junk := func(s string) *string { return &s }
	bad := decodeStatus(map[string]*string{
		"lastrefresh": junk("yesterday"), "failures": junk("-2"), "recordedon": nil, "lasterror": junk("x"), "lastrefreshms": junk("-5"),
	})
	if !bad.LastRefresh.IsZero() || bad.LastRefreshDuration != 0 || bad.Failures != 0 || !bad.RecordedOn.IsZero() || bad.LastError != "x" {
		t.Errorf("unparsable values read as %+v; want zero for each, the rest kept", bad)
	}
}
