package diagnose

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
)

// ParseBody reads a token endpoint's error response: a JSON object (RFC 6749
// §5.2, with Microsoft Entra's error_codes and HubSpot's status and message)
// or, as some providers send, a form-encoded one. Fields of unexpected types
// are skipped rather than failing the rest, and a body that is neither gives
// the zero Body.
func ParseBody(body []byte) Body {
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '{' {
		return parseJSON(body)
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil || (!vals.Has("error") && !vals.Has("status")) {
		return Body{}
	}
	b := Body{Code: vals.Get("error"), Description: vals.Get("error_description"), Status: vals.Get("status")}
	for _, f := range strings.FieldsFunc(vals.Get("error_codes"), func(r rune) bool { return r == ',' || r == ' ' }) {
		if n, err := strconv.Atoi(f); err == nil {
			b.ErrorCodes = append(b.ErrorCodes, n)
		}
	}
	return b
}

func parseJSON(body []byte) Body {
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil {
		return Body{}
	}
	str := func(k string) string {
		var s string
		_ = json.Unmarshal(fields[k], &s)
		return s
	}
	b := Body{Code: str("error"), Description: str("error_description"), Status: str("status")}
	if b.Description == "" {
		b.Description = str("message")
	}
	// Entra sends numbers; accept numeric strings too rather than lose the
	// codes to a proxy that rewrote them.
	var codes []json.RawMessage
	_ = json.Unmarshal(fields["error_codes"], &codes)
	for _, c := range codes {
		var n int
		if json.Unmarshal(c, &n) == nil {
			b.ErrorCodes = append(b.ErrorCodes, n)
			continue
		}
		var s string
		if json.Unmarshal(c, &s) == nil {
			if n, err := strconv.Atoi(s); err == nil {
				b.ErrorCodes = append(b.ErrorCodes, n)
			}
		}
	}
	return b
}
