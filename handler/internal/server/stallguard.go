package server

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Stalled writes. A client that stops reading (or sends request after
// request without reading the answers) fills the socket's buffers, and the
// server's next write to it blocks. Without a limit that write blocks
// forever, holding its goroutine and connection.
//
// The usual limit is a write deadline on every request (http.Server's
// WriteTimeout, or one set by each route through
// http.ResponseController.SetWriteDeadline). net/http clears the
// connection's write deadline after every request (conn.serve, after
// finishRequest: c.rwc.SetWriteDeadline(time.Time{}); Go 1.26
// src/net/http/server.go), so such a deadline costs two changes of the
// runtime's timer heap per request, set and cleared, plus a clock read:
// the largest single cost the handler added to a token served from memory
// (issue 20 §4, docs/performance.md).
//
// stallGuard limits what matters instead, how long one write may block,
// at three atomic operations per write: each write to a connection records
// the tick it began, and once a tick the guard closes every connection
// whose write has been under way for stallLimit ticks or more. Closing the
// connection makes the blocked Write return an error (net.Conn: "any
// blocked Read or Write operations will be unblocked and return errors"),
// and net/http then drops the connection. A route that works for a long
// time without writing (the timer's sweep) is not limited by it: each
// route's own deadline bounds that (functions/deadline.go).
var (
	// stallTick is the guard's resolution; a variable so that tests need
	// not wait a minute.
	stallTick = time.Second
	// stallLimit is how many ticks a write may block: a client that has
	// read nothing for a minute is gone or hostile. A caller of the token
	// route (ADF) reads its answer at once; the host reads every answer
	// it forwards.
	stallLimit int64 = 60
)

// stallGuard watches the connections of one listener.
type stallGuard struct {
	log   *slog.Logger
	tick  time.Duration // stallTick when the guard was made
	limit int64         // stallLimit then
	ticks atomic.Int64  // ticks since the guard started

	mu    sync.Mutex
	conns map[*guardedConn]struct{}
}

// guardListener returns ln with its connections watched for stalled
// writes until ctx ends.
func guardListener(ctx context.Context, ln net.Listener, log *slog.Logger) net.Listener {
	g := &stallGuard{log: log, tick: stallTick, limit: stallLimit, conns: map[*guardedConn]struct{}{}}
	go g.run(ctx)
	return &guardedListener{Listener: ln, g: g}
}

// run advances the ticks and closes stalled connections until ctx ends.
func (g *stallGuard) run(ctx context.Context) {
	t := time.NewTicker(g.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.closeStalled(g.ticks.Add(1))
		}
	}
}

// closeStalled closes every connection whose write began limit or more
// ticks before now.
func (g *stallGuard) closeStalled(now int64) {
	var stalled []*guardedConn
	g.mu.Lock()
	for c := range g.conns {
		if began := c.writing.Load() - 1; began >= 0 && now-began >= g.limit {
			stalled = append(stalled, c)
		}
	}
	g.mu.Unlock()
	for _, c := range stalled {
		g.log.Warn("a client stopped reading its answer; its connection was closed", "event", "http.write_stalled",
			"remote", c.RemoteAddr().String(), "blocked", (time.Duration(g.limit) * g.tick).String())
		_ = c.Close()
	}
}

// guardedListener hands out watched connections.
type guardedListener struct {
	net.Listener
	g *stallGuard
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

// guardedConn is a connection whose writes the guard watches. Writes are
// assumed not to overlap, as net/http's to one connection do not.
type guardedConn struct {
	net.Conn
	g *stallGuard
	// writing is the tick the write under way began, plus one; 0 when
	// no write is under way.
	writing atomic.Int64
	closed  atomic.Bool
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
