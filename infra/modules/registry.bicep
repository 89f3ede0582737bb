// Azure Container Registry: the service's own images (api, worker), the images kaniko builds for
// deployments, and kaniko's layer cache. Identities only: the admin user stays off.

import { roleGrant } from '../types.bicep'

@description('Registry name: 5-50 alphanumerics, globally unique.')
param name string

@description('Region of the registry.')
param location string

@description('Tags for the registry.')
param tags object

@allowed([
  'Basic'
  'Standard'
  'Premium'
])
@description('Registry SKU; Basic is enough until storage or throughput says otherwise.')
param sku string

@description('Roles granted on the registry (AcrPull, AcrPush).')
param grants roleGrant[]

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
  }
  properties: {
    // No shared admin password to leak or rotate: pulls and pushes use Entra ID tokens.
    adminUserEnabled: false
    publicNetworkAccess: 'Enabled'
  }
}

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for grant in grants: {
    name: guid(registry.id, grant.principalId, grant.roleDefinitionId)
    scope: registry
    properties: {
      principalId: grant.principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grant.roleDefinitionId)
      description: grant.description
    }
  }
]

output id string = registry.id
output name string = registry.name
output loginServer string = registry.properties.loginServer
