package broker

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// running counts the work Close waits for: every flight, and the sweep's
// work under a lock outside flights (moving write-ahead records into the
// store, keeping standby grants alive). Starting and counting are one
// step under one mutex, so nothing starts after Close has looked.
type running struct {
	mu      sync.Mutex
	closing bool
	n       int
	idle    chan struct{} // closed once closing is set and n is zero
}

// enter counts one more piece of work, unless Close has begun: it then
// reports false and the work must not start.
func (r *running) enter() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false
	}
	r.n++
	return true
}

// leave ends a piece of work that enter let start.
func (r *running) leave() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n--
	if r.n == 0 && r.closing {
		close(r.idle)
	}
}

// close refuses new work and returns a channel closed once the work under
// way has ended.
func (r *running) close() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.idle == nil {
		r.idle = make(chan struct{})
	}
	if !r.closing {
		r.closing = true
		if r.n == 0 {
			close(r.idle)
		}
	}
	return r.idle
}

func (r *running) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// CloseError reports that Close gave up waiting: refreshes it had let
// start were still under way when its context ended.
type CloseError struct {
	// Running is how many were still under way.
	Running int
	// Err is the context's error.
	Err error
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("broker: %d refreshes still under way when Close stopped waiting: %v", e.Running, e.Err)
}

func (e *CloseError) Unwrap() error { return e.Err }

// Close refuses new refreshes and waits until every refresh it let start
// has ended (its store writes done and its lock released), or until ctx is
// done: it then returns a *CloseError saying how many are still under way
// (they go on, and finish or are cut off by RefreshTimeout). Calling Close
// again waits again. Tokens handed out stay valid.
//
// In Azure nothing depends on Close: the Functions host ends workers with
// SIGKILL (WorkerProcess.Dispose), and a refresh keeps no token in memory
// only (writeahead.go). It matters where a process is stopped politely: a
// standalone handler, the CLI commands, tests.
func (b *Broker) Close(ctx context.Context) error {
	select {
	case <-b.running.close():
		b.stop()
		return nil
	case <-ctx.Done():
		return &CloseError{Running: b.running.count(), Err: ctx.Err()}
	}
}

// errClosing answers work refused because Close has begun.
func errClosing(name string) *Error {
	return &Error{Code: CodeUnavailable, Connection: name, Message: "the handler is shutting down",
		Remediation: "Retry; another instance, or this one after its restart, will answer.", RetryAfter: 5 * time.Second}
}
