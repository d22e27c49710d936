// The vault holding every connection's secrets: client ids and secrets and
// refresh tokens (loaded by the operator), and the access tokens and rotated
// refresh tokens the handler writes back.

@description('Vault name: 3-24 letters, digits and hyphens, starting with a letter, unique in Azure.')
param name string

param location string
param tags object

@description('Days a deleted secret (or the vault) stays recoverable, 7-90.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int

@description('Purge protection: a deleted secret cannot be purged before the retention period ends. Irreversible once on.')
param enablePurgeProtection bool

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    // Azure RBAC, not access policies: the app gets one role on this vault and
    // nothing else (roles.bicep).
    enableRbacAuthorization: true
    // A refresh token deleted by mistake is often the only copy; soft delete
    // makes it recoverable.
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // The API takes true or nothing: false is rejected, because purge
    // protection can never be turned off again.
    enablePurgeProtection: enablePurgeProtection ? true : null
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
