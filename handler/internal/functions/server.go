// Package functions is the Azure Functions surface of the handler: the HTTP
// routes the host passes on, and the timer invocation envelope it posts to
// /refresh.
//
// host.json turns on both ways the host has of passing an HTTP request on
// unchanged. Hosts that have enableProxyingHttpRequest (custom handlers on
// Flex Consumption; DefaultHttpWorkerService.InvokeAsync checks it first)
// proxy it with YARP; older hosts ignore that key and use
// enableForwardingHttpRequest, which rebuilds the request
// (HttpRequestExtensions.ToHttpRequestMessage). Either way the request
// arrives with its original path (/api/token/xero, in the case and with the
// trailing slash the client sent), so the routes here are the public ones,
// matched as the host matches them (hostRouter). What differs:
//
//   - Query: proxying passes the query string as sent; forwarding rebuilds
//     it from the parsed collection, a repeated key joined into one
//     comma-separated value. queryValue refuses both forms of a repeat.
//   - Body: proxying streams it (chunked too); forwarding copies it only
//     when it has a Content-Length, so a chunked body is lost (HTTP/2) or
//     the invocation fails (HTTP/1.1: HttpClient refuses
//     Transfer-Encoding: chunked without content). A POST that needs a
//     body and has none is answered 400 (decodeMinValidity).
//   - Host: proxying sends Host 127.0.0.1:<port> and the public host in
//     X-Forwarded-Host (YARP HttpTransformer.Default); forwarding copies
//     the original Host. callbackURL reads whichever applies.
//
// The timer is not an HTTP function: the host posts a JSON envelope to
// /<function name> and expects one back.
package functions

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/redact"
)

// Broker is what the HTTP surface needs of the broker.
type Broker interface {
	Token(ctx context.Context, connection string, minValidity time.Duration) (broker.AccessToken, error)
	Connection(name string) (broker.Connection, bool)
	Status(ctx context.Context) []broker.ConnectionStatus
	ConnectionStatus(ctx context.Context, name string) (broker.ConnectionStatus, bool)
	Sweep(ctx context.Context, horizon time.Duration) []broker.SweepResult
	ForceRefresh(ctx context.Context, name string) (broker.ConnectionStatus, error)
}

// Options configure the server.
type Options struct {
	Logger *slog.Logger
	// AuthEnabled is true when App Service authentication is on
	// (WEBSITE_AUTH_ENABLED) in front of the Functions host. Only then is
	// X-MS-CLIENT-PRINCIPAL-ID read, and trusted: the platform strips
	// copies sent by clients. When false, the X-MS-CLIENT-PRINCIPAL-*
	// headers are ignored and connections with allowedCallers answer 403.
	AuthEnabled bool
	// StatusPageGroup and TokenCallers are STATUS_PAGE_GROUP and
	// TOKEN_CALLERS: the group whose signed-in members may use the
	// operator status page, and the principals the token route then
	// serves (operator.go).
	StatusPageGroup string
	TokenCallers    []string
	// APIKey, when set, is the key every request must present in the
	// x-functions-key header or the code query parameter, as Azure
	// Functions takes function keys; only the readiness probe (GET /) and
	// the consent callback are served without it. Standalone mode sets it;
	// in Functions mode the host checks the keys and it stays empty.
	APIKey broker.Secret
	// SweepHorizon is how far ahead the timer refreshes: tokens expiring
	// within it are refreshed. It should exceed the timer's period.
	SweepHorizon time.Duration
	// MaxBodyBytes bounds request bodies. Default 64 KiB.
	MaxBodyBytes int64
	// RequestTimeout is the deadline of every HTTP route (deadline.go).
	// Default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// SweepTimeout is the deadline of the timer invocation: host.json's
	// functionTimeout less SweepMargin. Default DefaultSweepTimeout.
	SweepTimeout time.Duration
	// Now is the clock for expires_in. Default time.Now.
	Now func() time.Time
	// ForwardedByHost is true in Functions mode, where the only peer is
	// the Functions host. Then a request whose Host is a loopback address
	// was proxied, and its X-Forwarded-Host, which the host's YARP
	// forwarder sets (replacing any a client sent), is the app's public
	// host name: the consent flow builds its redirect URI from it.
	ForwardedByHost bool
	// ConsentKey is the key material the consent flow derives its signing
	// keys from (states, start tickets): the write-ahead key
	// (broker.StoredKey), shared by every instance. Nil means a random key
	// for this process, enough for one instance.
	ConsentKey broker.KeySource
	// LoopbackPort, when not zero, says the server listens on a loopback
	// address at this port in standalone mode: a request must then name a
	// loopback host at this port (guardLocal).
	LoopbackPort int
	// ConsentLocker is the locker every instance shares (the broker's):
	// a consent link is claimed under it, once across instances. Nil
	// means once in this process.
	ConsentLocker broker.Locker
	// AssertionSigner and FederatedToken make the client assertion of a
	// private_key_jwt or managedIdentity connection's code exchange, as
	// the broker's grant makes its refreshes' (backends.Wired); nil when
	// no connection needs them.
	AssertionSigner oauth.Signer
	FederatedToken  oauth.FederatedToken
	// statuses is the status cache the status and consent routes share.
	statuses *statusCache
	// Redactor, when set, has every secret the process knows registered;
	// every answer but the token route's success passes through it
	// (redact.go).
	Redactor *redact.Redactor
	// Metrics, when set, is served at GET /metrics (standalone mode).
	Metrics PrometheusWriter
}

// NewServer returns the handler for every route.
func NewServer(b Broker, o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SweepHorizon <= 0 {
		o.SweepHorizon = 10 * time.Minute
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 64 << 10
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.SweepTimeout <= 0 {
		o.SweepTimeout = DefaultSweepTimeout
	}
	mux := http.NewServeMux()
	functions := addRoutes(mux, b, o)
	// The mux's routes get their deadline here, the functions' from the
	// host router (deadline.go).
	h := rejectUncleanPaths(functionsFirst(functions, withDeadlines(o, mux)))
	if !o.APIKey.IsZero() {
		// Outermost but for the log: an unauthenticated caller learns
		// nothing from the routes, not even which paths exist.
		h = requireAPIKey(o.APIKey, h)
	}
	if !o.ForwardedByHost {
		h = guardLocal(o.LoopbackPort, h) // standalone: keep web pages out (guard.go)
	}
	return answering(o.Logger, o.Now, o.Redactor, h)
}

// rejectUncleanPaths answers a path with ".", ".." or empty segments with a
// JSON 400. The mux would redirect it to the clean path with an HTML body,
// which a pipeline cannot read, and no caller means such a path.
func rejectUncleanPaths(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; !plainPath(p) && !cleanPath(p) {
			encode(w, http.StatusBadRequest, errorBody{
				Error:       string(broker.CodeBadRequest),
				Message:     "the path has \".\", \"..\" or empty segments",
				Remediation: "Call /api/token/{connection} with the connection's name as it is in the connections file.",
			})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// cleanPath reports whether p is empty or path.Clean leaves it as it is,
// but for one trailing slash.
func cleanPath(p string) bool {
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	return p == "" || clean == p
}

// plainPath reports, without path.Clean's copy and compare, whether p is
// certainly clean: rooted, with no empty segment ("//") and no segment
// starting with a dot, so none that is "." or "..". Those are all that
// path.Clean changes in a rooted path but a trailing slash, which
// cleanPath keeps. Any other path is left to cleanPath.
func plainPath(p string) bool {
	if len(p) == 0 || p[0] != '/' {
		return false
	}
	for i := 0; i < len(p)-1; i++ {
		if p[i] == '/' && (p[i+1] == '/' || p[i+1] == '.') {
			return false
		}
	}
	return true
}

// addRoutes is the whole HTTP surface in one place. The functions' routes
// go through hostRouter, which matches as the Functions host does; the
// readiness probe and the timer are called by the host itself, at exactly
// these paths. It returns the host router, which serves every path but
// those two.
func addRoutes(mux *http.ServeMux, b Broker, o Options) http.Handler {
	functions := newHostRouter(handleNotFound(), functionRoutes(b, o)...)
	functions.timeout = o.RequestTimeout
	mux.Handle("GET /{$}", handleReady())
	mux.Handle(timerRoute, methods(handleTimer(b, o), http.MethodPost))
	if o.Metrics != nil {
		mux.Handle("/metrics", methods(handleMetrics(o.Metrics), http.MethodGet)) // metrics.go
	}
	mux.Handle("/", functions)
	return functions
}

// functionsFirst hands a path under /api/ (routePrefix, in any case)
// straight to the host router, where the mux would send it anyway: no
// pattern of the mux but "/" matches such a path, a request that reaches
// here has a clean path (rejectUncleanPaths), and no path under /api/
// makes the mux redirect (it redirects only to add a trailing slash that
// an exact pattern needs). This saves the mux's lookup, and its
// allocations, on every token request. mux is the mux within its
// deadlines (withDeadlines); the host router sets its own.
func functionsFirst(functions, mux http.Handler) http.Handler {
	const prefix = "/" + routePrefix + "/"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; len(p) >= len(prefix) && equalFoldASCII(p[:len(prefix)], prefix) {
			functions.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// functionRoutes are the HTTP functions, one per folder in functions/.
func functionRoutes(b Broker, o Options) []hostRoute {
	if o.statuses == nil {
		o.statuses = &statusCache{b: b, now: o.Now}
	}
	cr := newConsentRoutes(b, o)
	return slices.Concat([]hostRoute{
		{function: "token", template: "token/{connection}", methods: []string{http.MethodGet, http.MethodPost}, handler: tokenCallersOnly(o, handleToken(b, o))}, // operator.go
		{function: "connections", template: "connections", methods: []string{http.MethodGet}, handler: handleConnections(b, o)},
		{function: "connection", template: "connections/{connection}", methods: []string{http.MethodGet}, handler: handleConnection(b, o)},
		{function: "force-refresh", template: "connections/{connection}/refresh", methods: []string{http.MethodPost}, handler: handleForceRefresh(b, o)},
	}, cr.hostRoutes(), newStatusPage(b, o, cr).hostRoutes()) // consent.go, statuspage.go
}

// handleReady answers the host's readiness probe (it polls GET / until any
// response arrives).
func handleReady() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		encode(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

func handleNotFound() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		encode(w, http.StatusNotFound, errorBody{
			Error:       "not_found",
			Message:     "no such route: " + r.Method + " " + r.URL.Path,
			Remediation: "Tokens are at /api/token/{connection}; status is at /api/connections.",
		})
	})
}

// methods answers 405 with an Allow header, in JSON like every other error,
// for methods a route does not take.
func methods(h http.Handler, allowed ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slices.Contains(allowed, r.Method) {
			h.ServeHTTP(w, r)
			return
		}
		methodNotAllowed(w, r, allowed)
	})
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allowed []string) {
	allow := strings.Join(allowed, ", ")
	w.Header().Set("Allow", allow)
	encode(w, http.StatusMethodNotAllowed, errorBody{
		Error:       "method_not_allowed",
		Message:     r.Method + " is not allowed on " + r.URL.Path,
		Remediation: "Use " + allow + ".",
	})
}

// answerWriter is the writer every request is answered through
// (answering): it records the status for the request's log line, keeps
// when the request arrived (requestTime), and redacts each body it writes
// (redact.go) unless the route serves a secret on purpose (servingSecret).
// One writer for the three, where a recorder and a redacting writer wrapped
// each other: one pooled object and one layer less on every request.
type answerWriter struct {
	http.ResponseWriter
	status  int
	arrived time.Time
	red     *redact.Redactor // nil: nothing to redact
	secret  bool             // servingSecret was called
}

func (w *answerWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *answerWriter) Write(p []byte) (int, error) {
	if w.red == nil || w.secret {
		return w.ResponseWriter.Write(p)
	}
	return redactedWrite(w.ResponseWriter, w.red, p)
}

// Unwrap lets http.ResponseController reach the writer beneath.
func (w *answerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var answerWriters = sync.Pool{New: func() any { return new(answerWriter) }}

// requestTime is when the request written to by w arrived, as answering
// read it from Options.Now, or now() for a writer it did not wrap: the
// token route judges and answers a token in memory by it, one clock read
// for the whole request.
func requestTime(w http.ResponseWriter, now func() time.Time) time.Time {
	for {
		switch t := w.(type) {
		case *answerWriter:
			return t.arrived
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return now()
		}
	}
}

// answering serves h through an answerWriter and logs one line per
// request. The query string is left out: it may carry a function key
// (?code=).
//
// The line is built only when the logger takes its level: a successful
// request logs at DEBUG, which LOG_LEVEL leaves off by default, and
// building it anyway (reading the header, boxing the attributes) was work
// on every token request for a line nobody reads.
func answering(log *slog.Logger, now func() time.Time, red *redact.Redactor, h http.Handler) http.Handler {
	// Whether a successful request is logged is asked once: the logger's
	// level is fixed when the server is made (LOG_LEVEL, read at start),
	// and asking it walks three handlers on every request.
	logsSuccess := log.Enabled(context.Background(), slog.LevelDebug)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := now()
		// Pooled: a handler does not keep its writer once it returns, and
		// the token route's cache hit then allocates nothing for it
		// (hitpath_test.go).
		aw := answerWriters.Get().(*answerWriter)
		*aw = answerWriter{ResponseWriter: w, status: http.StatusOK, arrived: start, red: red}
		h.ServeHTTP(aw, r)
		status := aw.status
		*aw = answerWriter{}
		answerWriters.Put(aw)
		level := slog.LevelDebug
		if status >= 400 {
			level = slog.LevelWarn
		} else if !logsSuccess {
			return
		}
		if !log.Enabled(r.Context(), level) {
			return
		}
		log.LogAttrs(r.Context(), level, "request", slog.String("event", "http.request"),
			slog.String("method", r.Method), slog.String("path", loggedPath(r.URL.Path)),
			slog.Int("status", status), slog.Duration("duration", now().Sub(start)),
			slog.String("invocation_id", r.Header.Get(invocationIDHeader)))
	})
}

// invocationIDHeader is the header the Functions host puts the invocation
// id in, as http.Header keeps it (canonical, so Get need not allocate to
// canonicalize it).
const invocationIDHeader = "X-Azure-Functions-Invocationid"

// maxLoggedPath bounds the path in the request log. A path may be as long
// as the server takes (tens of kilobytes), and a 401 is logged for anyone
// who sends one; every real route's path is far shorter.
const maxLoggedPath = 256

func loggedPath(p string) string {
	if len(p) <= maxLoggedPath {
		return p
	}
	return truncate(p, maxLoggedPath)
}

// encode writes v as JSON with the given status.
func encode(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if _, ok := v.(tokenResponse); ok {
		w = servingSecret(w) // the access token served, on purpose
	}
	_ = json.NewEncoder(w).Encode(v)
}
