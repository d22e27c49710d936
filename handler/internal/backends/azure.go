package backends

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/bloblease"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/connblob"
)

// azuriteConnectionString is what UseDevelopmentStorage=true means; the Go
// SDK does not understand the shorthand. The key is Azurite's published
// development key, not a secret.
const azuriteConnectionString = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
	"AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
	"BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"

// credential picks the identity the handler uses for Key Vault and
// identity-based storage: the app's managed identity on Azure (a
// user-assigned one when AZURE_CLIENT_ID is set), and on a workstation the
// developer's sign-in through DefaultAzureCredential (Azure CLI and friends).
func credential(s config.Settings, getenv func(string) string) (azcore.TokenCredential, error) {
	onAzure := getenv("IDENTITY_ENDPOINT") != "" || getenv("MSI_ENDPOINT") != ""
	if onAzure {
		o := &azidentity.ManagedIdentityCredentialOptions{}
		if s.AzureClientID != "" {
			o.ID = azidentity.ClientID(s.AzureClientID)
		}
		cred, err := azidentity.NewManagedIdentityCredential(o)
		if err != nil {
			return nil, fmt.Errorf("managed identity: %w", err)
		}
		return cred, nil
	}
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("no Azure credential on this machine (sign in with 'az login'): %w", err)
	}
	return cred, nil
}

// blobClient connects to the lock storage: a connection string (Azurite, or
// an account key), or the identity-based settings the Functions host uses
// itself (AzureWebJobsStorage__blobServiceUri / __accountName).
func blobClient(s config.Settings, cred func() (azcore.TokenCredential, error)) (*azblob.Client, error) {
	if cs := s.StorageConnectionString; cs != "" {
		if strings.EqualFold(strings.TrimSpace(strings.TrimSuffix(cs, ";")), "UseDevelopmentStorage=true") {
			cs = azuriteConnectionString
		}
		c, err := azblob.NewClientFromConnectionString(cs, bloblease.ClientOptions())
		if err != nil {
			return nil, fmt.Errorf("AzureWebJobsStorage is not a usable connection string: %w", err)
		}
		return c, nil
	}
	tc, err := cred()
	if err != nil {
		return nil, err
	}
	c, err := azblob.NewClient(s.BlobServiceURL(), tc, bloblease.ClientOptions())
	if err != nil {
		return nil, fmt.Errorf("blob service %s: %w", s.BlobServiceURL(), err)
	}
	return c, nil
}

// ConnectionsBlob returns the store of the connections file CONNECTIONS_BLOB
// names, in the lock storage account, reached with the lock's credential:
// a connection string (Azurite, or an account key) or the identity-based
// settings. The app's identity may read and write there (Storage Blob Data
// Owner on the account, infra/modules/roles.bicep).
func ConnectionsBlob(s config.Settings, getenv func(string) string) (*connblob.Store, error) {
	loc, err := connblob.ParseLocation(s.ConnectionsBlob)
	if err != nil {
		return nil, fmt.Errorf("CONNECTIONS_BLOB: %w", err)
	}
	client, err := blobClient(s, func() (azcore.TokenCredential, error) { return credential(s, getenv) })
	if err != nil {
		return nil, err
	}
	return connblob.New(client, loc), nil
}

// connectionsReadTimeout bounds the read of the connections blob at start.
const connectionsReadTimeout = 30 * time.Second

// ReadConnections reads the connections the settings name, as the server
// and the CLI start. With CONNECTIONS_BLOB it reads the blob once and
// returns the Watcher that holds that version, for the server to poll; a
// missing, unreadable or invalid file is an error. Otherwise it reads
// CONNECTIONS_FILE or CONNECTIONS and the Watcher is nil.
func ReadConnections(ctx context.Context, s config.Settings, getenv func(string) string) ([]broker.Connection, *connblob.Watcher, error) {
	if s.ConnectionsBlob == "" {
		conns, err := s.ReadConnections()
		return conns, nil, err
	}
	store, err := ConnectionsBlob(s, getenv)
	if err != nil {
		return nil, nil, err
	}
	w := connblob.NewWatcher(store)
	ctx, cancel := context.WithTimeout(ctx, connectionsReadTimeout)
	defer cancel()
	ch, err := w.Check(ctx)
	switch {
	case errors.Is(err, connblob.ErrNotFound):
		return nil, nil, fmt.Errorf("CONNECTIONS_BLOB: %w; load one with: handler connections put FILE", err)
	case err != nil:
		return nil, nil, fmt.Errorf("CONNECTIONS_BLOB: %w", err)
	case ch.Refused != nil:
		return nil, nil, fmt.Errorf("connections from CONNECTIONS_BLOB %s:\n%w", s.ConnectionsBlob, ch.Refused)
	}
	return ch.Conns, w, nil
}
