// Package server runs the handler's HTTP server: it reads the settings,
// wires the backends and the broker (package backends), serves the routes
// of package functions until its context ends, and, in standalone mode,
// sweeps on its own schedule.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/backends"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/logsplit"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/metrics"
	redaction "github.com/tokenrefresher/tokenrefresher/handler/internal/redact"
)

// Run serves until ctx ends and returns the process's exit code: 0 after
// a clean stop, 1 when the server fails, 2 for settings it cannot start
// with. Log lines go to stdout and stderr by severity (package logsplit);
// version is logged at start.
func Run(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer, version string) int {
	settings, err := config.LoadSettings(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "handler: bad settings:\n%v\n", err)
		return 2
	}
	// JSON lines, INFO and DEBUG on stdout, WARN and ERROR on stderr: the
	// Functions host reads the severity from the stream (see logsplit).
	// Every record passes the process's redactor first: every secret the
	// handler reads or obtains is registered with it (package redact).
	red := redaction.New()
	log := slog.New(redaction.NewHandler(logsplit.New(stdout, stderr, settings.LogLevel), red))
	conns, watcher, err := backends.ReadConnections(ctx, settings, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "handler: bad connections:\n%v\n", err)
		return 2
	}
	// Metrics: Prometheus text at /metrics standalone, customMetrics in
	// Application Insights on Azure (backends.Metrics).
	m, err := backends.Metrics(getenv, getenv("WEBSITE_SITE_NAME"), backends.InstanceName(getenv))
	if err != nil {
		fmt.Fprintf(stderr, "handler: metrics: %v\n", err)
		return 2
	}
	// An export that fails is reported through OpenTelemetry's error
	// handler; this one writes it to the log, as a JSON line like the rest.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("metrics export failed", "event", "metrics.export_failed", "error", err.Error())
	}))
	defer func() {
		// The last minute's metrics, on a polite stop (standalone).
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = m.Shutdown(ctx)
	}()
	wired, err := backends.NewBroker(settings, conns, getenv, log, backends.WithObserver(m))
	if err != nil {
		fmt.Fprintf(stderr, "handler: %v\n", err)
		return 2
	}
	defer func() {
		// A handler stopped politely (standalone) lets the refreshes under
		// way finish; the Functions host kills with SIGKILL, and then
		// nothing depends on this (broker.Close).
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		if err := wired.Broker.Close(ctx); err != nil {
			log.Warn("refreshes still under way at exit", "event", "handler.stop", "error", err.Error())
		}
	}()

	var apiKey broker.Secret
	if settings.Mode() == config.ModeStandalone && settings.APIKeySecret != "" {
		if apiKey, err = readAPIKey(ctx, wired.Store, settings.APIKeySecret); err != nil {
			fmt.Fprintf(stderr, "handler: %v\n", err)
			return 2
		}
	}
	for _, w := range securityWarnings(settings, conns) {
		attrs := []any{"event", w.event}
		if len(w.connections) > 0 {
			attrs = append(attrs, "connections", w.connections)
		}
		log.Warn(w.message, attrs...)
	}

	addr := settings.Addr()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(stderr, "handler: cannot listen on %s: %v\n", addr, err)
		return 1
	}
	timerTimeout, warning := sweepTimeout(getenv)
	if warning != "" {
		log.Warn(warning, "event", "config.function_timeout", "sweep_timeout", timerTimeout.String())
	}
	// With CONNECTIONS_BLOB the blob is polled, and checked before each
	// sweep; an accepted change swaps the broker's set (connections.go).
	var served functions.Broker = wired.Broker
	var sweeper sweeper = wired.Broker
	if watcher != nil {
		cw := &connectionsWatch{w: watcher, b: wired.Broker, log: log, loc: settings.ConnectionsBlob}
		go cw.run(ctx, connectionsPollInterval)
		sb := sweepingBroker{Broker: wired.Broker, watch: cw}
		served, sweeper = sb, sb
	}
	srv := httpServer(functions.NewServer(served, functions.Options{
		Logger:      log,
		AuthEnabled: settings.PrincipalHeadersTrusted(),
		// The signed-in status page and the token route's callers then
		// (functions/operator.go).
		StatusPageGroup: settings.StatusPageGroup,
		TokenCallers:    settings.TokenCallers,
		APIKey:          apiKey,
		SweepHorizon:    2 * settings.SweepInterval,
		SweepTimeout:    timerTimeout,
		// Behind the Functions host; see functions.Options.
		ForwardedByHost: settings.Mode() == config.ModeFunctions,
		Redactor:        red,
		ConsentKey:      wired.Key,
		ConsentLocker:   wired.Locker,
		AssertionSigner: wired.Signer,
		FederatedToken:  wired.Federated,
		LoopbackPort:    loopbackPort(settings, ln),
		Metrics:         standaloneMetrics(settings, m),
	}), log)
	log.Info("listening", "event", "handler.start", "mode", settings.Mode(), "addr", ln.Addr().String(),
		"connections", len(conns), "store", backends.StoreKind(settings), "lock", backends.LockKind(settings),
		"access_tokens", backends.AccessTokenKind(settings), "api_key", !apiKey.IsZero(), "instance", backends.InstanceName(getenv), "version", version)

	if settings.Mode() == config.ModeStandalone {
		go sweepEvery(ctx, sweeper, settings.SweepInterval, log)
	}
	errc := make(chan error, 1)
	guarded := guard(ctx, srv, ln, log) // connguard.go
	go func() { errc <- srv.Serve(guarded) }()
	select {
	case err := <-errc:
		log.Error("server stopped", "event", "handler.stop", "error", err.Error())
		return 1
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Warn("shutdown", "event", "handler.stop", "error", err.Error())
	}
	log.Info("stopped", "event", "handler.stop")
	return 0
}

// standaloneMetrics is what /metrics serves: the metrics in standalone
// mode, nothing behind the Functions host (which passes on only /api/
// routes; the metrics go to Application Insights there).
func standaloneMetrics(s config.Settings, m *metrics.Metrics) functions.PrometheusWriter {
	if s.Mode() != config.ModeStandalone {
		return nil
	}
	return m
}

// loopbackPort is the port a standalone handler listens on when it listens
// on loopback only, where it refuses requests that name another host
// (functions.Options.LoopbackPort); 0 otherwise.
func loopbackPort(s config.Settings, ln net.Listener) int {
	a, ok := ln.Addr().(*net.TCPAddr)
	if s.Mode() != config.ModeStandalone || !ok || !a.IP.IsLoopback() {
		return 0
	}
	return a.Port
}

// httpServer serves h with every phase of a request bounded, so that slow
// or idle clients cannot hold connections open indefinitely: the headers
// by ReadHeaderTimeout, the rest by the connection guard it must be served
// under (guard, connguard.go), which bounds the body (withBodyDeadline), a
// blocked write and an idle keep-alive connection without net/http's
// per-request deadline changes.
//
// No WriteTimeout: each route sets its own deadline
// (functions/deadline.go), 55 s for the HTTP routes and host.json's
// functionTimeout less a minute for the timer. One server-wide figure cut
// the timer's answer to a long sweep, and the host then recorded a failed
// invocation.
func httpServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           withBodyDeadline(h),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// apiKeyReadTimeout bounds reading the API key at start-up: a store that
// does not answer fails the start rather than hanging it.
const apiKeyReadTimeout = 30 * time.Second

// closeTimeout bounds how long a handler stopped politely waits for the
// refreshes under way (each bounded by the broker's RefreshTimeout, two
// minutes by default) before it exits anyway, saying how many were left.
const closeTimeout = 30 * time.Second

// readAPIKey reads the key standalone mode requires of callers from the
// secret API_KEY_SECRET names. The key is read once: rotating it means
// storing a new value and restarting. Errors name the secret, never its
// value.
func readAPIKey(ctx context.Context, store broker.SecretStore, name string) (broker.Secret, error) {
	ctx, cancel := context.WithTimeout(ctx, apiKeyReadTimeout)
	defer cancel()
	s, err := store.Get(ctx, name)
	switch {
	case errors.Is(err, broker.ErrSecretNotFound):
		return "", fmt.Errorf("API_KEY_SECRET: the store has no secret named %q; store a random key of at least %d characters there "+
			"(handler secret set %s for the local store, az keyvault secret set for Key Vault), or unset API_KEY_SECRET and listen on loopback only",
			name, config.MinAPIKeyLength, name)
	case err != nil:
		return "", fmt.Errorf("API_KEY_SECRET: reading secret %q: %w", name, err)
	}
	key := s.Value.Reveal()
	if len(key) < config.MinAPIKeyLength {
		return "", fmt.Errorf("API_KEY_SECRET: secret %q holds a key of %d characters; it must have at least %d (a random one, such as the output of: openssl rand -base64 32)",
			name, len(key), config.MinAPIKeyLength)
	}
	// Callers send the key in a header or a query parameter: characters
	// outside printable ASCII, or spaces, would not arrive as stored.
	if strings.ContainsFunc(key, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return "", fmt.Errorf("API_KEY_SECRET: secret %q holds a key with spaces, control characters or non-ASCII characters, which a header cannot carry unchanged; use printable ASCII only", name)
	}
	return s.Value, nil
}

// securityWarning is a configuration that start-up accepts but that does
// not do what its author probably meant.
type securityWarning struct {
	event, message string
	// connections are the connections concerned, when it is about some.
	connections []string
}

// securityWarnings lists, for the log at start-up, the settings that
// weaken or disable a protection without making the handler unusable.
func securityWarnings(s config.Settings, conns []broker.Connection) []securityWarning {
	var ws []securityWarning
	var restricted []string
	for _, c := range conns {
		if len(c.AllowedCallers) > 0 {
			restricted = append(restricted, c.Name)
		}
	}
	switch {
	case len(restricted) > 0 && s.Mode() == config.ModeFunctions && !s.AuthEnabled:
		ws = append(ws, securityWarning{event: "config.allowed_callers_unenforced", connections: restricted,
			message: "connections with allowedCallers answer 403 to every caller: App Service authentication is off (WEBSITE_AUTH_ENABLED is not true), so callers cannot be identified; turn it on, or remove allowedCallers"})
	case len(restricted) > 0 && s.Mode() == config.ModeStandalone:
		ws = append(ws, securityWarning{event: "config.allowed_callers_unenforced", connections: restricted,
			message: "connections with allowedCallers answer 403 to every caller: standalone mode cannot identify callers (X-MS-CLIENT-PRINCIPAL-ID is trusted only behind the Functions host with App Service authentication)"})
	}
	if s.Mode() == config.ModeStandalone && s.AuthEnabled {
		ws = append(ws, securityWarning{event: "config.auth_headers_untrusted",
			message: "WEBSITE_AUTH_ENABLED is ignored in standalone mode: no App Service front end strips X-MS-CLIENT-PRINCIPAL-ID headers sent by clients, so they are not trusted"})
	}
	if s.Mode() == config.ModeFunctions && s.APIKeySecret != "" {
		ws = append(ws, securityWarning{event: "config.api_key_ignored",
			message: "API_KEY_SECRET is ignored in Functions mode: the Functions host checks function keys before it forwards a request"})
	}
	return ws
}

// sweeper is what sweepEvery needs of the broker.
type sweeper interface {
	Sweep(ctx context.Context, horizon time.Duration) []broker.SweepResult
}

// sweepEvery is the standalone mode's timer: with no Functions host to
// drive /refresh, the handler sweeps on its own schedule.
func sweepEvery(ctx context.Context, b sweeper, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		// Like the Functions timer (runOnStartup false), the first sweep
		// waits one period: callers refresh on demand meanwhile, and a
		// restart loop cannot turn into a refresh loop.
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, r := range b.Sweep(ctx, 2*every) {
			if r.Err != nil {
				log.Error("sweep: refresh failed", "event", "sweep.failed", "connection", r.Connection, "message", r.Err.Message)
			} else {
				log.Info("sweep", "event", "sweep."+string(r.Action), "connection", r.Connection, "expires_on", r.ExpiresOn.UTC().Format(time.RFC3339))
			}
		}
	}
}
