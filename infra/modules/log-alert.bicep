// One log search alert rule on Application Insights. alerts.bicep declares
// one per condition of the main README's alert table, each with its query
// (a .kql file it loads, which infra/alerts_test.go runs over the log lines
// the handler writes) and the window, threshold and failing periods that
// keep it quiet on a single transient failure.
//
// Properties: https://learn.microsoft.com/azure/templates/microsoft.insights/2023-12-01/scheduledqueryrules
// - failingPeriods: "The minimum number of violations required within the
//   selected lookback time window required to raise an alert. Relevant only
//   for rules of the kind LogAlert." With windowSize equal to
//   evaluationFrequency the windows do not overlap, so one event counts in
//   one evaluation only.
// - autoMitigate: "The flag that indicates whether the alert should be
//   automatically resolved or not. The default is true. Relevant only for
//   rules of the kind LogAlert." (https://learn.microsoft.com/rest/api/monitor/scheduledqueryrules/update).
//   A resolved alert notifies its action groups again, with
//   data.essentials.monitorCondition "Resolved" in the common alert schema
//   (https://learn.microsoft.com/azure/azure-monitor/alerts/alerts-common-schema):
//   the recovery message.

param location string
param tags object
param appInsightsName string
param name string
param displayName string
param description string

@minValue(0)
@maxValue(4)
param severity int

@description('The KQL query; it ends in a summarize that yields measureColumn, split by dimensions.')
param query string
param measureColumn string

@description('Columns of the query to split by: one alert per value.')
param dimensions array

@description('ISO 8601 duration: how often the rule runs.')
param evaluationFrequency string

@description('ISO 8601 duration: how far back each run looks.')
param windowSize string

@minValue(1)
param threshold int

@description('Of the last evaluationPeriods runs, minFailingPeriods must exceed the threshold for the alert to fire.')
@minValue(1)
@maxValue(6)
param evaluationPeriods int

@minValue(1)
@maxValue(6)
param minFailingPeriods int

param actionGroupIds array

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource rule 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: name
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: displayName
    description: description
    severity: severity
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: evaluationFrequency
    windowSize: windowSize
    criteria: {
      allOf: [
        {
          query: query
          timeAggregation: 'Total'
          metricMeasureColumn: measureColumn
          dimensions: [for d in dimensions: {
            name: d
            operator: 'Include'
            values: [
              '*'
            ]
          }]
          operator: 'GreaterThanOrEqual'
          threshold: threshold
          failingPeriods: {
            numberOfEvaluationPeriods: evaluationPeriods
            minFailingPeriodsToAlert: minFailingPeriods
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroupIds
    }
  }
}

output id string = rule.id
