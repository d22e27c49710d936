package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/bloblease"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
)

func serve(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) int {
	settings, err := config.LoadSettings(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "handler: bad settings:\n%v\n", err)
		return 2
	}
	// JSON lines on stdout: the Functions host forwards them to Application
	// Insights; stderr lines are logged as errors there.
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: settings.LogLevel}))
	conns, err := settings.ReadConnections()
	if err != nil {
		fmt.Fprintf(stderr, "handler: bad connections:\n%v\n", err)
		return 2
	}
	b, err := newBroker(settings, conns, getenv, log)
	if err != nil {
		fmt.Fprintf(stderr, "handler: %v\n", err)
		return 2
	}
	defer b.Close()

	addr := settings.Addr()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(stderr, "handler: cannot listen on %s: %v\n", addr, err)
		return 1
	}
	srv := &http.Server{
		Handler: functions.NewServer(b, functions.Options{
			Logger:       log,
			AuthEnabled:  settings.AuthEnabled,
			SweepHorizon: 2 * settings.SweepInterval,
		}),
		ReadHeaderTimeout: 10 * time.Second,
		// The host's own limit is 230 s; a token call waits at most
		// LockWait plus the provider timeout.
		WriteTimeout: 2 * time.Minute,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("listening", "event", "handler.start", "mode", settings.Mode(), "addr", ln.Addr().String(),
		"connections", len(conns), "store", storeKind(settings), "lock", lockKind(settings), "version", version)

	if settings.Mode() == config.ModeStandalone {
		go sweepEvery(ctx, b, settings.SweepInterval, log)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
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

// newBroker wires the backends the settings choose to a broker.
func newBroker(settings config.Settings, conns []broker.Connection, getenv func(string) string, log *slog.Logger) (*broker.Broker, error) {
	store, locker, err := backends(settings, getenv, log)
	if err != nil {
		return nil, err
	}
	return broker.New(broker.Options{
		Store:       store,
		Locker:      locker,
		Connections: conns,
		LockWait:    settings.LockWait,
		Instance:    instanceName(getenv),
		Logger:      log,
		Grant: oauth.New(oauth.Options{
			Timeout:          settings.ProviderTimeout,
			AttemptTimeout:   settings.ProviderAttemptTimeout,
			MaxResponseBytes: settings.ProviderMaxResponseBytes,
			Logger:           log,
		}),
	})
}

// backends chooses the store and the lock, each independently (DESIGN.md):
// Key Vault or the local store, a blob lease or the local lock. One Azure
// credential serves both, made only when one of them needs it.
func backends(s config.Settings, getenv func(string) string, log *slog.Logger) (broker.SecretStore, broker.Locker, error) {
	cred := sync.OnceValues(func() (azcore.TokenCredential, error) { return credential(s, getenv) })
	var store broker.SecretStore
	if s.UsesKeyVault() {
		tc, err := cred()
		if err != nil {
			return nil, nil, err
		}
		client, err := keyvault.NewClient(s.KeyVaultURL, tc, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("KEY_VAULT_URL: %w", err)
		}
		store = keyvault.New(client, keyvault.Options{VaultURL: s.KeyVaultURL})
	} else {
		ls, err := local.NewStore(s.LocalStateDir)
		if err != nil {
			return nil, nil, err
		}
		store = ls
	}
	if !s.UsesBlobLock() {
		locker, err := local.NewLocker(s.LocalStateDir, local.LockerOptions{})
		if err != nil {
			return nil, nil, err
		}
		return store, locker, nil
	}
	client, err := blobClient(s, cred)
	if err != nil {
		return nil, nil, err
	}
	locker, err := bloblease.New(client, bloblease.Options{
		Container:     s.LockContainer,
		LeaseDuration: s.LeaseDuration,
		Instance:      instanceName(getenv),
		Logger:        log,
	})
	if err != nil {
		return nil, nil, err
	}
	return store, locker, nil
}

// instanceName identifies this process in the status kept beside each
// lock: the Functions host's instance id when there is one.
func instanceName(getenv func(string) string) string {
	for _, k := range []string{"WEBSITE_INSTANCE_ID", "CONTAINER_NAME", "COMPUTERNAME"} {
		if v := getenv(k); v != "" {
			return v
		}
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

func storeKind(s config.Settings) string {
	if s.KeyVaultURL != "" {
		return "keyvault"
	}
	return "local"
}

func lockKind(s config.Settings) string {
	if s.UsesBlobLock() {
		return "bloblease"
	}
	return "local"
}

// sweepEvery is the standalone mode's timer: with no Functions host to
// drive /refresh, the handler sweeps on its own schedule.
func sweepEvery(ctx context.Context, b *broker.Broker, every time.Duration, log *slog.Logger) {
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
