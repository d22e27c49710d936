// Reads an existing user-assigned managed identity, so that main.bicep can
// hand its client id to the handler (AZURE_CLIENT_ID) and to the Functions
// host (AzureWebJobsStorage__clientId), and grant roles to its principal.
// Deployed into the identity's own resource group.

@description('Name of the user-assigned managed identity in this resource group.')
param name string

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: name
}

output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
