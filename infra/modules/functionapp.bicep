// The Flex Consumption plan and the function app running the Go custom
// handler, with its app settings and, optionally, App Service authentication
// in front of it.

param planName string
param appName string
param location string
param tags object

param storageAccountName string
param deploymentContainerName string
param lockContainerName string
param keyVaultUri string
param appInsightsName string

@description('Resource id of a user-assigned identity to run as; empty: the system-assigned identity.')
param userAssignedIdentityResourceId string = ''

@description('Client id of that user-assigned identity.')
param userAssignedIdentityClientId string = ''

@description('The connections file, as an object. Holds names of secrets, never their values.')
param connections object

@description('Further handler settings (PROVIDER_TIMEOUT, LOCK_WAIT, LOG_LEVEL, ...), see README.md.')
param handlerSettings object = {}

@minValue(40)
@maxValue(1000)
param maximumInstanceCount int

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

param enableAppServiceAuth bool = false

@description('Client id of the app registration that represents this function app as an API (the audience of ADF\'s tokens).')
param authClientId string = ''

@description('Audiences accepted besides the app registration\'s client id and api://<client id>.')
param authAllowedAudiences array = []

@description('Object id of Data Factory\'s managed identity: the only principal App Service authentication lets through.')
param adfPrincipalId string = ''

@description('Client (application) id of Data Factory\'s managed identity; empty: not checked.')
param adfApplicationId string = ''

var useUserAssignedIdentity = !empty(userAssignedIdentityResourceId)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: useUserAssignedIdentity ? 'SystemAssigned, UserAssigned' : 'SystemAssigned'
    userAssignedIdentities: useUserAssignedIdentity ? {
      '${userAssignedIdentityResourceId}': {}
    } : null
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: useUserAssignedIdentity ? 'UserAssignedIdentity' : 'SystemAssignedIdentity'
            userAssignedIdentityResourceId: useUserAssignedIdentity ? userAssignedIdentityResourceId : null
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      // A custom handler: host.json starts the Go binary "handler". On Flex
      // the runtime is chosen here; FUNCTIONS_WORKER_RUNTIME is not used.
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
}

// Which identity the host, the handler and the telemetry use. With a
// user-assigned identity all three must be told its client id; otherwise
// they use the system-assigned one.
var identitySettings = useUserAssignedIdentity ? {
  AZURE_CLIENT_ID: userAssignedIdentityClientId
  AzureWebJobsStorage__clientId: userAssignedIdentityClientId
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${userAssignedIdentityClientId};Authorization=AAD'
} : {
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
}

// handlerSettings come first, so they can tune the handler but not redirect
// its vault, its storage or its identity.
var appSettings = union(handlerSettings, {
  CONNECTIONS: string(connections)
  KEY_VAULT_URL: keyVaultUri
  LOCK_CONTAINER: lockContainerName
  // Identity-based host storage. The service URIs rather than __accountName:
  // they also work in sovereign clouds, and the handler takes its blob
  // endpoint (for the lock) from __blobServiceUri.
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  AzureWebJobsStorage__credential: 'managedidentity'
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
}, identitySettings)

resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: appSettings
}

// App Service authentication: only tokens issued to Data Factory's managed
// identity for this app's API get through (403 otherwise), and the platform
// passes the caller's object id on in X-MS-CLIENT-PRINCIPAL-ID, which the
// handler checks against each connection's allowedCallers. The platform sets
// WEBSITE_AUTH_ENABLED itself. The functions keep authLevel "function", so a
// caller needs the function key as well.
resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (enableAppServiceAuth) {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
      runtimeVersion: '~1'
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
    }
    httpSettings: {
      requireHttps: true
      forwardProxy: {
        convention: 'NoProxy'
      }
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
          clientId: authClientId
        }
        validation: {
          allowedAudiences: union([
            'api://${authClientId}'
          ], authAllowedAudiences)
          defaultAuthorizationPolicy: {
            allowedPrincipals: {
              identities: [
                adfPrincipalId
              ]
            }
            allowedApplications: empty(adfApplicationId) ? null : [
              adfApplicationId
            ]
          }
        }
      }
    }
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
output systemAssignedPrincipalId string = site.identity.principalId
