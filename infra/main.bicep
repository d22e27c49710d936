// tokenrefresher on Azure Functions Flex Consumption: the Go custom handler
// that keeps OAuth2 tokens fresh and hands them to Azure Data Factory.
//
// Deploys into one resource group: storage (host storage, deployment
// package, lock blobs), Key Vault (the connections' secrets), Log Analytics
// and Application Insights, the Flex Consumption function app, the app's
// role assignments, and an alert on refresh failures. Secrets are not
// deployed: the operator loads them afterwards (README.md).

targetScope = 'resourceGroup'

metadata description = 'tokenrefresher: keeps OAuth2 tokens fresh for Azure Data Factory (Go custom handler, Flex Consumption).'

@description('Region of every resource. Flex Consumption is not offered in every region: az functionapp list-flexconsumption-locations.')
param location string = resourceGroup().location

@description('Prefix of the resource names: 2-10 lower-case letters and digits.')
@minLength(2)
@maxLength(10)
param namePrefix string = 'tokref'

@description('Function app name; it is part of the token URL ADF calls.')
param appName string = '${namePrefix}-${uniqueString(resourceGroup().id)}'

@description('The connections file (README.md, "Connections file") as an object. It names secrets; their values go into the vault, never here.')
param connections object

@description('Further handler settings with their defaults in README.md: PROVIDER_TIMEOUT, PROVIDER_ATTEMPT_TIMEOUT, PROVIDER_MAX_RESPONSE_BYTES, LOCK_WAIT, LOG_LEVEL.')
param handlerSettings object = {}

@description('Resource id of an existing user-assigned managed identity to run as (its client id becomes AZURE_CLIENT_ID); empty: the system-assigned identity.')
param userAssignedIdentityResourceId string = ''

@description('Key Vault purge protection. Recommended: a purged refresh token cannot be recovered, and the connection needs re-authorization. Irreversible once on.')
param enablePurgeProtection bool = true

@description('Days a deleted secret stays recoverable, 7-90.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Object id of the user or group that loads secrets after deployment (granted Key Vault Secrets Officer); empty: grant it yourself.')
param operatorPrincipalId string = ''

@description('Put App Service authentication in front of the app, admitting only Data Factory\'s managed identity. Off: function keys alone authenticate callers.')
param enableAppServiceAuth bool = false

@description('With App Service authentication: client id of the app registration that represents this app as an API.')
param authClientId string = ''

@description('With App Service authentication: further accepted token audiences.')
param authAllowedAudiences array = []

@description('With App Service authentication: object id of Data Factory\'s managed identity (required).')
param adfPrincipalId string = ''

@description('With App Service authentication: client (application) id of Data Factory\'s managed identity; empty: not checked.')
param adfApplicationId string = ''

@description('Most instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory per instance; the handler needs little.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 512

@description('Days Log Analytics keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

@description('E-mail addresses told about refresh failures.')
param alertEmailAddresses array = []

@description('Resource ids of existing action groups told about refresh failures.')
param alertActionGroupIds array = []

@description('Severity of the refresh-failure alert, 0 (critical) to 4 (verbose).')
@minValue(0)
@maxValue(4)
param alertSeverity int = 2

param tags object = {}

var suffix = uniqueString(resourceGroup().id)
// Storage account names allow only lower-case letters and digits.
var storageAccountName = take(toLower(replace('st${namePrefix}${suffix}', '-', '')), 24)
var keyVaultName = take('kv-${namePrefix}-${suffix}', 24)

// The handler's default LOCK_CONTAINER (handler/internal/config); set
// explicitly all the same, so the setting and the container cannot drift.
var lockContainerName = 'token-locks'
var deploymentContainerName = 'app-package'

var useUserAssignedIdentity = !empty(userAssignedIdentityResourceId)

// /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>.
// ARM evaluates a module's scope even when its condition is false, so an
// empty id is replaced by a well-formed placeholder.
var identityIdParts = split(useUserAssignedIdentity ? userAssignedIdentityResourceId : '/subscriptions/${subscription().subscriptionId}/resourceGroups/${resourceGroup().name}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/none', '/')

module userIdentity 'modules/identity.bicep' = if (useUserAssignedIdentity) {
  name: 'user-assigned-identity'
  scope: resourceGroup(identityIdParts[2], identityIdParts[4])
  params: {
    name: last(identityIdParts)
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: storageAccountName
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    lockContainerName: lockContainerName
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'key-vault'
  params: {
    name: keyVaultName
    location: location
    tags: tags
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: enablePurgeProtection
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    workspaceName: 'log-${namePrefix}-${suffix}'
    appInsightsName: 'appi-${namePrefix}-${suffix}'
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'function-app'
  params: {
    planName: 'plan-${namePrefix}-${suffix}'
    appName: appName
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    lockContainerName: lockContainerName
    keyVaultUri: keyVault.outputs.uri
    appInsightsName: monitoring.outputs.appInsightsName
    userAssignedIdentityResourceId: userAssignedIdentityResourceId
    userAssignedIdentityClientId: useUserAssignedIdentity ? userIdentity!.outputs.clientId : ''
    connections: connections
    handlerSettings: handlerSettings
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    enableAppServiceAuth: enableAppServiceAuth
    authClientId: authClientId
    authAllowedAudiences: authAllowedAudiences
    adfPrincipalId: adfPrincipalId
    adfApplicationId: adfApplicationId
  }
}

// The identity the host and the handler authenticate as holds the roles.
var runtimePrincipalId = useUserAssignedIdentity ? userIdentity!.outputs.principalId : functionApp.outputs.systemAssignedPrincipalId

module roles 'modules/roles.bicep' = {
  name: 'role-assignments'
  params: {
    principalId: runtimePrincipalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    operatorPrincipalId: operatorPrincipalId
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    tags: tags
    appInsightsName: monitoring.outputs.appInsightsName
    alertName: 'alert-${namePrefix}-refresh-failures'
    severity: alertSeverity
    emailAddresses: alertEmailAddresses
    actionGroupIds: alertActionGroupIds
  }
}

output functionAppName string = functionApp.outputs.name
output defaultHostName string = functionApp.outputs.defaultHostName
output keyVaultName string = keyVault.outputs.name
output keyVaultUri string = keyVault.outputs.uri
output storageAccountName string = storage.outputs.name

@description('Object id of the identity that holds the roles (the user-assigned one when given).')
output principalId string = runtimePrincipalId

output systemAssignedPrincipalId string = functionApp.outputs.systemAssignedPrincipalId

@description('URL of a Web activity in ADF: replace {connection}, add ?minValidity=<seconds>.')
output tokenUrlTemplate string = 'https://${functionApp.outputs.defaultHostName}/api/token/{connection}'

output statusUrl string = 'https://${functionApp.outputs.defaultHostName}/api/connections'
