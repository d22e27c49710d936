package functions

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// Route deadlines. The server (package server) sets no write timeout of its
// own: one figure cannot fit both a token call, which must answer inside
// ADF's minute, and the timer's sweep, which may run for most of
// host.json's functionTimeout. Each route gets its own here instead.
const (
	// DefaultRequestTimeout bounds every HTTP route. ADF's Web activity
	// gives up after its httpRequestTimeout, "If not explicitly specified
	// defaults to 00:01:00" (max 00:10:00;
	// https://learn.microsoft.com/azure/data-factory/control-flow-web-activity,
	// "Type properties"); the 5 s left cover the front end and the host's
	// forwarding, so the pipeline reads our 503 with its remediation, not a
	// timeout. It is the budget config checks LOCK_WAIT plus
	// PROVIDER_TIMEOUT against, and well inside the 230 s an HTTP-triggered
	// function has before Azure Load Balancer's idle timeout drops the
	// request (https://learn.microsoft.com/azure/azure-functions/functions-scale#timeout,
	// note 1; MicrosoftDocs/azure-docs includes/functions-timeout-duration.md).
	DefaultRequestTimeout = 55 * time.Second
	// DefaultSweepTimeout bounds the timer invocation when the handler is
	// not told host.json's functionTimeout: Flex Consumption's default, 30
	// minutes (same page; ScriptJobHostOptionsSetup.DefaultFunctionTimeout
	// and ConfigureFunctionTimeout in Azure/azure-functions-host), less
	// SweepMargin.
	DefaultSweepTimeout = 30*time.Minute - SweepMargin
	// SweepMargin is what the timer keeps between its own deadline and
	// the host's functionTimeout, which the host counts from before it
	// posts the envelope: room for the answer to be written and read.
	SweepMargin = time.Minute
)

// withDeadlines gives each request the deadline of the route it goes to:
// the timer's SweepTimeout, RequestTimeout for every other route. The
// request's context ends at the deadline, so the broker stops waiting and
// the route answers (a token call a 503 with Retry-After, the sweep its
// summary); a refresh under way is not cut, it runs detached from callers
// (broker.Options.RefreshTimeout). No write deadline is set here: a
// client that stops reading is cut by the server's connection guard
// (server/connguard.go), which costs a request no change to the runtime's
// timers; net/http clears a connection's write deadline after every
// request, so one set here cost two.
//
// The context's timer is armed only when something waits for the context
// (requestDeadline): a token served from memory waits for nothing, and
// arming and stopping a timer (a context, its timer and its place among
// the request context's children: 4 allocations and two changes to the
// runtime's timer heap) was the largest part of the handler's own work on
// a cache hit (issue 20 §4). Every path that can wait (a refresh flight,
// the lock, the store, a request body) waits on Done, which arms it, so
// its deadline is the same as before.
//
// The timer is told by its path alone: the mux routes exactly the clean
// path timerRoute to it whatever the method (rejectUncleanPaths has
// answered any other spelling), and r.URL.Path is already unescaped, as
// the mux matches it. Asking the mux (ServeMux.Handler) would cost a second
// lookup on every request.
//
// The host router gives the routes under /api/ their deadline itself
// (hostRouter.serve), so that the token route can answer a token in memory
// before it makes the request's deadline and the request's copy that
// carries it (tokenRoute.serveParam): those were the 2 allocations left on
// a cache hit.
func withDeadlines(o Options, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := o.RequestTimeout
		if r.URL.Path == timerRoute {
			d = o.SweepTimeout
		}
		serveBefore(w, r, h, time.Now().Add(d))
	})
}

// serveBefore serves h with the request's context ending at deadline. A
// request that already has its deadline (limited) is served as it is.
func serveBefore(w http.ResponseWriter, r *http.Request, h http.Handler, deadline time.Time) {
	if limited(r) {
		h.ServeHTTP(w, r)
		return
	}
	ctx := &requestDeadline{parent: r.Context(), deadline: deadline}
	defer ctx.release()
	h.ServeHTTP(w, r.WithContext(ctx))
}

// limited reports whether r already carries a route's deadline: the mux's
// routes get it from withDeadlines, and its catch-all hands what no route
// matched to the host router, which must not make a second one.
func limited(r *http.Request) bool {
	_, ok := r.Context().(*requestDeadline)
	return ok
}

// requestDeadline is context.WithDeadline(parent, deadline) whose timer is
// armed the first time Done is called (or Err or Value once it matters):
// until then nothing can be waiting for it, so nothing needs waking. It
// reports its deadline from the start (Deadline), and after release it is
// cancelled, as the context of a request that has ended is.
type requestDeadline struct {
	parent   context.Context
	deadline time.Time

	mu       sync.Mutex
	armed    context.Context // context.WithDeadline(parent, deadline), once armed
	cancel   context.CancelFunc
	released bool
}

// arm returns the armed context, making it if it is not yet made.
func (c *requestDeadline) arm() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed == nil {
		c.armed, c.cancel = context.WithDeadline(c.parent, c.deadline)
		if c.released {
			c.cancel()
		}
	}
	return c.armed
}

// release ends the context with the request (context.Canceled, as the
// cancel function of context.WithDeadline does), stopping its timer if it
// was armed.
func (c *requestDeadline) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.released = true
	if c.cancel != nil {
		c.cancel()
	}
}

// Deadline is the earlier of the parent's deadline and the request's, as
// for context.WithDeadline.
func (c *requestDeadline) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

// Done arms the timer: whoever asks for Done is about to wait.
func (c *requestDeadline) Done() <-chan struct{} { return c.arm().Done() }

// Err is nil while the parent is alive, the deadline is ahead and the
// request has not ended; otherwise it is the armed context's error, so
// that it never disagrees with Done.
func (c *requestDeadline) Err() error {
	c.mu.Lock()
	armed, released := c.armed, c.released
	c.mu.Unlock()
	if armed == nil && !released && c.parent.Err() == nil && time.Now().Before(c.deadline) {
		return nil
	}
	return c.arm().Err()
}

// Value is the parent's value, but once the context may have ended (its
// deadline passed, or the request ended) the armed context's: context.Cause
// finds its cause through Value.
func (c *requestDeadline) Value(key any) any {
	c.mu.Lock()
	armed, released := c.armed, c.released
	c.mu.Unlock()
	if armed == nil && !released && time.Now().Before(c.deadline) {
		return c.parent.Value(key)
	}
	return c.arm().Value(key)
}
