// The operators' workbook on Application Insights: connections by state,
// refreshes and failures per connection over time, failures by category,
// the token route's latency percentiles, client secrets expiring in the
// next 30 days; refresh and token-endpoint latency percentiles from the
// handler's log lines (traces: the metric export has no buckets); and the
// handler's own metrics (customMetrics): refresh latency per connection,
// refreshes by outcome, token-endpoint latency, tokens served by source
// (cache hits), lock waits, token age at answer and store errors.
//
// The layout is workbook/workbook.json (query items carry an empty query
// and a name); each query is workbook/<name>.kql, put into its item here.
// infra/workbook_test.go reads the same two and runs every query over the
// log lines the handler writes, and checks every metric a query reads is
// one the handler emits, with the dimensions it sets. Workbook properties:
// https://learn.microsoft.com/azure/templates/microsoft.insights/2023-06-01/workbooks
// (name a GUID; kind shared; serializedData the workbook JSON as a string).
// A ternary compiles to ARM's if(), which evaluates only the branch taken
// (https://learn.microsoft.com/azure/azure-resource-manager/templates/template-functions-logical#if),
// so queries[item.name] is read for query items only.

param location string
param tags object
param appInsightsName string
param displayName string

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

var layout = loadJsonContent('workbook/workbook.json')

var queries = {
  'connections-by-state': loadTextContent('workbook/connections-by-state.kql')
  'refreshes-over-time': loadTextContent('workbook/refreshes-over-time.kql')
  'failures-by-category': loadTextContent('workbook/failures-by-category.kql')
  'token-latency': loadTextContent('workbook/token-latency.kql')
  'secrets-expiring': loadTextContent('workbook/secrets-expiring.kql')
  'refresh-latency': loadTextContent('workbook/refresh-latency.kql')
  'refreshes-by-outcome': loadTextContent('workbook/refreshes-by-outcome.kql')
  'refresh-percentiles': loadTextContent('workbook/refresh-percentiles.kql')
  'refresh-percentiles-by-connection': loadTextContent('workbook/refresh-percentiles-by-connection.kql')
  'token-endpoint-percentiles': loadTextContent('workbook/token-endpoint-percentiles.kql')
  'token-endpoint-latency': loadTextContent('workbook/token-endpoint-latency.kql')
  'tokens-served': loadTextContent('workbook/tokens-served.kql')
  'lock-waits': loadTextContent('workbook/lock-waits.kql')
  'token-age': loadTextContent('workbook/token-age.kql')
  'store-errors': loadTextContent('workbook/store-errors.kql')
}

var items = [for item in layout.items: item.type == 3 ? union(item, { content: union(item.content, { query: queries[item.name] }) }) : item]

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, appInsightsName, 'tokenrefresher-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: appInsights.id
    serializedData: string(union(layout, {
      items: items
      fallbackResourceIds: [
        appInsights.id
      ]
    }))
  }
}

output id string = workbook.id
