// The storage account of the function app: host storage (keys, timer
// schedule status, host locks), the Flex Consumption deployment container,
// and the container of the handler's lock blobs. Every client authenticates
// with a managed identity; the account has no usable key.

@description('Storage account name: 3-24 lower-case letters and digits, unique in Azure.')
param name string

param location string
param tags object

@description('Container the Flex Consumption plan deploys the app package to.')
param deploymentContainerName string

@description('Container of the handler\'s lock blobs (the handler\'s LOCK_CONTAINER).')
param lockContainerName string

@description('Replication of the account.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
])
param skuName string = 'Standard_LRS'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    // Entra ID only: the host, the deployment and the lock all use the app's
    // managed identity, so no account key has to exist in any setting, and a
    // leaked key would not work.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    accessTier: 'Hot'
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Created here rather than by the handler at run time, so the app's identity
// needs no right to create containers and a typo in LOCK_CONTAINER shows up as
// "container not found" instead of a second, empty lock namespace.
resource lockContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: lockContainerName
  properties: {
    publicAccess: 'None'
  }
}

output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
