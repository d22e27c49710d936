package backends

import (
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault"
)

// KeyVaultClient is a client of the vault KEY_VAULT_URL names, with the
// credential Open would use: on a workstation the developer's sign-in
// (DefaultAzureCredential: az login and friends), which Key Vault's RBAC
// ("Key Vault Secrets Officer" to write, "Key Vault Secrets User" to read)
// then authorises. The CLI's secret commands write through it.
func KeyVaultClient(s config.Settings, getenv func(string) string) (*azsecrets.Client, error) {
	tc, err := credential(s, getenv)
	if err != nil {
		return nil, err
	}
	c, err := keyvault.NewClient(s.KeyVaultURL, tc, nil)
	if err != nil {
		return nil, fmt.Errorf("KEY_VAULT_URL: %w", err)
	}
	return c, nil
}
