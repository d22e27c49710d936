// Package functions is the Azure Functions surface of the handler: the HTTP
// routes the host forwards (enableForwardingHttpRequest), and the timer
// invocation envelope it posts to /refresh.
//
// Forwarded requests arrive with their original path (/api/token/xero), so
// the routes here are the public ones. The timer is not an HTTP function:
// the host posts a JSON envelope to /<function name> and expects one back.
package functions

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
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
	// Now is the clock for expires_in. Default time.Now.
	Now func() time.Time
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
	mux := http.NewServeMux()
	addRoutes(mux, b, o)
	h := rejectUncleanPaths(mux)
	if !o.APIKey.IsZero() {
		// Outermost but for the log: an unauthenticated caller learns
		// nothing from the routes, not even which paths exist.
		h = requireAPIKey(o.APIKey, h)
	}
	return logRequests(o.Logger, h)
}

// rejectUncleanPaths answers a path with ".", ".." or empty segments with a
// JSON 400. The mux would redirect it to the clean path with an HTML body,
// which a pipeline cannot read, and no caller means such a path.
func rejectUncleanPaths(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		clean := path.Clean(p)
		if strings.HasSuffix(p, "/") && clean != "/" {
			clean += "/"
		}
		if p != "" && clean != p {
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

// addRoutes is the whole HTTP surface in one place.
func addRoutes(mux *http.ServeMux, b Broker, o Options) {
	mux.Handle("GET /{$}", handleReady())
	mux.Handle("/api/token/{connection}", methods(handleToken(b, o), http.MethodGet, http.MethodPost))
	mux.Handle("/api/connections", methods(handleConnections(b), http.MethodGet))
	mux.Handle("/api/connections/{connection}", methods(handleConnection(b), http.MethodGet))
	mux.Handle("/api/connections/{connection}/refresh", methods(handleForceRefresh(b), http.MethodPost))
	mux.Handle("/refresh", methods(handleTimer(b, o), http.MethodPost))
	addConsentRoutes(mux, b, o) // GET /api/consent/{connection} (admin key) and /api/consent/callback (consent.go)
	mux.Handle("/", handleNotFound())
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
		for _, m := range allowed {
			if r.Method == m {
				h.ServeHTTP(w, r)
				return
			}
		}
		allow := ""
		for i, m := range allowed {
			if i > 0 {
				allow += ", "
			}
			allow += m
		}
		w.Header().Set("Allow", allow)
		encode(w, http.StatusMethodNotAllowed, errorBody{
			Error:       "method_not_allowed",
			Message:     r.Method + " is not allowed on " + r.URL.Path,
			Remediation: "Use " + allow + ".",
		})
	})
}

// statusRecorder captures the status for the request log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// logRequests logs one line per request. The query string is left out: it
// may carry a function key (?code=).
func logRequests(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		level := slog.LevelDebug
		if rec.status >= 400 {
			level = slog.LevelWarn
		}
		log.LogAttrs(r.Context(), level, "request", slog.String("event", "http.request"),
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", rec.status), slog.Duration("duration", time.Since(start)),
			slog.String("invocation_id", r.Header.Get("X-Azure-Functions-InvocationId")))
	})
}

// encode writes v as JSON with the given status.
func encode(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
