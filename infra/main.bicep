// tokenrefresher on Azure Functions Flex Consumption: the Go custom handler
// that keeps OAuth2 tokens fresh and hands them to Azure Data Factory.
//
// Deploys into one resource group: storage (host storage, deployment
// package, lock blobs), Key Vault (the connections' secrets), Log Analytics
// and Application Insights, the Flex Consumption function app, the app's
// role assignments, the alerts of the README's alert table and the
// operators' workbook. Secrets are not deployed: the operator loads them
// afterwards (README.md).

targetScope = 'resourceGroup'

metadata description = 'tokenrefresher: keeps OAuth2 tokens fresh for Azure Data Factory (Go custom handler, Flex Consumption).'

@description('Region of every resource. Flex Consumption is not offered in every region: az functionapp list-flexconsumption-locations.')
param location string = resourceGroup().location

// Every name below is built from namePrefix and a 13-character hash, so the
// prefix carries the strictest rule of them all: the storage account's
// "lower-case letters and numbers", 3-24 (the name is cut to 24), and the
// Key Vault's "start with a letter, end with a letter or number, no
// consecutive hyphens", 3-24 (resource-name-rules.md,
// https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules).
// Bicep has no pattern decorator: validNamePrefix below stops the deployment
// on any other character. TestDerivedNames derives every name from the
// shortest, the longest and the oddest prefix this allows.
@description('Prefix of every resource name: 2-10 characters, lower-case letters a-z and digits 0-9 only (no hyphen, no capital, no other character), because the storage account name is built from it.')
@minLength(2)
@maxLength(10)
param namePrefix string = 'tokref'

@description('Function app name, part of the token URL ADF calls: 2-60 letters, digits and hyphens, not starting or ending with a hyphen, unique in Azure.')
@minLength(2)
@maxLength(60)
param appName string = '${namePrefix}-${uniqueString(resourceGroup().id)}'

@description('The connections file (README.md, "Connections file") as an object. It names secrets; their values go into the vault, never here.')
param connections object

// App settings are strings; a number or a bool is refused here, at compile
// time, rather than by ARM (user-defined types, "*" for every further
// property: https://learn.microsoft.com/azure/azure-resource-manager/bicep/user-defined-data-types).
type stringMap = { *: string }

@description('Further handler settings, each a string, with their defaults in README.md: PROVIDER_TIMEOUT, PROVIDER_ATTEMPT_TIMEOUT, PROVIDER_MAX_RESPONSE_BYTES, LOCK_WAIT, LOCK_LEASE_DURATION, LOG_LEVEL, KEY_VAULT_WRITE_BUDGET, ACCESS_TOKEN_STORE (blob keeps access tokens beside each lock instead of in Key Vault); and CONNECTIONS_BLOB (<container>/<blob> in the lock container, such as token-locks/connections.json) to keep the connections file in a blob that running instances re-read when it changes, in place of the connections parameter, which is then not deployed.')
param handlerSettings stringMap = {}

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

@description('Key Vault keys to create for connections that sign their assertions (clientAuth private_key_jwt, grant jwt_bearer): [{ "name": "salesforce-signing-key" }, { "name": "okta-signing-key", "kty": "EC" }]; kty RSA (2048-bit, the default) or EC (P-256). Non-exportable; the app\'s identity gets Key Vault Crypto User on the vault. A key that already exists is left as it is. Empty: none.')
param assertionSigners array = []

@description('Put App Service authentication in front of the token route, admitting only Data Factory\'s managed identity; needs authClientId and adfPrincipalId. Off: function keys alone authenticate callers.')
param enableAppServiceAuth bool = false

@description('With App Service authentication (required then): client id of the app registration that represents this app as an API.')
param authClientId string = ''

@description('With App Service authentication: further accepted token audiences.')
param authAllowedAudiences array = []

@description('With App Service authentication: object id of Data Factory\'s managed identity (required).')
param adfPrincipalId string = ''

@description('With App Service authentication: client (application) id of Data Factory\'s managed identity; empty: not checked (nor when statusPageGroupId is set).')
param adfApplicationId string = ''

@description('With App Service authentication: object id of the Entra group whose members may sign in to the status page at /.auth/login/aad?post_login_redirect_uri=/api/operator/status (the app registration must emit group claims: infra/README.md). Empty: nobody signs in; the admin-key page /api/status works either way.')
param statusPageGroupId string = ''

// 1-1000: "The lowest maximum scale is currently 1. The highest currently
// supported value is 1000." (flex-consumption-plan.md, Considerations,
// https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan#considerations).
// Other pages still say 40, and below 40 reached regions one by one
// (Azure/azure-functions-host#10523): the default stays at 40, which every
// region accepts.
@description('Most instances the app scales out to, 1-1000. Below 40 needs a region where Flex Consumption allows it.')
@minValue(1)
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

@description('E-mail addresses told when an alert fires and when it resolves.')
param alertEmailAddresses array = []

@description('A webhook told when an alert fires and when it resolves, in the common alert schema (a Teams or Slack workflow, a Logic App, a pipeline); empty: none. It holds a secret, hence @secure().')
@secure()
param alertWebhookUrl string = ''

@description('Resource ids of existing action groups told when an alert fires and when it resolves.')
param alertActionGroupIds array = []

@description('Severity of the refresh-failure alert, 0 (critical) to 4 (verbose); the other alerts have the severities of the README\'s alert table.')
@minValue(0)
@maxValue(4)
param alertSeverity int = 2

param tags object = {}

// namePrefix, checked character by character: @minLength and @maxLength
// cover the length. (A parameter's default cannot refer to a variable, so
// appName's default uses namePrefix itself; the storage account, which
// the function app waits for, fails first.) fail() stops the deployment
// with its message: Bicep v0.33 and later (Azure/bicep#15958), documented at
// https://learn.microsoft.com/azure/azure-resource-manager/bicep/bicep-functions-flow-control.
var namePrefixAllowedChars = 'abcdefghijklmnopqrstuvwxyz0123456789'
var namePrefixBadChars = filter(map(range(0, length(namePrefix)), i => substring(namePrefix, i, 1)), c => !contains(namePrefixAllowedChars, c))
var validNamePrefix = empty(namePrefixBadChars) ? namePrefix : fail('namePrefix may hold only lower-case letters a-z and digits 0-9, since the storage account name is built from it')

// App Service authentication with an empty client id or principal would
// answer 401 or 403 to every call, so the deployment stops instead, naming
// the parameter. The module gets these values only, so it is never deployed
// half-configured.
var checkedAuthClientId = enableAppServiceAuth && empty(authClientId) ? fail('authClientId is empty, but enableAppServiceAuth is true: give the client id of the app registration that represents this app (infra/README.md, "App Service authentication"), or set enableAppServiceAuth to false') : authClientId
var checkedAdfPrincipalId = enableAppServiceAuth && empty(adfPrincipalId) ? fail('adfPrincipalId is empty, but enableAppServiceAuth is true: give the object id of Data Factory\'s managed identity (az datafactory show --query identity.principalId), or set enableAppServiceAuth to false') : adfPrincipalId

var suffix = uniqueString(resourceGroup().id)
// Storage account names allow only lower-case letters and digits.
var storageAccountName = take(toLower(replace('st${validNamePrefix}${suffix}', '-', '')), 24)
var keyVaultName = take('kv-${validNamePrefix}-${suffix}', 24)

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
    assertionSigners: assertionSigners
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    workspaceName: 'log-${validNamePrefix}-${suffix}'
    appInsightsName: 'appi-${validNamePrefix}-${suffix}'
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'function-app'
  params: {
    planName: 'plan-${validNamePrefix}-${suffix}'
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
    authClientId: checkedAuthClientId
    authAllowedAudiences: authAllowedAudiences
    adfPrincipalId: checkedAdfPrincipalId
    adfApplicationId: adfApplicationId
    statusPageGroupId: statusPageGroupId
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
    signsAssertions: !empty(assertionSigners)
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    tags: tags
    appInsightsName: monitoring.outputs.appInsightsName
    namePrefix: 'alert-${validNamePrefix}'
    severity: alertSeverity
    emailAddresses: alertEmailAddresses
    webhookUrl: alertWebhookUrl
    actionGroupIds: alertActionGroupIds
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  params: {
    location: location
    tags: tags
    appInsightsName: monitoring.outputs.appInsightsName
    displayName: 'tokenrefresher (${appName})'
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

@description('The redirect URI to register at each provider for the consent link (functions/consent-callback).')
output consentRedirectUri string = 'https://${functionApp.outputs.defaultHostName}/api/consent/callback'

@description('Whether App Service authentication guards the token route: the Entra token of adfPrincipalId is then required besides the function key.')
output appServiceAuthEnabled bool = enableAppServiceAuth

@description('Paths App Service authentication lets through without a token; function or admin keys alone guard them. Empty when it is off.')
output authExcludedPaths array = functionApp.outputs.authExcludedPaths

@description('Where an operator of statusPageGroupId signs in to the status page; empty when nobody signs in (no App Service authentication or no statusPageGroupId).')
output statusPageSignInUrl string = enableAppServiceAuth && !empty(statusPageGroupId) ? 'https://${functionApp.outputs.defaultHostName}/.auth/login/aad?post_login_redirect_uri=/api/operator/status' : ''

// What registering a connection without a client secret needs (infra/README.md,
// "Connections without a client secret").
@description('Key id of each key in assertionSigners, in order: handler key CONNECTION prints its public key for the provider.')
output signingKeyIds array = keyVault.outputs.signingKeyIds
@description('Issuer of the federated identity credential an app registration adds to trust this app\'s managed identity (clientAuth managedIdentity).')
output federatedCredentialIssuer string = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
@description('Subject of that federated identity credential: the user-assigned identity\'s object id. Empty with the system-assigned identity, which Entra ID does not accept as a federated credential.')
output federatedCredentialSubject string = useUserAssignedIdentity ? runtimePrincipalId : ''
@description('Audience of that federated identity credential.')
output federatedCredentialAudience string = 'api://AzureADTokenExchange'
