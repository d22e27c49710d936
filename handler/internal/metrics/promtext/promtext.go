// Package promtext is a strict parser of the Prometheus text exposition
// format, version 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/), for the
// tests of what the handler serves at /metrics. Only tests import it: the
// handler writes the format (package metrics) and never reads it.
package promtext

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Family is one metric family: its TYPE and its samples, keyed by the
// sample's name and labels as the format writes them
// (name{k="v",...}, values escaped).
type Family struct {
	Type    string
	Help    string
	Samples map[string]float64
}

// Parse parses an exposition, refusing anything the format does not
// allow: a malformed line, a name or label outside its alphabet, an
// escape other than \\, \" and \n, a TYPE after its family's samples or
// given twice, a family's samples split by another's, a sample repeated,
// and a histogram whose buckets are not cumulative or whose +Inf bucket
// is not its count.
func Parse(text string) (map[string]*Family, error) {
	fams := map[string]*Family{}
	done := map[string]bool{} // families whose samples are over
	current := ""
	if text != "" && !strings.HasSuffix(text, "\n") {
		return nil, fmt.Errorf("the exposition does not end with a line feed")
	}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		n := i + 1
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "#"):
			fields := strings.SplitN(line, " ", 4)
			if len(fields) < 3 || fields[0] != "#" || (fields[1] != "HELP" && fields[1] != "TYPE") {
				continue // a comment
			}
			name := fields[2]
			if !validName(name, true) {
				return nil, fmt.Errorf("line %d: bad metric name %q", n, name)
			}
			f := fams[name]
			if f == nil {
				f = &Family{Samples: map[string]float64{}}
				fams[name] = f
			}
			rest := ""
			if len(fields) == 4 {
				rest = fields[3]
			}
			if fields[1] == "TYPE" {
				switch rest {
				case "counter", "gauge", "histogram", "summary", "untyped":
				default:
					return nil, fmt.Errorf("line %d: bad type %q", n, rest)
				}
				if len(f.Samples) > 0 {
					return nil, fmt.Errorf("line %d: TYPE for %s after its samples", n, name)
				}
				if f.Type != "" {
					return nil, fmt.Errorf("line %d: second TYPE for %s", n, name)
				}
				f.Type = rest
			} else {
				f.Help = rest
			}
		default:
			name, key, v, err := parseSample(line)
			if err != nil {
				return nil, fmt.Errorf("line %d: %v", n, err)
			}
			fam := familyOf(name, fams)
			if fam != current {
				if done[fam] {
					return nil, fmt.Errorf("line %d: samples of %s are not together", n, fam)
				}
				if current != "" {
					done[current] = true
				}
				current = fam
			}
			f := fams[fam]
			if f == nil {
				f = &Family{Type: "untyped", Samples: map[string]float64{}}
				fams[fam] = f
			}
			if _, dup := f.Samples[key]; dup {
				return nil, fmt.Errorf("line %d: sample %s repeated", n, key)
			}
			f.Samples[key] = v
		}
	}
	for name, f := range fams {
		if f.Type == "histogram" {
			if err := checkHistogram(name, f); err != nil {
				return nil, err
			}
		}
	}
	return fams, nil
}

// familyOf is the family a sample belongs to: a histogram's _bucket, _sum
// and _count belong to the histogram.
func familyOf(name string, fams map[string]*Family) string {
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if f := fams[base]; f != nil && (f.Type == "histogram" || f.Type == "summary") {
				return base
			}
		}
	}
	return name
}

func validName(s string, colon bool) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		ok := r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || colon && r == ':' || i > 0 && r >= '0' && r <= '9'
		if !ok {
			return false
		}
	}
	return true
}

// parseSample parses name{labels} value [timestamp] and returns the key
// name{labels} re-rendered.
func parseSample(line string) (name, key string, v float64, err error) {
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		return "", "", 0, fmt.Errorf("no value in %q", line)
	}
	name = line[:i]
	if !validName(name, true) {
		return "", "", 0, fmt.Errorf("bad metric name %q", name)
	}
	rest := line[i:]
	var labels []string
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.IndexByte(rest, '=')
			if eq < 0 {
				return "", "", 0, fmt.Errorf("bad label in %q", line)
			}
			ln := rest[:eq]
			if !validName(ln, false) {
				return "", "", 0, fmt.Errorf("bad label name %q", ln)
			}
			rest = rest[eq+1:]
			if !strings.HasPrefix(rest, `"`) {
				return "", "", 0, fmt.Errorf("label %s: value not quoted", ln)
			}
			rest = rest[1:]
			var val strings.Builder
			closed := false
			for j := 0; j < len(rest); j++ {
				c := rest[j]
				if c == '\\' {
					if j+1 >= len(rest) {
						return "", "", 0, fmt.Errorf("label %s: dangling backslash", ln)
					}
					switch rest[j+1] {
					case '\\':
						val.WriteByte('\\')
					case '"':
						val.WriteByte('"')
					case 'n':
						val.WriteByte('\n')
					default:
						return "", "", 0, fmt.Errorf("label %s: bad escape \\%c", ln, rest[j+1])
					}
					j++
					continue
				}
				if c == '"' {
					rest = rest[j+1:]
					closed = true
					break
				}
				if c == '\n' {
					return "", "", 0, fmt.Errorf("label %s: raw line feed", ln)
				}
				val.WriteByte(c)
			}
			if !closed {
				return "", "", 0, fmt.Errorf("label %s: value not closed", ln)
			}
			labels = append(labels, ln+`="`+strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(val.String())+`"`)
			if strings.HasPrefix(rest, ",") {
				rest = rest[1:]
			} else if !strings.HasPrefix(rest, "}") {
				return "", "", 0, fmt.Errorf("expected , or } after label %s", ln)
			}
		}
	}
	if !strings.HasPrefix(rest, " ") {
		return "", "", 0, fmt.Errorf("no space before the value in %q", line)
	}
	fields := strings.Split(rest[1:], " ")
	if len(fields) < 1 || len(fields) > 2 {
		return "", "", 0, fmt.Errorf("bad value or timestamp in %q", line)
	}
	v, err = parseValue(fields[0])
	if err != nil {
		return "", "", 0, err
	}
	if len(fields) == 2 {
		if _, err := strconv.ParseInt(fields[1], 10, 64); err != nil {
			return "", "", 0, fmt.Errorf("bad timestamp %q", fields[1])
		}
	}
	key = name
	if len(labels) > 0 {
		key += "{" + strings.Join(labels, ",") + "}"
	}
	return name, key, v, nil
}

func parseValue(s string) (float64, error) {
	switch s {
	case "+Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	case "NaN":
		return math.NaN(), nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || strings.ContainsAny(s, "_xXpP") || strings.EqualFold(s, "inf") || strings.EqualFold(s, "infinity") {
		return 0, fmt.Errorf("bad value %q", s)
	}
	return v, nil
}

// checkHistogram checks every series of a histogram: buckets cumulative
// in le order, a +Inf bucket equal to _count, and a _sum.
func checkHistogram(name string, f *Family) error {
	type series struct {
		les   []float64
		count map[float64]float64
	}
	all := map[string]*series{}
	counts := map[string]float64{}
	sums := map[string]bool{}
	for key, v := range f.Samples {
		sname, labels, _ := strings.Cut(key, "{")
		labels = strings.TrimSuffix(labels, "}")
		switch sname {
		case name + "_bucket":
			var le string
			var rest []string
			for _, l := range splitLabels(labels) {
				if v, ok := strings.CutPrefix(l, `le="`); ok {
					le = strings.TrimSuffix(v, `"`)
				} else {
					rest = append(rest, l)
				}
			}
			if le == "" {
				return fmt.Errorf("%s: a bucket without le: %s", name, key)
			}
			bound, err := parseValue(le)
			if err != nil {
				return fmt.Errorf("%s: bad le in %s", name, key)
			}
			id := strings.Join(rest, ",")
			s := all[id]
			if s == nil {
				s = &series{count: map[float64]float64{}}
				all[id] = s
			}
			s.les = append(s.les, bound)
			s.count[bound] = v
		case name + "_count":
			counts[labels] = v
		case name + "_sum":
			sums[labels] = true
		default:
			return fmt.Errorf("%s: sample %s is not a histogram's", name, key)
		}
	}
	for id, s := range all {
		inf, ok := s.count[math.Inf(1)]
		if !ok {
			return fmt.Errorf("%s{%s}: no +Inf bucket", name, id)
		}
		if c, ok := counts[id]; !ok || c != inf {
			return fmt.Errorf("%s{%s}: _count %v, +Inf bucket %v", name, id, c, inf)
		}
		if !sums[id] {
			return fmt.Errorf("%s{%s}: no _sum", name, id)
		}
		prev := math.Inf(-1)
		prevCount := 0.0
		// Buckets in le order.
		les := append([]float64(nil), s.les...)
		for i := range les {
			for j := i + 1; j < len(les); j++ {
				if les[j] < les[i] {
					les[i], les[j] = les[j], les[i]
				}
			}
		}
		for _, le := range les {
			if le == prev {
				return fmt.Errorf("%s{%s}: le %v twice", name, id, le)
			}
			if s.count[le] < prevCount {
				return fmt.Errorf("%s{%s}: bucket le=%v holds %v, fewer than the one before", name, id, le, s.count[le])
			}
			prev, prevCount = le, s.count[le]
		}
	}
	return nil
}

// splitLabels splits rendered labels at the commas between them (values
// are escaped, so a comma inside quotes is part of a value).
func splitLabels(s string) []string {
	var out []string
	inQuote, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}
