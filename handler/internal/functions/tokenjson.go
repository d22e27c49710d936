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

// writeToken answers 200 with tok as a tokenResponse, from the
// connection's tokenAnswer in answers (made when its token changed).
func writeToken(w http.ResponseWriter, answers *tokenAnswers, connection string, tok broker.AccessToken, now time.Time) {
	a := answers.answer(connection, tok)
	w = servingSecret(w) // the access token, past the answers' redaction (redact.go)
	h := w.Header()
	h["Cache-Control"] = noStore
	h["Pragma"] = noCache
	h["Content-Type"] = jsonContentType
	h["X-Content-Type-Options"] = noSniff
	w.WriteHeader(http.StatusOK)
	bp := tokenBufs.Get().(*[]byte)
	b := a.append((*bp)[:0], int64(tok.Expiry.Sub(now)/time.Second))
	// #nosec G705 -- JSON sent as application/json with nosniff, every string escaped as encoding/json escapes it (TestTokenResponseEncoding); a Writer must not retain b (io.Writer)
	_, _ = w.Write(b)
	clear(b) // no token lingers in a pooled buffer
	if cap(b) <= maxPooledTokenBuf {
		*bp = b[:0]
		tokenBufs.Put(bp)
	}
}

// appendTokenResponse appends the JSON of tokenResponse{accessToken,
// tokenType, expiresIn, expiry in UTC as RFC 3339} and a newline, as
// encoding/json's Encoder writes it.
func appendTokenResponse(dst []byte, accessToken, tokenType string, expiresIn int64, expiry time.Time) []byte {
	return newTokenAnswer(accessToken, tokenType, expiry).append(dst, expiresIn)
}

// tokenAnswer is a token's answer but for expires_in, which changes every
// second: whether the token needs escaping at all, and the JSON of its
// type and its expiry, worked out once per token instead of on every
// answer. Checking a 1.5 KB JWT byte by byte for escaping took about
// 0.9 µs, more than the rest of a cache hit (issue 20 §4). A token that
// needs none (JWTs and base64url tokens do not) is appended as it is, and
// is not copied here: token is the broker's string.
type tokenAnswer struct {
	token     string
	tokenType string
	expiry    time.Time
	plain     bool   // token has no byte that JSON escapes
	middle    []byte // ,"token_type":"…","expires_in":
	tail      []byte // ,"expires_on":"…"} and a newline
}

func newTokenAnswer(token, tokenType string, expiry time.Time) *tokenAnswer {
	a := &tokenAnswer{token: token, tokenType: tokenType, expiry: expiry, plain: plainJSON(token)}
	a.middle = appendJSONString([]byte(`,"token_type":`), tokenType)
	a.middle = append(a.middle, `,"expires_in":`...)
	var tb [64]byte
	a.tail = appendJSONString([]byte(`,"expires_on":`), expiry.UTC().AppendFormat(tb[:0], time.RFC3339))
	a.tail = append(a.tail, "}\n"...)
	return a
}

// of reports whether a is the answer of this token. The token is the
// broker's string, the same one on every hit, so comparing it costs a
// pointer compare (runtime memequal returns at once for equal pointers).
func (a *tokenAnswer) of(token, tokenType string, expiry time.Time) bool {
	return a.token == token && a.tokenType == tokenType && a.expiry.Equal(expiry)
}

// append appends the answer with expiresIn.
func (a *tokenAnswer) append(dst []byte, expiresIn int64) []byte {
	dst = append(dst, `{"access_token":`...)
	if a.plain {
		dst = append(dst, '"')
		dst = append(dst, a.token...)
		dst = append(dst, '"')
	} else {
		dst = appendJSONString(dst, a.token)
	}
	dst = append(dst, a.middle...)
	dst = strconv.AppendInt(dst, expiresIn, 10)
	return append(dst, a.tail...)
}

// tokenAnswers keeps each connection's tokenAnswer for its current token:
// one per connection name served since the start (no more than the names
// configured meanwhile), each about a hundred bytes and a reference to its
// token. A map under a lock rather than a sync.Map, whose any keys would
// box the name on every hit.
type tokenAnswers struct {
	mu sync.RWMutex
	m  map[string]*tokenAnswer
}

// answer returns tok's answer for connection, making it when the
// connection's token changed.
func (c *tokenAnswers) answer(connection string, tok broker.AccessToken) *tokenAnswer {
	value := tok.Value.Reveal()
	c.mu.RLock()
	a := c.m[connection]
	c.mu.RUnlock()
	if a != nil && a.of(value, tok.TokenType, tok.Expiry) {
		return a
	}
	a = newTokenAnswer(value, tok.TokenType, tok.Expiry)
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]*tokenAnswer{}
	}
	c.m[connection] = a
	c.mu.Unlock()
	return a
}

// plainJSON reports whether appendJSONString would copy s as it is.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || !jsonSafe[c] {
			return false
		}
	}
	return true
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
