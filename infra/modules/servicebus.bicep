// Service Bus namespace and the job queue. The worker receives with sessions (sessionId = project) so
// one project never deploys twice at once; the API's message id `<deploymentId>:<attempt>` plus
// duplicate detection absorbs a double publish; three deliveries, then the dead-letter queue.

import { roleGrant } from '../types.bicep'

@description('Namespace name: 6-50 characters, globally unique.')
param name string

@description('Region of the namespace.')
param location string

@description('Tags for the namespace.')
param tags object

@allowed([
  'Standard'
  'Premium'
])
@description('Tier: Standard is the smallest with sessions and duplicate detection (Basic has neither).')
param sku string

@description('Name of the job queue (AZURE_SERVICE_BUS_QUEUE).')
param queueName string

@description('ISO 8601 duration of a message lock; the worker renews it while an attempt runs, so it only bounds how long a crashed worker holds a job.')
param lockDuration string = 'PT1M'

@description('ISO 8601 window in which a second message with the same id is dropped. It must cover the outbox reconciler\'s republish delay; the worker\'s back-off messages need ids of their own.')
param duplicateDetectionWindow string = 'PT10M'

@description('ISO 8601 time a job may wait in the queue before it is dead-lettered.')
param messageTimeToLive string = 'P1D'

@description('Resource id of the Log Analytics workspace that receives the namespace metrics diagnostic settings can export (AzureMetrics, for ad hoc queries; no tile or alert reads them).')
param workspaceId string

@description('Roles granted on the queue (not the namespace): the identities touch nothing else.')
param grants roleGrant[]

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  // Premium is sold in messaging units; Standard has no capacity.
  sku: sku == 'Premium' ? { name: sku, tier: sku, capacity: 1 } : { name: sku, tier: sku }
  properties: {
    // Entra ID only: no SAS keys exist that could bypass the role assignments below.
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = {
  parent: namespace
  name: queueName
  properties: {
    requiresSession: true
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    maxDeliveryCount: 3
    lockDuration: lockDuration
    defaultMessageTimeToLive: messageTimeToLive
    deadLetteringOnMessageExpiration: true
    maxSizeInMegabytes: 1024
    enablePartitioning: false
  }
}

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for grant in grants: {
    name: guid(queue.id, grant.principalId, grant.roleDefinitionId)
    scope: queue
    properties: {
      principalId: grant.principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grant.roleDefinitionId)
      description: grant.description
    }
  }
]

// Diagnostic settings export only the metrics Microsoft marks "DS Export: Yes" (message and request
// counts such as IncomingMessages, CompleteMessage, AbandonMessage), and without their dimensions, so
// AzureMetrics cannot tell deployment-queue from any other entity. DeadletteredMessages, ActiveMessages,
// Messages and Size are "No": the dead-letter tile and alert read the platform metric itself.
// https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-servicebus-namespaces-metrics
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: namespace
  properties: {
    workspaceId: workspaceId
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output id string = namespace.id
output name string = namespace.name
// https://<name>.servicebus.windows.net:443/ -> <name>.servicebus.windows.net (right in every cloud).
output fullyQualifiedName string = split(split(namespace.properties.serviceBusEndpoint, '//')[1], ':')[0]
output queueName string = queue.name
