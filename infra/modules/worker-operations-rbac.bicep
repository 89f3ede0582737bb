// What the worker needs at subscription scope: reading the status of the long-running operations it
// starts. ARM answers a Container Apps or ACI write with an Azure-AsyncOperation/Location URL under
// /subscriptions/<id>/providers/<provider>/locations/<region>/…, not under the resource group, so the
// resource-group roles do not cover the polls (AuthorizationFailed on
// 'Microsoft.App/locations/containerappOperationStatuses/read' over scope '/subscriptions/<id>':
// microsoft/azure-container-apps#215). Reads of operation statuses only: no resource is visible through them.
// Deployed with scope = the subscription; the deploying principal needs rights to create a role there.

targetScope = 'subscription'

@description('Object id of the worker identity.')
param workerPrincipalId string

@description('Resource id of the service\'s resource group: keeps the role of two installations apart.')
param installation string

resource role 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, installation, 'zepid-deploy-worker-operations')
  properties: {
    roleName: 'Zepid Deploy worker: operation statuses (${uniqueString(installation)})'
    description: 'Read the status of Container Apps and Container Instances long-running operations the worker started.'
    type: 'CustomRole'
    permissions: [
      {
        // Action names as Azure's resource provider operations list them (MicrosoftDocs azure-docs,
        // articles/role-based-access-control/permissions/).
        actions: [
          'Microsoft.App/locations/containerappOperationStatuses/read'
          'Microsoft.App/locations/containerappOperationResults/read'
          'Microsoft.App/locations/managedCertificateOperationStatuses/read'
          'Microsoft.ContainerInstance/locations/operations/read'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      subscription().id
    ]
  }
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, installation, workerPrincipalId, role.name)
  properties: {
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: role.id
    description: 'Worker: polls the operations of the builds and deployments it starts.'
  }
}

output roleDefinitionId string = role.id
