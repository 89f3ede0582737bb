// The Container Apps managed environment: hosts the API, the worker and every app the worker
// deploys; console logs go to the Log Analytics workspace.

@description('Environment name.')
param name string

@description('Region of the environment.')
param location string

@description('Tags for the environment.')
param tags object

@description('Name of the Log Analytics workspace (same resource group) that receives console and system logs.')
param workspaceName string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource managedEnvironment 'Microsoft.App/managedEnvironments@2025-01-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: workspace.properties.customerId
        sharedKey: workspace.listKeys().primarySharedKey
      }
    }
    // A workload-profiles environment with the Consumption profile: pay per use, and dedicated
    // profiles can be added later without recreating the environment.
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
    zoneRedundant: false
  }
}

output id string = managedEnvironment.id
output name string = managedEnvironment.name
output defaultDomain string = managedEnvironment.properties.defaultDomain
