// Role assignments of the identity the app runs as: exactly what the
// Functions host and the handler need, each on the one resource it is for.

@description('Object id of the identity the host and the handler run as: the system-assigned identity, or the user-assigned one when given.')
param principalId string

param storageAccountName string
param keyVaultName string
param appInsightsName string

@description('Whether the vault holds keys that sign the connections\' assertions (private_key_jwt, jwt_bearer): the identity then signs with them.')
param signsAssertions bool = false

@description('Object id of a user or group allowed to load secrets into the vault after deployment; empty: none.')
param operatorPrincipalId string = ''

// Built-in role definitions: the same GUID in every subscription. Sources in
// infra/README.md ("Role assignments"); infra/infra_test.go pins the values.
var roles = {
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  keyVaultCryptoUser: '12338af0-0e69-4776-bea7-57ae8d297424'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Secrets Officer rather than Secrets User: the handler writes rotated refresh
// tokens and fresh access tokens back, and reads secret expiry dates. The
// vault holds nothing but this app's secrets.
resource vaultSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Crypto User (keys/read and keys/sign/action among its data actions, nothing
// on secrets or key management): the handler reads a signing key's current
// version and has the vault sign an assertion's digest. Only when the vault
// holds signing keys.
resource vaultCryptoUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (signsAssertions) {
  name: guid(vault.id, principalId, roles.keyVaultCryptoUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultCryptoUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Host storage (function keys, timer schedule status, host locks), the Flex
// deployment package, and the handler's lock-blob leases. Functions documents
// Blob Data Owner as the host's minimum; Contributor would do for the leases.
resource storageBlobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// The host's diagnostic events table; without it the host logs warnings.
resource storageTableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Sending telemetry to an Application Insights resource with local auth off.
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Whoever loads client secrets and refresh tokens after deployment. On an RBAC
// vault, owning the subscription is not enough to write a secret.
resource operatorSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: operatorPrincipalId
  }
}
