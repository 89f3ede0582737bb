// The "Zepid Deploy" Application Insights workbook. The layout lives in
// infra/workbooks/deployments.workbook.json so it can be edited in the portal and pasted back; what
// each tile shows is in docs/operations.md ("Dashboard"). The tiles on Application Insights read the
// events and metrics of packages/core/src/ports/telemetry.ts; the dead-letter tile reads the Service
// Bus namespace's platform metric DeadletteredMessages directly (Azure Monitor metrics, not Log
// Analytics: diagnostic settings do not export that metric, and drop dimensions from those they do).

@description('Region of the workbook.')
param location string

@description('Tags for the workbook.')
param tags object

@description('Display name in the portal.')
param displayName string

@description('Resource id of the Application Insights component (the workbook\'s home and the source of customEvents and customMetrics).')
param appInsightsId string

@description('Resource id of the Service Bus namespace whose DeadletteredMessages metric the dead-letter tile charts.')
param serviceBusNamespaceId string

@description('Name of the job queue: the dead-letter tile filters the metric\'s EntityName dimension to it.')
param queueName string

var serialized = replace(
  replace(
    replace(loadTextContent('../workbooks/deployments.workbook.json'), '__APP_INSIGHTS_ID__', appInsightsId),
    '__SERVICE_BUS_NAMESPACE_ID__',
    serviceBusNamespaceId
  ),
  '__QUEUE_NAME__',
  queueName
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
