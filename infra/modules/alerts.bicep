// An alert per connection whose token refresh fails. The query
// (refresh-failures.kql) counts three signals, so that one missing channel
// does not hide a failure:
//   - requests: the `token` function answered 424 (the provider rejected the
//     credentials; someone has to act) or 502 (the provider failed after
//     retries);
//   - traces: the handler's JSON log line with event "token.refresh_failed".
//     The handler writes ERROR lines to stderr; the Functions host logs each
//     stderr line of a custom handler at Error (severityLevel 3) under the
//     category Host.Function.Console, with the raw line as the message
//     (WorkerProcess.ParseErrorMessageAndLog, WorkerConsoleLogService). The
//     query reads the connection with parse_json, not a regex: an ERROR line
//     has any "warn" JSON-escaped (handler/internal/logsplit);
//   - traces: the timer sweep's invocation log, "<connection>: refresh failed: ...",
//     which catches refresh tokens dying while no pipeline is running.

param location string
param tags object
param appInsightsName string
param alertName string

@minValue(0)
@maxValue(4)
param severity int

@description('E-mail addresses to notify; empty: no action group is created.')
param emailAddresses array

@description('Resource ids of existing action groups to notify as well.')
param actionGroupIds array

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource emailGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(emailAddresses)) {
  name: '${alertName}-email'
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
  }
}

resource refreshFailures 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: alertName
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'tokenrefresher: token refresh failing'
    description: 'A connection\'s token refresh failed (HTTP 424/502 from /api/token, or a token.refresh_failed log line). The failed ADF activity\'s output, and GET /api/connections/{connection}, say what to do.'
    severity: severity
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: loadTextContent('refresh-failures.kql')
          timeAggregation: 'Total'
          metricMeasureColumn: 'failures'
          dimensions: [
            {
              name: 'connection'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThanOrEqual'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: concat(actionGroupIds, empty(emailAddresses) ? [] : [
        emailGroup.id
      ])
    }
  }
}

output alertId string = refreshFailures.id
