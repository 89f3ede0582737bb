// The API container app: external HTTPS ingress, probes on the health endpoints, at least one
// replica (clients poll status; a cold start would time them out), scaled on concurrent requests.
// Every variable set here is read by ApiEnvSchema (apps/api/src/env.ts); test/infra checks both ways.

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

@description('Whether the image is the public placeholder of a first provisioning (port 80, no health endpoints): ingress then targets port 80 and the app has no probes, so its first revision becomes ready.')
param placeholder bool = false

@description('The API identity: pulls the image, reads its tokens from Key Vault, and is AZURE_CLIENT_ID.')
param identity identityRef

@description('Azure endpoints and ids (the AZURE_* variables).')
param azure azureSettings

@secure()
@description('Application Insights connection string.')
param appInsightsConnectionString string

@description('Name of the Key Vault secret holding DEPLOY_API_TOKENS.')
param apiTokensSecretName string

@description('CPU and memory of the API container.')
param resources containerResources

@minValue(1)
@maxValue(30)
@description('Minimum replicas; at least one so status polling never waits for a cold start.')
param minReplicas int

@minValue(1)
@maxValue(30)
@description('Maximum replicas.')
param maxReplicas int

@minValue(1)
@description('Concurrent requests per replica before another replica is added.')
param concurrentRequests int

@description('LOG_LEVEL.')
param logLevel string

@description('DEPLOYMENT_TIMEOUT_MS.')
param deploymentTimeoutMs int

@description('MAX_ACTIVE_DEPLOYMENTS_PER_ORG.')
param maxActiveDeploymentsPerOrg int

@description('RATE_LIMIT_PER_MINUTE.')
param rateLimitPerMinute int

@description('RETENTION_DAYS: default age for POST /status/cleanup.')
param retentionDays int

// The port the API listens on (PORT) and the probes and ingress use.
var port = 3010
// The placeholder (containerapps-helloworld) listens on 80 and answers no /health path.
var ingressPort = placeholder ? 80 : port

resource app 'Microsoft.App/containerApps@2025-01-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
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
      // Multiple: the previous revision stays available for a traffic split or an instant rollback
      // (docs/operations.md); deploy.yml deactivates older ones.
      activeRevisionsMode: 'Multiple'
      maxInactiveRevisions: 20
      ingress: {
        external: true
        targetPort: ingressPort
        transport: 'auto'
        allowInsecure: false
        traffic: [
          {
            latestRevision: true
            weight: 100
          }
        ]
      }
      registries: [
        {
          server: azure.containerRegistry
          identity: identity.id
        }
      ]
      secrets: [
        {
          // Resolved by Container Apps with the API identity (Key Vault Secrets Officer), never stored in the app.
          name: 'deploy-api-tokens'
          keyVaultUrl: '${azure.keyVaultUri}secrets/${apiTokensSecretName}'
          identity: identity.id
        }
        {
          name: 'appinsights-connection-string'
          value: appInsightsConnectionString
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'api'
          image: image
          resources: {
            cpu: json(resources.cpu)
            memory: resources.memory
          }
          env: [
            { name: 'DEPLOY_MODE', value: 'azure' }
            { name: 'SECRETS_PROVIDER', value: 'azure' }
            { name: 'LOG_LEVEL', value: logLevel }
            { name: 'DEPLOYMENT_TIMEOUT_MS', value: string(deploymentTimeoutMs) }
            { name: 'OBJECT_UPLOAD_WINDOW_MS', value: '10000' } // the same in API and worker (README)
            { name: 'WEBHOOK_ALLOW_PRIVATE_NETWORKS', value: 'false' }
            { name: 'PORT', value: string(port) }
            { name: 'HOST', value: '0.0.0.0' }
            { name: 'DEPLOY_API_TOKENS', secretRef: 'deploy-api-tokens' }
            { name: 'MAX_ACTIVE_DEPLOYMENTS_PER_ORG', value: string(maxActiveDeploymentsPerOrg) }
            { name: 'RATE_LIMIT_PER_MINUTE', value: string(rateLimitPerMinute) }
            { name: 'SSE_MAX_STREAMS_PER_TOKEN', value: '20' }
            { name: 'SSE_MAX_STREAMS', value: '1000' }
            { name: 'SSE_RESYNC_MS', value: '5000' }
            { name: 'SSE_LEASE_TTL_MS', value: '60000' }
            { name: 'RETENTION_DAYS', value: string(retentionDays) }
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
              // Startup gives adapters time to connect before liveness may restart the replica.
              type: 'Startup'
              httpGet: {
                path: '/health/live'
                port: port
              }
              periodSeconds: 2
              failureThreshold: 30
            }
            {
              type: 'Liveness'
              httpGet: {
                path: '/health/live'
                port: port
              }
              periodSeconds: 10
              failureThreshold: 3
            }
            {
              // Out of the load balancer while the store or queue is unreachable, without a restart.
              type: 'Readiness'
              httpGet: {
                path: '/health/ready'
                port: port
              }
              periodSeconds: 5
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
            name: 'http-concurrency'
            http: {
              metadata: {
                concurrentRequests: string(concurrentRequests)
              }
            }
          }
        ]
      }
    }
  }
}

output id string = app.id
output name string = app.name
output fqdn string = app.properties.configuration.ingress.fqdn
output latestRevisionName string = app.properties.latestRevisionName
