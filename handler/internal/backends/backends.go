// Package backends builds what the broker works on from the settings: the
// secret store (Key Vault or the local store), the lock (a blob lease or
// the local lock), the token client, and the broker over them. The server
// and the CLI commands build theirs here, so that a command reads and
// writes exactly what the app does.
package backends

import (
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/bloblease"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
	redaction "github.com/tokenrefresher/tokenrefresher/handler/internal/redact"
)

// Wired is the broker over the backends the settings choose, with what
// else of them the handler reads.
type Wired struct {
	Broker *broker.Broker
	// Store is the broker's secret store, for the secrets the handler
	// itself reads (the API key).
	Store broker.SecretStore
	// Key is the write-ahead key, from which the consent flow derives its
	// signing keys.
	Key broker.KeySource
	// Locker is the broker's locker, under which a consent link is
	// claimed once across instances.
	Locker broker.Locker
	// Signer and Federated make client assertions, the broker's and the
	// consent flow's code exchange alike; nil when no connection needs
	// them.
	Signer    oauth.Signer
	Federated oauth.FederatedToken
}

// NewBroker wires the backends the settings choose to a broker. Every
// secret of a token request, and every token issued, is registered with
// log's redactor (package redact).
func NewBroker(settings config.Settings, conns []broker.Connection, getenv func(string) string, log *slog.Logger, opts ...Option) (Wired, error) {
	store, locker, err := Open(settings, getenv, log)
	if err != nil {
		return Wired{}, err
	}
	key := broker.StoredKey(store, locker)
	signer, federated, err := AssertionBackends(settings, conns, getenv)
	if err != nil {
		return Wired{}, err
	}
	bo := broker.Options{
		Store:       store,
		Locker:      locker,
		Connections: conns,
		// A secret in the store, created on first use (broker.StoredKey).
		WriteAheadKey: key,
		LockWait:      settings.LockWait,
		// ACCESS_TOKEN_STORE=blob: the access token beside the lock, one
		// vault write per rotating refresh (broker/besidelock.go); what
		// is read there is registered with the log's redactor.
		AccessTokensBesideLock: settings.AccessTokenStore == config.AccessTokensInBlob,
		Remember:               rememberWith(log),
		Instance:               InstanceName(getenv),
		Logger:                 log,
		Grant: redaction.Grant(oauth.New(oauth.Options{
			Timeout:          settings.ProviderTimeout,
			AttemptTimeout:   settings.ProviderAttemptTimeout,
			MaxResponseBytes: settings.ProviderMaxResponseBytes,
			Logger:           log,
			Signer:           signer,
			Federated:        federated,
		}), redaction.OfLogger(log)),
	}
	for _, o := range opts {
		o(&bo)
	}
	b, err := broker.New(bo)
	if err != nil {
		return Wired{}, err
	}
	return Wired{Broker: b, Store: store, Key: key, Locker: locker, Signer: signer, Federated: federated}, nil
}

// rememberWith registers a secret with log's redactor, when it has one.
func rememberWith(log *slog.Logger) func(name, value string) {
	r := redaction.OfLogger(log)
	if r == nil {
		return nil
	}
	return r.Remember
}

// Open chooses the store and the lock, each independently (DESIGN.md):
// Key Vault or the local store, a blob lease or the local lock. One Azure
// credential serves both, made only when one of them needs it.
func Open(s config.Settings, getenv func(string) string, log *slog.Logger) (broker.SecretStore, broker.Locker, error) {
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
		// Every write to the vault (refreshes, the sweep, consent, the
		// write-ahead key) passes one pacer: Key Vault's write budget is
		// the vault's, shared by every instance (keyvault.Pacer).
		store = keyvault.NewPacer(redaction.Store(keyvault.New(client, keyvault.Options{VaultURL: s.KeyVaultURL}), redaction.OfLogger(log)),
			keyvault.PacerOptions{WritesPer10s: s.KeyVaultWriteBudget})
	} else {
		ls, err := local.NewStore(s.LocalStateDir)
		if err != nil {
			return nil, nil, err
		}
		// Every value read or written is registered with the logger's
		// redactor (package redact), beneath any wrapper that the broker
		// asks for more than a SecretStore.
		store = redaction.Store(ls, redaction.OfLogger(log))
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
		Instance:      InstanceName(getenv),
		Logger:        log,
	})
	if err != nil {
		return nil, nil, err
	}
	return store, locker, nil
}

// InstanceName identifies this process in the lease's owner, the logs and
// the status kept beside each lock: the platform's name for the instance
// when there is one. It reads the variables in the order the Functions
// host's own EnvironmentExtensions.GetInstanceId does: on Linux Consumption
// and Flex Consumption WEBSITE_POD_NAME, then CONTAINER_NAME; elsewhere
// WEBSITE_INSTANCE_ID. Flex sets no WEBSITE_INSTANCE_ID (the host's
// IsLinuxConsumptionOnLegion, which is Flex, requires !IsAppService(), that
// is an empty WEBSITE_INSTANCE_ID), so WEBSITE_POD_NAME is read first; the
// variables of one platform are not set on another. COMPUTERNAME names a
// Windows machine; host name and pid the rest.
func InstanceName(getenv func(string) string) string {
	for _, k := range []string{"WEBSITE_POD_NAME", "CONTAINER_NAME", "WEBSITE_INSTANCE_ID", "COMPUTERNAME"} {
		if v := getenv(k); v != "" {
			return v
		}
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// StoreKind names the secret store Open chooses, for the start-up log.
func StoreKind(s config.Settings) string {
	if s.UsesKeyVault() {
		return "keyvault"
	}
	return "local"
}

// AccessTokenKind says where NewBroker keeps the shared access tokens, for
// the start-up log: "store" is the secret store, Key Vault or the local one
// (ACCESS_TOKEN_STORE=keyvault, the default, covers both).
func AccessTokenKind(s config.Settings) string {
	if s.AccessTokenStore == config.AccessTokensInBlob {
		return "blob (beside each lock; not in Key Vault)"
	}
	return "store"
}

// LockKind names the lock Open chooses, for the start-up log.
func LockKind(s config.Settings) string {
	if s.UsesBlobLock() {
		return "bloblease"
	}
	return "local"
}
