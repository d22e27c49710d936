// Log Analytics workspace and the workspace-based Application Insights the
// Functions host reports to (requests, the handler's logs, the timer's
// invocation logs). The refresh-failure alert queries it (alerts.bicep).

param workspaceName string
param appInsightsName string
param location string
param tags object

@description('Days the workspace keeps logs.')
@minValue(30)
@maxValue(730)
param retentionInDays int

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    // Telemetry is accepted only with an Entra ID token: the host signs it
    // with the app's managed identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING
    // and Monitoring Metrics Publisher), so the instrumentation key in the
    // connection string cannot be used to send forged telemetry.
    DisableLocalAuth: true
  }
}

output appInsightsName string = appInsights.name
output workspaceName string = workspace.name
