package functions

import (
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// The token answer is the hit path: every pipeline run asks for it, and
// nearly always the token is in memory. encoding/json spent more on it
// (reflection, an Encoder and its buffer per answer) than the broker spends
// finding the token, so the answer is written by appendTokenResponse
// instead, into a pooled buffer. It is byte for byte what
// json.NewEncoder(w).Encode(tokenResponse{...}) writes, trailing newline
// included (TestTokenResponseEncoding, FuzzTokenResponseEncoding).

// Header values of the token answer, shared by every answer instead of one
// []string allocated per header per request. Nothing modifies a header
// value in place (Header.Add appends, which copies a full slice; Set and
// Del replace), so sharing them is safe.
var (
	jsonContentType = []string{"application/json; charset=utf-8"}
	noSniff         = []string{"nosniff"}
	noStore         = []string{"no-store"}
	noCache         = []string{"no-cache"}
)

// maxPooledTokenBuf bounds the buffers kept for reuse: a provider that
// issues one huge token does not pin that much memory for ever.
const maxPooledTokenBuf = 16 << 10

var tokenBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, 1024)
	return &b
}}

// writeToken answers 200 with tok as a tokenResponse.
func writeToken(w http.ResponseWriter, tok broker.AccessToken, now time.Time) {
	w = servingSecret(w) // the access token, past the answers' redaction (redact.go)
	h := w.Header()
	h["Cache-Control"] = noStore
	h["Pragma"] = noCache
	h["Content-Type"] = jsonContentType
	h["X-Content-Type-Options"] = noSniff
	w.WriteHeader(http.StatusOK)
	bp := tokenBufs.Get().(*[]byte)
	b := appendTokenResponse((*bp)[:0], tok.Value.Reveal(), tok.TokenType, int64(tok.Expiry.Sub(now)/time.Second), tok.Expiry)
	_, _ = w.Write(b) // a Writer must not retain b (io.Writer)
	clear(b)          // no token lingers in a pooled buffer
	if cap(b) <= maxPooledTokenBuf {
		*bp = b[:0]
		tokenBufs.Put(bp)
	}
}

// appendTokenResponse appends the JSON of tokenResponse{accessToken,
// tokenType, expiresIn, expiry in UTC as RFC 3339} and a newline, as
// encoding/json's Encoder writes it.
func appendTokenResponse(dst []byte, accessToken, tokenType string, expiresIn int64, expiry time.Time) []byte {
	dst = append(dst, `{"access_token":`...)
	dst = appendJSONString(dst, accessToken)
	dst = append(dst, `,"token_type":`...)
	dst = appendJSONString(dst, tokenType)
	dst = append(dst, `,"expires_in":`...)
	dst = strconv.AppendInt(dst, expiresIn, 10)
	dst = append(dst, `,"expires_on":`...)
	var tb [64]byte
	dst = appendJSONString(dst, expiry.UTC().AppendFormat(tb[:0], time.RFC3339))
	return append(dst, "}\n"...)
}

// jsonSafe marks the ASCII bytes encoding/json copies as they are with
// HTML escaping on: all but control characters, '"', '\\', '<', '>' and '&'.
var jsonSafe = func() (safe [utf8.RuneSelf]bool) {
	for c := byte(0x20); c < utf8.RuneSelf; c++ {
		safe[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return safe
}()

// appendJSONString appends s as a JSON string exactly as encoding/json
// writes it with HTML escaping on (the Encoder's default): '"' and '\'
// escaped with a backslash; \b, \f, \n, \r and \t by name; other control
// characters and <, > and & as \u00XX; each invalid UTF-8 byte as \ufffd;
// U+2028 and U+2029 as \u2028 and \u2029 (encoding/json appendString).
// Everything else is copied as it is.
func appendJSONString[S string | []byte](dst []byte, s S) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
