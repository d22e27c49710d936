// The Flex Consumption plan and the function app running the Go custom
// handler, with its app settings and, optionally, App Service authentication
// in front of it.

param planName string

@description('Function app name: 2-60 letters, digits and hyphens, not starting or ending with a hyphen.')
@minLength(2)
@maxLength(60)
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

// App settings are strings: ARM refuses a number or a bool in
// Microsoft.Web/sites/config 'appsettings'. The type says so at compile time
// (user-defined types, "*" for every further property:
// https://learn.microsoft.com/azure/azure-resource-manager/bicep/user-defined-data-types).
type stringMap = { *: string }

@description('Further handler settings (PROVIDER_TIMEOUT, LOCK_WAIT, LOG_LEVEL, ...), see README.md. Values are strings.')
param handlerSettings stringMap = {}

// 1-1000: "The lowest maximum scale is currently 1. The highest currently
// supported value is 1000." (flex-consumption-plan.md, Considerations,
// https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan#considerations).
@description('Most instances the app scales out to, 1-1000.')
@minValue(1)
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

@description('Object id of the Entra group whose members may sign in to the status page (/api/operator/status); empty: nobody signs in.')
param statusPageGroupId string = ''

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
    // No ftpsState here: ARM refuses it on Flex Consumption sites (error
    // 51021, "The following site configuration property
    // (Site.SiteConfig.FtpsState) for Flex Consumption sites is invalid";
    // microsoft/azure-pipelines-tasks#21032). FTP and SCM basic
    // authentication are turned off below instead.
    siteConfig: {
      minTlsVersion: '1.2'
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

// No publishing with a user name and password: FTP and the SCM (Kudu)
// endpoint accept only Entra ID. Deployment to Flex goes to the blob
// container through the identity-authenticated OneDeploy endpoint.
// https://learn.microsoft.com/azure/templates/microsoft.web/2024-04-01/sites/basicpublishingcredentialspolicies-ftp
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
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

// CONNECTIONS_BLOB in handlerSettings moves the connections file into a
// blob of the lock container, re-read when it changes (README.md,
// "Connections in a blob"); the handler refuses to start with both it and
// CONNECTIONS, so the inline file is left out then.
var connectionsSetting = contains(handlerSettings, 'CONNECTIONS_BLOB') ? {} : {
  CONNECTIONS: string(connections)
}

// handlerSettings come first, so they can tune the handler but not redirect
// its vault, its storage or its identity.
// The operators' group (functions/operator.go): the handler admits its
// members to the signed-in status page and, since the policy below lets
// them reach every route, serves the token route to Data Factory alone.
var operatorSettings = enableAppServiceAuth && !empty(statusPageGroupId) ? {
  STATUS_PAGE_GROUP: statusPageGroupId
  TOKEN_CALLERS: adfPrincipalId
} : {}

var appSettings = union(handlerSettings, connectionsSetting, operatorSettings, {
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

// App Service authentication in front of the token route: only tokens
// issued to Data Factory's managed identity for this app's API get through
// (401 without a token, 403 for another identity), and the platform passes
// the caller's object id on in X-MS-CLIENT-PRINCIPAL-ID, which the handler
// checks against each connection's allowedCallers. The platform sets
// WEBSITE_AUTH_ENABLED itself. The functions keep their authLevel, so the
// token route needs the function key as well.
//
// Every other route is excluded, because no Entra token can reach it:
//   - /api/consent/callback: the provider's redirect of the operator's
//     browser carries a code and a state, never a token for this API;
//   - /api/consent/{connection}: a consent link opened in the business
//     owner's browser (anonymous, guarded by the link's ticket), and
//     Return401 has no login page to send a browser to;
//   - /api/connections, /api/connections/{connection}, .../refresh and
//     .../consent-link: operators' routes, guarded by the function or admin
//     key alone.
//   - /api/status and /api/status/*: the status page and its buttons, an
//     operator's browser with the admin key as ?code= (Return401 would send
//     it to no login page).
// Not excluded: /api/operator/status and /api/operator/status/*, the
// signed-in status page (anonymous at the host, so that this sign-in and
// not a key guards it): an operator signs in at
// /.auth/login/aad?post_login_redirect_uri=/api/operator/status
// (https://learn.microsoft.com/azure/app-service/configure-authentication-customize-sign-in-out),
// and the handler wants membership of statusPageGroupId in
// X-MS-CLIENT-PRINCIPAL (functions/operator.go says what it relies on).
// unauthenticatedClientAction is one setting for every path
// (globalValidation: "The action to take when an unauthenticated client
// attempts to access the app",
// https://learn.microsoft.com/azure/templates/microsoft.web/sites/config-authsettingsv2),
// and stays Return401 for Data Factory's calls.
// excludedPaths takes exact paths and "<prefix>/*" wildcards
// (configure-authentication-file-based.md, "Configuration file reference":
// "/path1", "/path3/subpath/*";
// https://learn.microsoft.com/azure/app-service/configure-authentication-file-based).
// README.md's "HTTP surface" table lists the authentication of each route;
// TestRouteAuthentication holds this list, the function.json files and that
// table together.
var authExcludedPaths = [
  '/api/connections'
  '/api/connections/*'
  '/api/consent/*'
  '/api/status'
  '/api/status/*'
]

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
      excludedPaths: authExcludedPaths
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
          // An AND of allowedApplications and allowedPrincipals, and
          // allowedPrincipals an OR of identities and groups; failing
          // requests get 403 (configure-authentication-provider-aad, "Use
          // a built-in authorization policy";
          // https://learn.microsoft.com/azure/app-service/configure-authentication-provider-aad).
          // groups ("The list of the allowed groups",
          // https://learn.microsoft.com/azure/templates/microsoft.web/sites/config-authsettingsv2)
          // admits the operators' group beside Data Factory's object id.
          // allowedApplications "evaluates the appid or azp claim of the
          // incoming token, which must be an access token"; an operator's
          // browser session is a sign-in, not an access token for this API,
          // so with operators admitted it is left out, and the handler
          // holds the token route to Data Factory's object id instead
          // (TOKEN_CALLERS).
          defaultAuthorizationPolicy: {
            allowedPrincipals: {
              identities: [
                adfPrincipalId
              ]
              groups: empty(statusPageGroupId) ? null : [
                statusPageGroupId
              ]
            }
            allowedApplications: empty(adfApplicationId) || !empty(statusPageGroupId) ? null : [
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

@description('Paths App Service authentication lets through without a token (empty when it is off).')
output authExcludedPaths array = enableAppServiceAuth ? authExcludedPaths : []
