package functions

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// connectionsResponse is GET /api/connections.
type connectionsResponse struct {
	Connections []broker.ConnectionStatus `json:"connections"`
}

// statusTTL is how long GET /api/connections serves one reading of the
// status. Each reading costs store reads for every connection; a caller
// polling the route, or many callers at once, cost one reading per
// statusTTL instead.
const statusTTL = 5 * time.Second

// statusCache holds the last reading of every connection's status. Callers
// that arrive while a reading is under way wait for it rather than start
// their own.
type statusCache struct {
	b   Broker
	now func() time.Time

	mu    sync.Mutex
	at    time.Time
	list  []broker.ConnectionStatus
	valid bool
}

func (c *statusCache) get(ctx context.Context) []broker.ConnectionStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.valid && now.Sub(c.at) < statusTTL && !now.Before(c.at) {
		return c.list
	}
	c.list, c.at, c.valid = c.b.Status(ctx), now, true
	return c.list
}

// invalidate drops the reading: the next caller reads anew (after a
// consent, whose new state must show at once).
func (c *statusCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.valid = false
}

// handleConnections lists the status of the connections the caller may
// use: those whose allowedCallers admit it (authorize), as on the token
// route, so a caller learns nothing of the others, not even their names.
func handleConnections(b Broker, o Options) http.Handler {
	cache := o.statuses
	if cache == nil {
		cache = &statusCache{b: b, now: o.Now}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		all := cache.get(r.Context())
		visible := make([]broker.ConnectionStatus, 0, len(all))
		for _, st := range all {
			if c, ok := b.Connection(st.Name); ok && authorize(c, r, o.AuthEnabled) == nil {
				visible = append(visible, st)
			}
		}
		w.Header().Set("Cache-Control", "no-store")
		encode(w, http.StatusOK, connectionsResponse{Connections: visible})
	})
}

// connectionFor is the connection a route names in its path, once the
// caller may use it: 404 for no such connection, and the token route's 403
// (authorize) for one whose allowedCallers do not admit the caller.
func connectionFor(b Broker, r *http.Request, o Options) (broker.Connection, *broker.Error) {
	name := r.PathValue("connection")
	c, ok := b.Connection(name)
	if !ok {
		return broker.Connection{}, unknownConnection(name)
	}
	if err := authorize(c, r, o.AuthEnabled); err != nil {
		return broker.Connection{}, err
	}
	return c, nil
}

func handleConnection(b Broker, o Options) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := connectionFor(b, r, o)
		if err != nil {
			encodeError(w, err)
			return
		}
		st, ok := b.ConnectionStatus(r.Context(), c.Name)
		if !ok {
			encodeError(w, unknownConnection(c.Name))
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
func handleForceRefresh(b Broker, o Options) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := connectionFor(b, r, o)
		if err != nil {
			encodeError(w, err)
			return
		}
		st, ferr := b.ForceRefresh(r.Context(), c.Name)
		if ferr != nil {
			encodeError(w, ferr)
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
