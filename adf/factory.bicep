// The ADF kit deployed into an existing data factory: its linked services,
// datasets and pipelines, read from the kit's own JSON files (the ones a
// factory's Git integration reads), with the deployment's values put in
// place of the placeholders. adf/adf_test.go checks that every kit file is
// deployed here, once, under its name.
//
//   az deployment group create -g <adf-rg> -f adf/factory.bicep \
//     -p factoryName=<factory> functionAppHost=<defaultHostName output> \
//        factoryKeyVaultUrl=https://<vault>.vault.azure.net/
//
// Resource types: Microsoft.DataFactory/factories/linkedservices, /datasets
// and /pipelines, API 2018-06-01, each { name, properties } where properties
// is what the kit's file holds under "properties"
// (https://learn.microsoft.com/azure/templates/microsoft.datafactory/factories/linkedservices,
// .../factories/datasets, .../factories/pipelines). Data Factory checks a
// reference when the resource is created, so datasets wait for linked
// services and pipelines for both.

@description('The existing data factory, in this resource group.')
param factoryName string

@description('The function app\'s defaultHostName deployment output, without https://.')
param functionAppHost string

@description('The factory\'s Key Vault that holds the function key, https://<vault>.vault.azure.net/ with the trailing slash.')
param factoryKeyVaultUrl string

@description('The Key Vault secret holding the function key.')
param functionKeySecretName string = 'tokenrefresher-function-key'

@description('The landing data lake of the Copy example, https://<account>.dfs.core.windows.net/; empty: the placeholder stays.')
param landingAccountUrl string = ''

resource factory 'Microsoft.DataFactory/factories@2018-06-01' existing = {
  name: factoryName
}

var linkedServiceFiles = [
  loadJsonContent('linkedService/FactoryKeyVault.json')
  loadJsonContent('linkedService/TokenRefresherFunction.json')
  loadJsonContent('linkedService/ThirdPartyRestApi.json')
  loadJsonContent('linkedService/LandingDataLake.json')
]

var datasetFiles = [
  loadJsonContent('dataset/ThirdPartyRestResource.json')
  loadJsonContent('dataset/LandingJson.json')
]

var pipelineFiles = [
  loadJsonContent('pipeline/get-token-function-key.json')
  loadJsonContent('pipeline/get-token-azure-function.json')
  loadJsonContent('pipeline/get-token-then-call-api.json')
]

// typeProperties to set, by linked service.
var linkedServiceValues = {
  FactoryKeyVault: {
    baseUrl: factoryKeyVaultUrl
  }
  TokenRefresherFunction: {
    functionAppUrl: 'https://${functionAppHost}'
  }
}

// Parameter defaults to set, where a pipeline declares the parameter.
var pipelineDefaults = union({
  functionAppHost: functionAppHost
  keyVaultUrl: factoryKeyVaultUrl
  functionKeySecretName: functionKeySecretName
}, empty(landingAccountUrl) ? {} : {
  landingAccountUrl: landingAccountUrl
})

// A ternary compiles to ARM's if(), which evaluates only the branch taken
// (https://learn.microsoft.com/azure/azure-resource-manager/templates/template-functions-logical#if).
resource linkedServices 'Microsoft.DataFactory/factories/linkedservices@2018-06-01' = [for f in linkedServiceFiles: {
  parent: factory
  name: f.name
  properties: contains(linkedServiceValues, f.name) ? union(f.properties, {
    typeProperties: union(f.properties.typeProperties, linkedServiceValues[f.name])
  }) : f.properties
}]

resource datasets 'Microsoft.DataFactory/factories/datasets@2018-06-01' = [for f in datasetFiles: {
  parent: factory
  name: f.name
  properties: f.properties
  dependsOn: [
    linkedServices
  ]
}]

resource pipelines 'Microsoft.DataFactory/factories/pipelines@2018-06-01' = [for f in pipelineFiles: {
  parent: factory
  name: f.name
  properties: union(f.properties, {
    parameters: toObject(items(f.properties.parameters), p => p.key, p => contains(pipelineDefaults, p.key) ? union(p.value, {
      defaultValue: pipelineDefaults[p.key]
    }) : p.value)
  })
  dependsOn: [
    linkedServices
    datasets
  ]
}]

output pipelineNames array = [for f in pipelineFiles: f.name]
