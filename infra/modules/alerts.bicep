// The alerts of the main README's alert table, one log search rule each
// (log-alert.bicep), and the action group they notify. Every query is a .kql
// file next to this one, read by loadTextContent, so infra/alerts_test.go
// runs the very text deployed here over the log lines the handler writes
// (handler/internal/logsplit/testdata/alert-traces.json) and replays each
// rule's window, threshold and failing periods over failure scenarios: one
// transient 502 fires nothing, a lasting outage fires, and every alert
// resolves when its lines stop.
//
// The handler's lines reach Application Insights as traces rows: category
// Host.Function.Console, the raw JSON line as message, stdout at
// Information, stderr at Error unless the line says "warn", then Warning
// (azure-functions-host WorkerProcess.ParseErrorMessageAndLog and
// OnOutputDataReceived). The queries read fields with parse_json: an ERROR
// line has any "warn" JSON-escaped (handler/internal/logsplit).

param location string
param tags object
param appInsightsName string

@description('Prefix of the rules\' names.')
param namePrefix string

@description('Severity of the refresh-failure alert; the others have fixed severities (README alert table).')
@minValue(0)
@maxValue(4)
param severity int

@description('E-mail addresses to notify; with none and no webhook, no action group is created.')
param emailAddresses array

@description('A webhook to notify (a Teams or Slack workflow, a Logic App, a pipeline) in the common alert schema, on firing and on resolving; empty: none.')
@secure()
param webhookUrl string

@description('Resource ids of existing action groups to notify as well.')
param actionGroupIds array

var ownGroup = !empty(emailAddresses) || !empty(webhookUrl)

resource group 'Microsoft.Insights/actionGroups@2023-01-01' = if (ownGroup) {
  name: '${namePrefix}-tokenrefresher'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'tokenrefresh'
    enabled: true
    emailReceivers: [for (address, i) in emailAddresses: {
      name: 'email-${i}'
      emailAddress: address
      useCommonAlertSchema: true
    }]
    // The common alert schema carries data.essentials.monitorCondition,
    // "Fired" or "Resolved", so one receiver tells failure from recovery
    // (https://learn.microsoft.com/azure/azure-monitor/alerts/alerts-common-schema).
    webhookReceivers: empty(webhookUrl) ? [] : [
      {
        name: 'webhook'
        serviceUri: webhookUrl
        useCommonAlertSchema: true
      }
    ]
  }
}

var notify = concat(actionGroupIds, ownGroup ? [group.id] : [])

// Failures in 3 of the last 4 five-minute windows: a provider outage of ten
// minutes or more (the sweep tries every connection every 5 minutes, so a
// lasting outage shows in every window), not one transient 502 and its ADF
// retries 30 s apart, which reach two windows at most.
module refreshFailures 'log-alert.bicep' = {
  name: 'alert-refresh-failures'
  params: {
    location: location
    tags: tags
    appInsightsName: appInsightsName
    name: '${namePrefix}-refresh-failures'
    displayName: 'tokenrefresher: token refresh failing'
    description: 'A connection\'s token refresh has failed in 3 of the last 4 five-minute windows (HTTP 424/502 from /api/token, token.refresh_failed lines, failed sweep lines). GET /api/connections/{connection} says what to do.'
    severity: severity
    query: loadTextContent('refresh-failures.kql')
    measureColumn: 'failures'
    dimensions: [
      'connection'
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    threshold: 1
    evaluationPeriods: 4
    minFailingPeriods: 3
    actionGroupIds: notify
  }
}

// A permanent failure does not heal by itself: one is enough. The query
// looks at the last hour's refreshes, so the alert resolves on the first
// successful refresh after the fix.
module needsAPerson 'log-alert.bicep' = {
  name: 'alert-needs-a-person'
  params: {
    location: location
    tags: tags
    appInsightsName: appInsightsName
    name: '${namePrefix}-needs-a-person'
    displayName: 'tokenrefresher: a connection needs a person'
    description: 'The provider refused a connection\'s credentials (token.refresh_failed with permanent true): re-authorize it or replace its client secret, as the line\'s remediation says.'
    severity: 1
    query: loadTextContent('needs-a-person.kql')
    measureColumn: 'failures'
    dimensions: [
      'connection'
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT1H'
    threshold: 1
    evaluationPeriods: 1
    minFailingPeriods: 1
    actionGroupIds: notify
  }
}

// secret.expiring comes once at each of 30, 14, 7 and 0 days left; a day's
// window keeps the alert open for a day after each warning.
module clientSecretExpiring 'log-alert.bicep' = {
  name: 'alert-client-secret-expiring'
  params: {
    location: location
    tags: tags
    appInsightsName: appInsightsName
    name: '${namePrefix}-client-secret-expiring'
    displayName: 'tokenrefresher: a client secret expires soon'
    description: 'A connection\'s client secret expires within 30 days (secret.expiring): create a new one at the provider and store it with its expiry date.'
    severity: 3
    query: loadTextContent('client-secret-expiring.kql')
    measureColumn: 'warnings'
    dimensions: [
      'connection'
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'P1D'
    threshold: 1
    evaluationPeriods: 1
    minFailingPeriods: 1
    actionGroupIds: notify
  }
}

// Each of these events is rare and needs a look: one fires. The alert stays
// open an hour after the last one; its resolving says no new event came,
// not that the connection was fixed (the line's remediation says how).
module refreshTokenAtRisk 'log-alert.bicep' = {
  name: 'alert-refresh-token-at-risk'
  params: {
    location: location
    tags: tags
    appInsightsName: appInsightsName
    name: '${namePrefix}-refresh-token-at-risk'
    displayName: 'tokenrefresher: a refresh token is at risk'
    description: 'A rotated refresh token is not in the store (persist.pending, persist.lost), was lost with a killed process (refresh.interrupted_lost), or the standby grant was used or refused (standby.promoted, standby.lost). The line\'s remediation says what to do; the README\'s troubleshooting table explains each.'
    severity: 1
    query: loadTextContent('refresh-token-at-risk.kql')
    measureColumn: 'events'
    dimensions: [
      'connection'
      'event'
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT1H'
    threshold: 1
    evaluationPeriods: 1
    minFailingPeriods: 1
    actionGroupIds: notify
  }
}

// Five in 15 minutes: a storage blip makes one or two.
module lockTrouble 'log-alert.bicep' = {
  name: 'alert-lock-trouble'
  params: {
    location: location
    tags: tags
    appInsightsName: appInsightsName
    name: '${namePrefix}-lock-trouble'
    displayName: 'tokenrefresher: the refresh lock is failing'
    description: 'Leases on the lock blobs are lost or cannot be taken (lock.lost, lock.unavailable): the storage account is unreachable or refusing. Rotating refresh tokens are not redeemed without the lock.'
    severity: 2
    query: loadTextContent('lock-trouble.kql')
    measureColumn: 'events'
    dimensions: []
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    threshold: 5
    evaluationPeriods: 1
    minFailingPeriods: 1
    actionGroupIds: notify
  }
}

output alertIds array = [
  refreshFailures.outputs.id
  needsAPerson.outputs.id
  clientSecretExpiring.outputs.id
  refreshTokenAtRisk.outputs.id
  lockTrouble.outputs.id
]
