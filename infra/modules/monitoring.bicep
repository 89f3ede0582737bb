// Log Analytics workspace and the workspace-based Application Insights component: the apps send
// telemetry to Application Insights, the Container Apps environment sends console logs to the workspace,
// and Service Bus the metrics its diagnostic setting can export (not the dead-letter count: the
// workbook and the alert read that from Azure Monitor metrics).

@description('Name of the Log Analytics workspace.')
param workspaceName string

@description('Name of the Application Insights component.')
param appInsightsName string

@description('Region of both resources.')
param location string

@description('Tags for both resources.')
param tags object

@minValue(30)
@maxValue(730)
@description('Days the workspace keeps logs and telemetry.')
param retentionInDays int

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
  }
}

output workspaceId string = workspace.id
output workspaceName string = workspace.name
output appInsightsId string = appInsights.id
output appInsightsName string = appInsights.name
// Not a credential (it names where to send telemetry), but the apps still receive it as a secret.
output appInsightsConnectionString string = appInsights.properties.ConnectionString
