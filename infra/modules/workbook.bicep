// The "Zepid Deploy" Application Insights workbook: deployments per hour, success rate, step
// durations, failures by error code, queue wait and the dead-letter count. The layout lives in
// infra/workbooks/deployments.workbook.json so it can be edited in the portal and pasted back.

@description('Region of the workbook.')
param location string

@description('Tags for the workbook.')
param tags object

@description('Display name in the portal.')
param displayName string

@description('Resource id of the Application Insights component (the workbook\'s home and the source of customEvents and customMetrics).')
param appInsightsId string

@description('Resource id of the Log Analytics workspace holding the Service Bus metrics (AzureMetrics).')
param workspaceId string

var serialized = replace(
  replace(loadTextContent('../workbooks/deployments.workbook.json'), '__APP_INSIGHTS_ID__', appInsightsId),
  '__WORKSPACE_ID__',
  workspaceId
)

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // Workbook names must be GUIDs; a stable one keeps redeployments updating the same workbook.
  name: guid(resourceGroup().id, appInsightsId, 'zepid-deploy-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: serialized
  }
}

output id string = workbook.id
