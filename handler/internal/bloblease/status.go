package bloblease

import (
	"strconv"
	"strings"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// Metadata names of the recorded status. Metadata names must be C#
// identifiers, and the service hands them back in whatever case HTTP
// header handling left them (Go's gives "Lastrefresh"), so they are
// written in lower case and read without regard to case.
const (
	metaLastRefresh = "lastrefresh"
	// metaLastRefreshMs is how long that refresh took, in milliseconds.
	metaLastRefreshMs = "lastrefreshms"
	metaLastError     = "lasterror"
	metaFailures      = "failures"
	metaInstance      = "instance"
	metaRecordedOn    = "recordedon"
)

// Bounds on recorded text: a category word and a host or instance name fit
// with room to spare, and a blob's metadata stays far below its 8 KiB.
const (
	maxLastError = 64
	maxInstance  = 128
)

// encodeStatus turns s into blob metadata. Zero fields are left out rather
// than written empty: the metadata is replaced as a whole, so a field left
// out reads back as zero all the same.
func encodeStatus(s broker.SharedStatus) map[string]*string {
	m := map[string]*string{}
	put := func(k, v string) {
		if v != "" {
			m[k] = &v
		}
	}
	put(metaLastRefresh, formatTime(s.LastRefresh))
	if ms := (s.LastRefreshDuration + time.Millisecond - 1).Milliseconds(); ms > 0 { // rounded up: timed is never zero
		put(metaLastRefreshMs, strconv.FormatInt(ms, 10))
	}
	put(metaLastError, sanitize(s.LastError, maxLastError))
	if s.Failures != 0 {
		put(metaFailures, strconv.Itoa(s.Failures))
	}
	put(metaInstance, sanitize(s.Instance, maxInstance))
	put(metaRecordedOn, formatTime(s.RecordedOn))
	return m
}

// decodeStatus reads what encodeStatus wrote; a value that does not parse
// reads as zero.
func decodeStatus(md map[string]*string) broker.SharedStatus {
	get := func(k string) string {
		for name, v := range md {
			if v != nil && strings.EqualFold(name, k) {
				return *v
			}
		}
		return ""
	}
	var s broker.SharedStatus
	s.LastRefresh = parseTime(get(metaLastRefresh))
	if ms, err := strconv.ParseInt(get(metaLastRefreshMs), 10, 64); err == nil && ms > 0 {
		s.LastRefreshDuration = time.Duration(ms) * time.Millisecond
	}
	s.LastError = get(metaLastError)
	if n, err := strconv.Atoi(get(metaFailures)); err == nil && n > 0 {
		s.Failures = n
	}
	s.Instance = get(metaInstance)
	s.RecordedOn = parseTime(get(metaRecordedOn))
	return s
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(v string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}
	}
	return t
}

// sanitize makes s safe as a metadata value: every byte that is not a
// letter, digit, '_', '.' or '-' becomes '_' (a metadata value is an HTTP
// header value, and signed at that, so spaces at its ends, control
// characters and non-ASCII would be mangled or refused), and the result is
// cut to max bytes.
func sanitize(s string, max int) string {
	b := []byte(s[:min(len(s), max)])
	for i, c := range b {
		if !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			b[i] = '_'
		}
	}
	return string(b)
}
