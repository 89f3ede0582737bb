// The worker container app: no ingress, scaled by KEDA on the job queue (azure-servicebus scaler
// authenticated with the worker identity), health endpoints on HEALTH_PORT for the probes.
// Every variable set here is read by WorkerEnvSchema (apps/worker/src/env.ts); test/infra checks both ways.

import { azureSettings, containerResources, identityRef } from '../types.bicep'

@description('Container app name (at most 32 characters).')
param name string

@description('Region of the app.')
param location string

@description('Tags for the app; azd-service-name is added so azd deploy finds it.')
param tags object

@description('Resource id of the Container Apps managed environment.')
param environmentId string

@description('Image to run.')
param image string

@description('Whether the image is the public placeholder of a first provisioning (no health endpoints on HEALTH_PORT): the app then has no probes, so its first revision becomes ready.')
param placeholder bool = false

@description('The worker identity: pulls the image, authenticates the scale rule, and is AZURE_CLIENT_ID.')
param identity identityRef

@description('Azure endpoints and ids (the AZURE_* variables).')
param azure azureSettings

@description('Name (not FQDN) of the Service Bus namespace, for the scale rule.')
param serviceBusNamespaceName string

@secure()
@description('Application Insights connection string.')
param appInsightsConnectionString string

@description('CPU and memory of the worker container.')
param resources containerResources

@minValue(0)
@maxValue(30)
@description('Minimum replicas. One by default: the worker also sweeps deployments past their timeout and records heartbeats, which needs a running replica even when the queue is empty.')
param minReplicas int

@minValue(1)
@maxValue(30)
@description('Maximum replicas.')
param maxReplicas int

@minValue(1)
@maxValue(100)
@description('MAX_CONCURRENT_DEPLOYMENTS; also the scale rule\'s messages per replica.')
param maxConcurrentDeployments int

@minValue(30)
@maxValue(600)
@description('Seconds between SIGTERM and SIGKILL when a replica is removed: room for the worker to finish or hand back its attempts.')
param terminationGracePeriodSeconds int

@description('LOG_LEVEL.')
param logLevel string

@description('DEPLOYMENT_TIMEOUT_MS.')
param deploymentTimeoutMs int

@description('BUILD_TIMEOUT_MS.')
param buildTimeoutMs int

@description('REVISION_READY_TIMEOUT_MS.')
param revisionReadyTimeoutMs int

@minValue(1)
@maxValue(1000)
@description('KEEP_IMAGES_PER_APP: images (ACR manifests) kept per app for rollback; older ones are deleted.')
param keepImagesPerApp int = 5

// The worker has no ingress; the probes reach its health endpoints on this port (HEALTH_PORT).
var healthPort = 8080

// SHUTDOWN_GRACE_MS: running deployments get the grace period less 10 s to finish; then the worker
// releases them to another delivery and exits before the platform kills it.
var shutdownGraceMs = (terminationGracePeriodSeconds - 10) * 1000

resource app 'Microsoft.App/containerApps@2025-01-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'worker' })
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    environmentId: environmentId
    workloadProfileName: 'Consumption'
    configuration: {
      // One active revision: a new one replaces the old once ready, and the old gets SIGTERM.
      activeRevisionsMode: 'Single'
      registries: [
        {
          server: azure.containerRegistry
          identity: identity.id
        }
      ]
      secrets: [
        {
          name: 'appinsights-connection-string'
          value: appInsightsConnectionString
        }
      ]
    }
    template: {
      terminationGracePeriodSeconds: terminationGracePeriodSeconds
      containers: [
        {
          name: 'worker'
          image: image
          resources: {
            cpu: json(resources.cpu)
            memory: resources.memory
          }
          env: [
            { name: 'DEPLOY_MODE', value: 'azure' }
            { name: 'SECRETS_PROVIDER', value: 'azure' }
            { name: 'BUILDER_PROVIDER', value: 'azure' }
            { name: 'RUNTIME_PROVIDER', value: 'azure' }
            { name: 'LOG_LEVEL', value: logLevel }
            { name: 'DEPLOYMENT_TIMEOUT_MS', value: string(deploymentTimeoutMs) }
            { name: 'OBJECT_UPLOAD_WINDOW_MS', value: '10000' } // the same in API and worker (README)
            { name: 'WEBHOOK_ALLOW_PRIVATE_NETWORKS', value: 'false' }
            { name: 'MAX_CONCURRENT_DEPLOYMENTS', value: string(maxConcurrentDeployments) }
            { name: 'BUILD_TIMEOUT_MS', value: string(buildTimeoutMs) }
            { name: 'REVISION_READY_TIMEOUT_MS', value: string(revisionReadyTimeoutMs) }
            { name: 'KEEP_IMAGES_PER_APP', value: string(keepImagesPerApp) }
            { name: 'HEALTH_PORT', value: string(healthPort) }
            { name: 'SHUTDOWN_GRACE_MS', value: string(shutdownGraceMs) }
            { name: 'AZURE_CLIENT_ID', value: identity.clientId }
            { name: 'AZURE_TENANT_ID', value: azure.tenantId }
            { name: 'AZURE_SUBSCRIPTION_ID', value: azure.subscriptionId }
            { name: 'AZURE_RESOURCE_GROUP', value: azure.resourceGroup }
            { name: 'AZURE_LOCATION', value: azure.location }
            { name: 'AZURE_ARM_ENDPOINT', value: azure.armEndpoint }
            { name: 'AZURE_CONTAINER_REGISTRY', value: azure.containerRegistry }
            { name: 'AZURE_CONTAINER_APPS_ENVIRONMENT_ID', value: azure.containerAppsEnvironmentId }
            { name: 'AZURE_APPS_IDENTITY_ID', value: azure.appsIdentityId }
            { name: 'AZURE_SERVICE_BUS_NAMESPACE', value: azure.serviceBusNamespace }
            { name: 'AZURE_SERVICE_BUS_QUEUE', value: azure.serviceBusQueue }
            // Must match the queue's lockDuration (PT1M) and maxDeliveryCount (3) in servicebus.bicep.
            { name: 'AZURE_SERVICE_BUS_LOCK_DURATION_MS', value: '60000' }
            { name: 'AZURE_SERVICE_BUS_MAX_DELIVERY_COUNT', value: '3' }
            { name: 'AZURE_STORAGE_ACCOUNT_URL', value: azure.storageAccountUrl }
            { name: 'AZURE_COSMOS_ENDPOINT', value: azure.cosmosEndpoint }
            { name: 'AZURE_COSMOS_DATABASE', value: azure.cosmosDatabase }
            { name: 'AZURE_COSMOS_CONTAINER', value: azure.cosmosContainer }
            { name: 'AZURE_COSMOS_TTL_DAYS', value: string(azure.cosmosTtlDays) }
            { name: 'AZURE_KEY_VAULT_URI', value: azure.keyVaultUri }
            { name: 'AZURE_KEY_VAULT_VERIFY_CHALLENGE_RESOURCE', value: 'true' }
            // The storage account lives in this (the service's) resource group, whatever the target group of apps.
            { name: 'AZURE_STORAGE_RESOURCE_GROUP', value: resourceGroup().name }
            { name: 'AZURE_POLL_INTERVAL_MS', value: '2000' }
            { name: 'AZURE_EVENTS_POLL_MS', value: '1000' }
            { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', secretRef: 'appinsights-connection-string' }
            { name: 'BUILD_CONTAINER_CPU', value: azure.buildContainerCpu }
            { name: 'BUILD_CONTAINER_MEMORY', value: azure.buildContainerMemory }
            { name: 'KANIKO_IMAGE', value: azure.kanikoImage }
          ]
          probes: placeholder ? [] : [
            {
              type: 'Startup'
              httpGet: {
                path: '/health/live'
                port: healthPort
              }
              periodSeconds: 2
              failureThreshold: 30
            }
            {
              type: 'Liveness'
              httpGet: {
                path: '/health/live'
                port: healthPort
              }
              periodSeconds: 10
              failureThreshold: 3
            }
            {
              type: 'Readiness'
              httpGet: {
                path: '/health/ready'
                port: healthPort
              }
              periodSeconds: 10
              failureThreshold: 3
            }
          ]
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: [
          {
            name: 'deployment-queue'
            custom: {
              // KEDA's scaler reads the queue's message count; one replica per
              // MAX_CONCURRENT_DEPLOYMENTS waiting jobs.
              type: 'azure-servicebus'
              metadata: {
                queueName: azure.serviceBusQueue
                namespace: serviceBusNamespaceName
                messageCount: string(maxConcurrentDeployments)
              }
              identity: identity.id
            }
          }
        ]
      }
    }
  }
}

output id string = app.id
output name string = app.name
output latestRevisionName string = app.properties.latestRevisionName
