// What the worker needs on two shared resources when it deploys an app: on the managed environment,
// join it, read it (the runtime's health check and custom-domain validation) and manage its managed
// certificates (custom domains); on the apps identity, assign it to the app. Assigned on those two
// resources only, so the worker cannot attach any other identity (the API's, its own) to what it
// deploys, nor use another environment.

targetScope = 'resourceGroup'

@description('Object id of the worker identity.')
param workerPrincipalId string

@description('Name of the Container Apps managed environment (this resource group).')
param environmentName string

@description('Name of the identity deployed apps run as (this resource group).')
param appsIdentityName string

resource role 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'zepid-deploy-worker-environment-and-identity')
  properties: {
    roleName: 'Zepid Deploy worker: environment and apps identity (${uniqueString(resourceGroup().id)})'
    description: 'Join and read the Container Apps environment and manage its managed certificates; assign the apps identity to deployed apps. Assigned on those two resources only.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.App/managedEnvironments/join/action'
          'Microsoft.App/managedEnvironments/read'
          'Microsoft.App/managedEnvironments/managedCertificates/*'
          'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action'
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

// Role definitions live at subscription level whatever scope created them; assignments want that id.
var roleDefinitionId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.name)

resource managedEnvironment 'Microsoft.App/managedEnvironments@2025-01-01' existing = {
  name: environmentName
}

resource appsIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: appsIdentityName
}

resource joinEnvironment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(managedEnvironment.id, workerPrincipalId, role.name)
  scope: managedEnvironment
  properties: {
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roleDefinitionId
    description: 'Worker: deploys apps into this environment and manages their custom-domain certificates.'
  }
}

resource assignAppsIdentity 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appsIdentity.id, workerPrincipalId, role.name)
  scope: appsIdentity
  properties: {
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roleDefinitionId
    description: 'Worker: gives deployed apps this identity (AcrPull, Key Vault Secrets User).'
  }
}
