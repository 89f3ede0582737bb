// What the worker may do in the resource group where it builds and deploys (AZURE_RESOURCE_GROUP):
// create, read, update and delete ACI container groups (kaniko builds) and Container Apps (the
// deployed projects). A custom role, because the built-in Contributor roles reach far beyond that.
// Deployed with scope = that resource group.

targetScope = 'resourceGroup'

@description('Object id of the worker identity.')
param workerPrincipalId string

resource role 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'zepid-deploy-worker-builds-and-apps')
  properties: {
    // Role names are unique per tenant: the resource group id keeps two installations apart.
    roleName: 'Zepid Deploy worker: builds and apps (${uniqueString(resourceGroup().id)})'
    description: 'Manage ACI container groups (kaniko builds) and Container Apps (deployed projects) in ${resourceGroup().name}; nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.ContainerInstance/containerGroups/*'
          'Microsoft.App/containerApps/*'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, workerPrincipalId, role.name)
  properties: {
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
    // Role definitions live at subscription level whatever scope created them; assignments want that id.
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.name)
    description: 'Worker: creates build container groups and deploys apps here.'
  }
}

output roleDefinitionId string = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.name)
