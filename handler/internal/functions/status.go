package functions

import (
	"net/http"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// connectionsResponse is GET /api/connections.
type connectionsResponse struct {
	Connections []broker.ConnectionStatus `json:"connections"`
}

func handleConnections(b Broker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		encode(w, http.StatusOK, connectionsResponse{Connections: b.Status(r.Context())})
	})
}

func handleConnection(b Broker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("connection")
		st, ok := b.ConnectionStatus(r.Context(), name)
		if !ok {
			encodeError(w, unknownConnection(name))
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		encode(w, http.StatusOK, st)
	})
}

// handleForceRefresh is the operators' force-refresh: after storing a new
// refresh token or client secret, refresh now instead of waiting out a
// failure's cool-down. Its function (functions/force-refresh) takes the
// admin (master) key, not a function key: a pipeline has no business here.
func handleForceRefresh(b Broker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("connection")
		if _, ok := b.Connection(name); !ok {
			encodeError(w, unknownConnection(name))
			return
		}
		st, err := b.ForceRefresh(r.Context(), name)
		if err != nil {
			encodeError(w, err)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		encode(w, http.StatusOK, st)
	})
}

// unknownConnection is the 404 of the routes that take a connection name
// from the path, which may be anything: it is cut short in the answer.
func unknownConnection(name string) *broker.Error {
	return &broker.Error{
		Code:        broker.CodeNotFound,
		Connection:  truncate(name, 63),
		Message:     "no connection is named " + truncate(name, 63),
		Remediation: "GET /api/connections lists the configured connections.",
	}
}
