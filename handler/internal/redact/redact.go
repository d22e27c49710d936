// Package redact removes known secret values from text before it leaves the
// process: log records, HTTP bodies, consent pages, command output.
//
// It works on values, not patterns. Every secret the process holds (client
// secrets, refresh and access tokens, the API key, the write-ahead key) is
// registered with a Redactor when it is read from the store or obtained from
// a provider (Store, Grant, Remember). The Redactor then finds, in any text,
// each registered value in the forms a provider or a library may echo it:
//
//   - as it is;
//   - URL-encoded: query style (space as "+") and path style (space as
//     "%20"), each with upper- and lower-case hex;
//   - JSON-escaped, with and without HTML escaping (\u003c), and with "/"
//     escaped as "\/";
//   - HTML-escaped (&#39;, &amp;);
//   - base64, standard and URL alphabets, padded or not, at each of the
//     three byte alignments it can have inside a longer encoded string (a
//     Basic credential "id:secret"), and the base64 of its URL-encoded form
//     (RFC 6749 §2.3.1 form-encodes a client secret before base64);
//
// and any piece of 12 or more characters (Window) of any of those forms:
// a provider that quotes half a token, or cuts it, still has it redacted.
// Forms shorter than Window are matched whole. Values shorter than MinLength
// are not registered: replacing them would garble ordinary text, and no
// provider issues them.
//
// Matching is a rolling hash over the text's 12-byte windows looked up in
// one hash set of every 12-byte window of every form, so a scan costs a few
// map lookups per byte whatever the number of secrets. A hash collision can
// only redact too much, never too little: equal windows have equal hashes.
//
// Memory is bounded: each value is registered under a key (the secret's
// name in the store, or the connection and kind of a token just issued),
// and a key keeps its current value and the one before it (a provider may
// still quote the token it just rotated away), forgetting older ones.
package redact

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"
)

const (
	// Window is the length of the shortest piece of a secret's form that
	// is found and redacted.
	Window = 12
	// MinLength is the length of the shortest value Remember registers.
	MinLength = 8
	// Placeholder replaces what is redacted.
	Placeholder = "[redacted]"
)

// hashBase is the rolling hash's multiplier (an odd 64-bit constant, the
// FNV prime): h(w) = Σ w[i]·base^(Window-1-i) mod 2^64.
const hashBase uint64 = 0x100000001b3

// topPower is hashBase^(Window-1), to take the leaving byte out of the hash.
var topPower = func() uint64 {
	p := uint64(1)
	for range Window - 1 {
		p *= hashBase
	}
	return p
}()

// Redactor finds registered secret values in text. The zero value is not
// usable; a nil *Redactor redacts nothing. It is safe for concurrent use.
type Redactor struct {
	mu sync.RWMutex
	// windows counts, for each hash of a Window-byte piece of a form of a
	// registered value, the registrations that hold it.
	windows map[uint64]int32
	// short counts the registrations of each form shorter than Window.
	short map[string]int32
	// keys holds each key's current value and the one before it.
	keys map[string][2]string
	// values counts the key slots holding each value, so that a value
	// registered under two keys is forgotten only when both let it go.
	values map[string]int32
}

// New returns an empty Redactor.
func New() *Redactor {
	return &Redactor{windows: map[uint64]int32{}, short: map[string]int32{}, keys: map[string][2]string{}, values: map[string]int32{}}
}

// Remember registers value under key. The value key held before stays
// registered; the one before that is forgotten, unless another key holds
// it. Values shorter than MinLength are ignored.
func (r *Redactor) Remember(key, value string) {
	if r == nil || len(value) < MinLength {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	slot := r.keys[key]
	if slot[0] == value {
		return
	}
	if slot[1] == value {
		// Back to the previous value: swap, nothing to add or forget.
		r.keys[key] = [2]string{value, slot[0]}
		return
	}
	if slot[1] != "" {
		r.release(slot[1])
	}
	r.keys[key] = [2]string{value, slot[0]}
	r.values[value]++
	if r.values[value] == 1 {
		r.index(value, 1)
	}
}

// release drops one key slot's hold on v, and forgets v with the last.
func (r *Redactor) release(v string) {
	r.values[v]--
	if r.values[v] > 0 {
		return
	}
	delete(r.values, v)
	r.index(v, -1)
}

// index adds (delta 1) or removes (delta -1) the forms of v.
func (r *Redactor) index(v string, delta int32) {
	for _, f := range forms(v) {
		if len(f) < Window {
			r.short[f] += delta
			if r.short[f] <= 0 {
				delete(r.short, f)
			}
			continue
		}
		var h uint64
		for i := 0; i < len(f); i++ {
			if i >= Window {
				h -= uint64(f[i-Window]) * topPower
			}
			h = h*hashBase + uint64(f[i])
			if i >= Window-1 {
				r.windows[h] += delta
				if r.windows[h] <= 0 {
					delete(r.windows, h)
				}
			}
		}
	}
}

// forms returns the distinct forms in which v may be echoed (see the
// package documentation).
func forms(v string) []string {
	q := url.QueryEscape(v)
	p := strings.ReplaceAll(q, "+", "%20")
	out := []string{v, q, lowerHex(q), p, lowerHex(p), html.EscapeString(v)}
	for _, escapeHTML := range []bool{true, false} {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(escapeHTML)
		_ = enc.Encode(v)
		j := strings.TrimSuffix(strings.TrimSpace(b.String()), `"`)
		j = strings.TrimPrefix(j, `"`)
		out = append(out, j, strings.ReplaceAll(j, "/", `\/`))
	}
	for _, s := range []string{v, q} {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			for align := range 3 {
				out = append(out, base64Core(enc, s, align))
			}
		}
	}
	slices.Sort(out)
	return slices.DeleteFunc(slices.Compact(out), func(f string) bool { return f == "" })
}

// base64Core returns the characters of the base64 of s that depend on s
// alone when s starts align bytes after a 3-byte group boundary in a longer
// encoded string: those a prefix or a suffix cannot change.
func base64Core(enc *base64.Encoding, s string, align int) string {
	in := make([]byte, align, align+len(s))
	e := enc.EncodeToString(append(in, s...))
	first := (8*align + 5) / 6       // the first character whose bits are all in s
	last := 8 * (align + len(s)) / 6 // one past the last such character
	if first >= last {
		return ""
	}
	return e[first:last]
}

// lowerHex lower-cases the hex digits of every %XX escape in s.
func lowerHex(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			for j := i + 1; j <= i+2; j++ {
				if 'A' <= b[j] && b[j] <= 'F' {
					b[j] += 'a' - 'A'
				}
			}
			i += 2
		}
	}
	return string(b)
}

// spans returns the sorted, merged [start, end) ranges of b that hold a
// piece of a registered form.
func (r *Redactor) spans(b []byte) [][2]int {
	if r == nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out [][2]int
	add := func(s, e int) {
		if n := len(out); n > 0 && s <= out[n-1][1] {
			out[n-1][1] = max(out[n-1][1], e)
			return
		}
		out = append(out, [2]int{s, e})
	}
	if len(r.windows) > 0 {
		var h uint64
		for i := 0; i < len(b); i++ {
			if i >= Window {
				h -= uint64(b[i-Window]) * topPower
			}
			h = h*hashBase + uint64(b[i])
			if i >= Window-1 && r.windows[h] > 0 {
				add(i-Window+1, i+1)
			}
		}
	}
	if len(r.short) == 0 {
		return out
	}
	for f := range r.short {
		for from := 0; ; {
			i := bytes.Index(b[from:], []byte(f))
			if i < 0 {
				break
			}
			out = append(out, [2]int{from + i, from + i + len(f)})
			from += i + 1
		}
	}
	slices.SortFunc(out, func(x, y [2]int) int { return x[0] - y[0] })
	merged := out[:0]
	for _, s := range out {
		if n := len(merged); n > 0 && s[0] <= merged[n-1][1] {
			merged[n-1][1] = max(merged[n-1][1], s[1])
			continue
		}
		merged = append(merged, s)
	}
	return merged
}

// Bytes returns b with every registered secret, in any form, replaced by
// Placeholder. It returns b itself when there is nothing to replace.
func (r *Redactor) Bytes(b []byte) []byte {
	sp := r.spans(b)
	if len(sp) == 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	last := 0
	for _, s := range sp {
		out = append(out, b[last:s[0]]...)
		out = append(out, Placeholder...)
		last = s[1]
	}
	return append(out, b[last:]...)
}

// String is Bytes for a string.
func (r *Redactor) String(s string) string {
	if r == nil || s == "" {
		return s
	}
	if len(r.spans([]byte(s))) == 0 {
		return s
	}
	return string(r.Bytes([]byte(s)))
}

// Contains reports whether s holds a registered secret in any form.
func (r *Redactor) Contains(s string) bool { return len(r.spans([]byte(s))) > 0 }

// JSON returns the JSON text b with every registered secret replaced
// inside the strings that hold it, so that the result is still JSON text
// of the same shape. Text that is not JSON is redacted as Bytes does.
func (r *Redactor) JSON(b []byte) []byte {
	if len(r.spans(b)) == 0 {
		return b
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return r.Bytes(b)
	}
	var out bytes.Buffer
	if err := json.NewEncoder(&out).Encode(r.walk(v)); err != nil {
		return r.Bytes(b)
	}
	res := out.Bytes()
	if !bytes.HasSuffix(b, []byte("\n")) {
		res = bytes.TrimSuffix(res, []byte("\n"))
	}
	// Belt and braces: whatever re-encoding produced is checked again.
	return r.Bytes(res)
}

func (r *Redactor) walk(v any) any {
	switch v := v.(type) {
	case string:
		return r.String(v)
	case []any:
		for i := range v {
			v[i] = r.walk(v[i])
		}
		return v
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[r.String(k)] = r.walk(x)
		}
		return m
	}
	return v
}

// Writer returns a writer that redacts each Write before passing it on to
// w. A secret split across two Writes is not seen: it is for writers that
// get whole lines or messages, as fmt.Fprintf gives.
func (r *Redactor) Writer(w io.Writer) io.Writer {
	if r == nil {
		return w
	}
	return &writer{r: r, w: w}
}

type writer struct {
	r *Redactor
	w io.Writer
}

func (w *writer) Write(p []byte) (int, error) {
	if _, err := w.w.Write(w.r.Bytes(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}
