package server

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The connection guard bounds what a client can hold: a write it stopped
// reading, a keep-alive connection it left idle, a body it sends slowly.
// http.Server bounds these with deadlines on the connection (WriteTimeout,
// IdleTimeout, ReadTimeout), and net/http moves those deadlines on every
// request: it clears the write deadline after each request and sets the
// read deadline for the idle wait, the next request's headers and its body
// (conn.serve and conn.readRequest, Go 1.26 src/net/http/server.go). Each
// move is a clock read or two (SetReadDeadline takes time.Until) and a
// change to the runtime's timer heap. On a token served from memory those
// were the largest cost left between the handler and a bare net/http
// server: without ReadTimeout and IdleTimeout the handler went from 0.93×
// to 0.98× a bare server's requests per second (issue 20 §4,
// docs/performance.md). So the server keeps only ReadHeaderTimeout, which
// a bare server has too, and the guard does the rest:
//
//   - A write that blocks (the client stopped reading, or sends request
//     after request without reading the answers, until the socket's
//     buffers fill) is cut after writeStallTicks: each write records the
//     tick it began, three atomic operations.
//   - A keep-alive connection idle between requests is closed after
//     idleTicks, told by http.Server's ConnState hook (StateIdle, then
//     StateActive when the next request is read): an atomic store each.
//   - A request's body must arrive within bodyReadTimeout
//     (withBodyDeadline): only a request that has a body pays a deadline.
//
// Once a tick the guard closes every connection past its limit. Closing a
// connection makes its blocked Read or Write return an error (net.Conn:
// "any blocked Read or Write operations will be unblocked and return
// errors"), and net/http then drops it. A route that works for a long time
// without writing (the timer's sweep) is not limited by the guard: each
// route's own deadline bounds that (functions/deadline.go).
var (
	// guardTick is the guard's resolution; a variable so that tests need
	// not wait minutes.
	guardTick = time.Second
	// writeStallTicks is how long a write may block: a client that has
	// read nothing for a minute is gone or hostile.
	writeStallTicks int64 = 60
	// idleTicks is how long a keep-alive connection may wait for its next
	// request, as IdleTimeout did.
	idleTicks int64 = 120
	// bodyReadTimeout bounds reading a request's body, as ReadTimeout did
	// (bodies are at most 64 KiB: functions.Options.MaxBodyBytes).
	bodyReadTimeout = 30 * time.Second
)

// connGuard watches the connections of one listener.
type connGuard struct {
	log              *slog.Logger
	tick             time.Duration // guardTick when the guard was made
	writeStall, idle int64         // writeStallTicks and idleTicks then
	ticks            atomic.Int64  // ticks since the guard started

	mu    sync.Mutex
	conns map[*guardedConn]struct{}
}

// guard serves srv's connections from ln under a connection guard until ctx
// ends: srv reports each connection's state to it (ConnState), and serves
// from a listener whose connections it watches.
func guard(ctx context.Context, srv *http.Server, ln net.Listener, log *slog.Logger) net.Listener {
	g := &connGuard{log: log, tick: guardTick, writeStall: writeStallTicks, idle: idleTicks, conns: map[*guardedConn]struct{}{}}
	srv.ConnState = g.connState
	go g.run(ctx)
	return &guardedListener{Listener: ln, g: g}
}

// run advances the ticks and closes connections past their limits until
// ctx ends.
func (g *connGuard) run(ctx context.Context) {
	t := time.NewTicker(g.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.closeOverdue(g.ticks.Add(1))
		}
	}
}

// closeOverdue closes every connection whose write began writeStall or
// more ticks before now, or that has been idle for idle ticks or more.
func (g *connGuard) closeOverdue(now int64) {
	var stalled, idle []*guardedConn
	g.mu.Lock()
	for c := range g.conns {
		if began := c.writing.Load() - 1; began >= 0 && now-began >= g.writeStall {
			stalled = append(stalled, c)
		} else if since := c.idle.Load() - 1; since >= 0 && now-since >= g.idle {
			idle = append(idle, c)
		}
	}
	g.mu.Unlock()
	for _, c := range stalled {
		g.log.Warn("a client stopped reading its answer; its connection was closed", "event", "http.write_stalled",
			"remote", c.RemoteAddr().String(), "blocked", (time.Duration(g.writeStall) * g.tick).String())
		_ = c.Close()
	}
	for _, c := range idle {
		_ = c.Close() // as IdleTimeout would: nothing to report
	}
}

// connState is http.Server's ConnState hook: it notes when a connection
// starts waiting for its next request and when that request arrives.
func (g *connGuard) connState(c net.Conn, state http.ConnState) {
	gc, ok := c.(*guardedConn)
	if !ok {
		return
	}
	switch state {
	case http.StateIdle:
		gc.idle.Store(g.ticks.Load() + 1)
	case http.StateActive:
		gc.idle.Store(0)
	}
}

// guardedListener hands out watched connections.
type guardedListener struct {
	net.Listener
	g *connGuard
}

func (l *guardedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	gc := &guardedConn{Conn: c, g: l.g}
	l.g.mu.Lock()
	l.g.conns[gc] = struct{}{}
	l.g.mu.Unlock()
	return gc, nil
}

// guardedConn is a connection the guard watches. Writes are assumed not to
// overlap, as net/http's to one connection do not.
type guardedConn struct {
	net.Conn
	g *connGuard
	// writing is the tick the write under way began, plus one; 0 when
	// no write is under way.
	writing atomic.Int64
	// idle is the tick the connection became idle, plus one; 0 while a
	// request is being served (or before the first).
	idle   atomic.Int64
	closed atomic.Bool
}

func (c *guardedConn) Write(p []byte) (int, error) {
	c.writing.Store(c.g.ticks.Load() + 1)
	n, err := c.Conn.Write(p)
	c.writing.Store(0)
	return n, err
}

// Close closes the connection and stops watching it. Both the guard and
// net/http may close it; the second Close does nothing but return the
// connection's error.
func (c *guardedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.g.mu.Lock()
		delete(c.g.conns, c)
		c.g.mu.Unlock()
	}
	return c.Conn.Close()
}

// CloseWrite is the connection's, which net/http uses to end a connection
// gracefully after a request whose body it did not read
// (conn.closeWriteAndWait, through its closeWriter interface): a wrapper
// without it would hide it.
func (c *guardedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// withBodyDeadline gives a request that has a body bodyReadTimeout to
// send it, as http.Server's ReadTimeout did for every request. A request
// without one (net/http hands it http.NoBody) sets nothing. Once the body
// is read, net/http clears the read deadline itself for its background
// read (connReader.startBackgroundRead), and sets its own while the
// connection waits for the next request.
func withBodyDeadline(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != http.NoBody && r.Body != nil {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyReadTimeout))
		}
		h.ServeHTTP(w, r)
	})
}
