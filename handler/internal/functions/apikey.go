package functions

import (
	"net/http"
	"strings"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// keyHeader and keyQuery are where Azure Functions takes a function key;
// standalone mode takes its key in the same places, so a pipeline calls
// either the same way.
const (
	keyHeader = "x-functions-key"
	keyQuery  = "code"
)

// requireAPIKey answers 401 to any request that does not present key,
// except those anonymous callers must be able to make: the readiness probe
// (GET /) and the consent callback, which the provider's redirect reaches
// without a key and which authenticates its own request (state, cookie and
// PKCE). The header is used when present, otherwise the query parameter, as
// the Functions host does.
//
// The comparison takes the same time whatever the guess holds
// (keyMatches), so the time taken tells a caller nothing of how much of a
// guess was right. No WWW-Authenticate is sent: the key is not an
// HTTP authentication scheme, and the Functions host answers a missing key
// without one too.
func requireAPIKey(key broker.Secret, h http.Handler) http.Handler {
	want := key.Reveal()
	// Canonical once here, so that Get need not canonicalize (and
	// allocate) on every request.
	header := http.CanonicalHeaderKey(keyHeader)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isAnonymous(r) {
			h.ServeHTTP(w, r)
			return
		}
		got := r.Header.Get(header)
		if got == "" {
			// The host reads ?code= from its query collection, where a
			// repeated key is one comma-joined value: no valid key.
			got = strings.Join(r.URL.Query()[keyQuery], ",")
		}
		if got != "" && keyMatches(got, want) {
			h.ServeHTTP(w, r)
			return
		}
		msg := "this handler requires a key, and the request has none"
		if got != "" {
			msg = "the key the request presents is not this handler's key"
		}
		w.Header().Set("Cache-Control", "no-store")
		encode(w, http.StatusUnauthorized, errorBody{
			Error:   "unauthorized",
			Message: msg,
			Remediation: "Send the key held by the secret that the handler's API_KEY_SECRET setting names, in the " +
				keyHeader + " header (or as ?" + keyQuery + "=), as for an Azure Functions function key.",
		})
	})
}

// isAnonymous reports whether r is one of the requests served without a
// key: the readiness probe, and the consent routes (the callback checks
// its state, the start its consent link). Only "/" exactly, and paths
// under /api/consent/, count: the host router sends such a path to the
// consent functions or to none (no other route starts with consent), and
// a dot segment is refused further in (rejectUncleanPaths).
func isAnonymous(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return r.URL.Path == "/" || isConsentPath(r.URL.Path)
	case http.MethodPost:
		// The consent start's button: the link's ticket is its key.
		return isConsentPath(r.URL.Path)
	}
	return false
}

// keyMatches reports whether got is key, comparing every byte of key
// whatever got holds: the time depends on len(key) and on the length of
// the guess, never on which of its bytes are right. It replaces a SHA-256
// of each presented key (about 0.2 µs, a third of a cache hit's work in
// process; issue 20 §4). len(key) is the one thing timing can tell, and
// it is no secret worth keeping: the README asks for at least 32
// printable characters, and a key that long is not guessed byte by byte.
func keyMatches(got, key string) bool {
	diff := len(got) ^ len(key)
	for i := 0; i < len(key); i++ {
		var c byte
		if i < len(got) {
			c = got[i]
		}
		diff |= int(c ^ key[i])
	}
	return diff == 0
}
