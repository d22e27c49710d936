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

@description('Key Vault keys that sign client assertions (clientAuth private_key_jwt, grant jwt_bearer), one per connection that needs one: [{ name, kty }], kty RSA (2048-bit, the default; RS256 and PS256) or EC (P-256; ES256). Empty: none.')
param assertionSigners array = []

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

// A signing key per connection that signs its assertions. Non-exportable, for
// sign and verify only: the private key never leaves the vault; the handler
// has the vault sign a digest (azkeys Sign). ARM creates a key's first
// version only if it does not exist and otherwise leaves it as it is (Keys -
// Create If Not Exist, https://learn.microsoft.com/rest/api/keyvault/keyvault/keys/create-if-not-exist),
// so redeploying never replaces a key whose public half a provider holds.
resource signingKeys 'Microsoft.KeyVault/vaults/keys@2023-07-01' = [for signer in assertionSigners: {
  parent: vault
  name: signer.name
  tags: tags
  properties: {
    kty: contains(signer, 'kty') ? signer.kty : 'RSA'
    keySize: (contains(signer, 'kty') ? signer.kty : 'RSA') == 'RSA' ? 2048 : null
    curveName: (contains(signer, 'kty') ? signer.kty : 'RSA') == 'EC' ? 'P-256' : null
    keyOps: [
      'sign'
      'verify'
    ]
    attributes: {
      enabled: true
      exportable: false
    }
  }
}]

output name string = vault.name
output uri string = vault.properties.vaultUri
@description('Key id (without a version) of each signing key, in the order of assertionSigners.')
output signingKeyIds array = [for (signer, i) in assertionSigners: signingKeys[i].properties.keyUri]
