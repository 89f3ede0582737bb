// Zepid Deploy v3 on Azure: everything the API and the worker need, in one resource group, plus the
// worker's rights in the resource group where it builds and deploys projects.
// Deployed by `azd up` (azure.yaml, infra/main.parameters.json) or by .github/workflows/deploy.yml
// (az deployment group create). Operations: docs/operations.md.
//
// Who may do what (least privilege; every grant is listed in this file, with its reason):
//   API identity     Cosmos DB Data Contributor (database), Service Bus Data Sender + Data Owner
//                    on the queue only (GET /status/queue reads counts through the management API),
//                    Storage Blob Data Contributor (it stores sources and reads logs), Key Vault
//                    Secrets Officer (it writes deployment secrets), AcrPull (its own image).
//   worker identity  Service Bus Data Receiver + Sender (it schedules back-off messages) + Data Owner
//                    on the queue only (KEDA's scaler reads the message count through the management
//                    API, which needs Manage rights), Cosmos DB Data Contributor, Storage Blob Data
//                    Contributor + Storage Account Key Operator (kaniko needs the account key),
//                    Key Vault Secrets Officer, AcrPush (kaniko pushes with its token) + AcrDelete
//                    (deletes the images it built), and two custom roles: builds and apps in the
//                    target resource group; on the environment (join, read, managed certificates
//                    for custom domains) and on the apps identity (assign) only.
//   apps identity    AcrPull, Key Vault Secrets User: what a deployed app needs to start.

targetScope = 'resourceGroup'

import { builtInRoles, containerResources } from 'types.bicep'

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Environment name (the azd environment, e.g. prod): it seeds resource names and is tagged azd-env-name.')
param environmentName string

@description('Region of every resource; the resource group\'s by default.')
param location string = resourceGroup().location

@description('Existing resource group where the worker creates build containers and apps (AZURE_RESOURCE_GROUP). Empty or absent: this one. A separate group keeps the worker\'s rights away from the service\'s own container apps.')
param targetResourceGroupName string = ''

@description('API image (registry/repository:tag). Empty: keep the running image, or a public placeholder on the very first provisioning until the real image is pushed.')
param apiImage string = ''

@description('Worker image (registry/repository:tag). Empty: as for apiImage.')
param workerImage string = ''

@description('Whether the API container app exists already (azd sets SERVICE_API_RESOURCE_EXISTS); with an empty apiImage the running image is kept.')
param apiExists bool = false

@description('Whether the worker container app exists already (azd sets SERVICE_WORKER_RESOURCE_EXISTS).')
param workerExists bool = false

@secure()
@description('DEPLOY_API_TOKENS: comma-separated orgId:token pairs (tokens of 16+ characters). Written to the Key Vault secret deploy-api-tokens when given; empty keeps the secret already there. Needed once, before the first deployment.')
param deployApiTokens string = ''

@allowed([
  'serverless'
  'autoscale'
])
@description('Cosmos DB capacity: serverless (pay per request; no idle cost) or autoscale provisioned throughput per container.')
param cosmosCapacityMode string = 'serverless'

@minValue(1000)
@maxValue(1000000)
@description('Maximum RU/s of each Cosmos DB container when cosmosCapacityMode is autoscale.')
param cosmosAutoscaleMaxThroughput int = 1000

@minValue(1)
@maxValue(3650)
@description('AZURE_COSMOS_TTL_DAYS: Cosmos DB deletes finished deployment records this many days after their last write; keep it above retentionDays.')
param cosmosTtlDays int = 30

@allowed([
  'Basic'
  'Standard'
  'Premium'
])
@description('Container Registry SKU.')
param containerRegistrySku string = 'Basic'

@allowed([
  'Standard'
  'Premium'
])
@description('Service Bus tier: Standard is the smallest with sessions and duplicate detection.')
param serviceBusSku string = 'Standard'

@minValue(1)
@maxValue(3650)
@description('Days build contexts are kept in Blob Storage.')
param contextRetentionDays int = 7

@minValue(1)
@maxValue(3650)
@description('Days deployment sources are kept in Blob Storage (a retry needs the source).')
param sourceRetentionDays int = 30

@minValue(1)
@maxValue(3650)
@description('Days deployment logs are kept in Blob Storage.')
param logRetentionDays int = 90

@minValue(30)
@maxValue(730)
@description('Days Log Analytics keeps logs and telemetry.')
param logAnalyticsRetentionDays int = 30

@description('Key Vault purge protection (irreversible once on); recommended for production.')
param keyVaultPurgeProtection bool = false

@description('CPU and memory of the API container.')
param apiResources containerResources = {
  cpu: '0.5'
  memory: '1Gi'
}

@description('CPU and memory of the worker container (it packs build contexts and streams logs).')
param workerResources containerResources = {
  cpu: '1'
  memory: '2Gi'
}

@minValue(1)
@maxValue(30)
@description('Minimum API replicas (at least one: clients poll status).')
param apiMinReplicas int = 1

@minValue(1)
@maxValue(30)
@description('Maximum API replicas.')
param apiMaxReplicas int = 5

@minValue(1)
@maxValue(10000)
@description('Concurrent HTTP requests per API replica before another is added.')
param apiConcurrentRequests int = 50

@minValue(0)
@maxValue(30)
@description('Minimum worker replicas (one keeps the timeout sweep and heartbeats running with an empty queue).')
param workerMinReplicas int = 1

@minValue(1)
@maxValue(30)
@description('Maximum worker replicas the queue scale rule may add.')
param workerMaxReplicas int = 10

@minValue(1)
@maxValue(100)
@description('MAX_CONCURRENT_DEPLOYMENTS per worker replica; also the scale rule\'s waiting jobs per replica.')
param workerMaxConcurrentDeployments int = 5

@minValue(30)
@maxValue(600)
@description('Seconds a worker replica has after SIGTERM (scale-in, new revision) before it is killed; SHUTDOWN_GRACE_MS is this less 10 s.')
param workerTerminationGracePeriodSeconds int = 300

@allowed([
  'fatal'
  'error'
  'warn'
  'info'
  'debug'
  'trace'
  'silent'
])
@description('LOG_LEVEL of both apps.')
param logLevel string = 'info'

@minValue(1000)
@maxValue(86400000)
@description('DEPLOYMENT_TIMEOUT_MS: a deployment ends (failed) when it runs longer.')
param deploymentTimeoutMs int = 600000

@minValue(1)
@maxValue(86400000)
@description('BUILD_TIMEOUT_MS: longest a kaniko build may run.')
param buildTimeoutMs int = 300000

@minValue(1)
@maxValue(3600000)
@description('REVISION_READY_TIMEOUT_MS: longest a deployed revision may take to become healthy.')
param revisionReadyTimeoutMs int = 120000

@allowed([
  '1'
  '2'
  '4'
])
@description('BUILD_CONTAINER_CPU: vCPU of each ACI build container.')
param buildContainerCpu string = '2'

@allowed([
  '2'
  '4'
  '8'
  '16'
])
@description('BUILD_CONTAINER_MEMORY: GB of memory of each ACI build container.')
param buildContainerMemory string = '4'

@description('KANIKO_IMAGE: kaniko executor image (the maintained fork; the original repository is archived). v1.28.3 is its newest release tag seen; deploy.yml resolves this tag to its digest at every deployment and passes the pinned reference (docs/operations.md).')
param kanikoImage string = 'ghcr.io/osscontainertools/kaniko:v1.28.3-debug'

@minValue(1)
@maxValue(1000)
@description('MAX_ACTIVE_DEPLOYMENTS_PER_ORG: queued plus in-progress deployments an org may have.')
param maxActiveDeploymentsPerOrg int = 3

@minValue(1)
@maxValue(1000000)
@description('RATE_LIMIT_PER_MINUTE: API requests per token per minute.')
param rateLimitPerMinute int = 600

@minValue(1)
@maxValue(3650)
@description('RETENTION_DAYS: default age for POST /status/cleanup.')
param retentionDays int = 7

@description('E-mail address every alert is sent to; empty: alerts fire in the portal only.')
param alertEmail string = ''

@description('E-mail address that pages the on-call (e.g. a paging service\'s e-mail integration) for production deployment failures and API 5xx; empty: those go to alertEmail only.')
param pageEmail string = ''

@minValue(1)
@maxValue(100)
@description('Deployment failure alerts (one per environment): percentage of the deployments finished in an hour that failed, above which they fire.')
param failureRateThresholdPercent int = 20

@minValue(1)
@description('Deployment failure alerts: failed deployments of one environment an hour needed before they may fire (2: an outage at two deployments an hour fires).')
param failureMinimumCount int = 2

@minValue(1)
@description('API 5xx alert threshold: 5xx responses in 5 minutes.')
param api5xxThreshold int = 5

@description('Extra tags for every resource.')
param tags object = {}

// ---------------------------------------------------------------------------------------------
// Names and shared values
// ---------------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var allTags = union(tags, {
  'azd-env-name': environmentName
  app: 'zepid-deploy'
})

var queueName = 'deployment-queue'
var cosmosDatabaseName = 'zepid-deploy'
var cosmosContainerName = 'deployments'
// The same container the store adapter would create (DEPLOYMENTS_CONTAINER in
// packages/azure/src/cosmos/store.ts; test/infra compares them). The unique key cannot change later.
var cosmosContainers = [
  {
    // Deployment records and worker heartbeats (partition _workers). TTL on; an item expires only
    // when it sets ttl (finished records after AZURE_COSMOS_TTL_DAYS, heartbeats after a day).
    name: cosmosContainerName
    partitionKeyPath: '/orgId'
    defaultTtl: -1
    excludedPaths: [
      '/steps/*'
      '/spec/*'
      '/source/*'
      '/result/*'
      '/error/*'
      '/"_etag"/?'
    ]
    compositeIndexes: [
      [
        {
          path: '/createdAt'
          order: 'descending'
        }
        {
          path: '/id'
          order: 'descending'
        }
      ]
    ]
    // An idempotency key is unique per org (records without one use their own id).
    uniqueKeyPaths: [
      '/uniqueKey'
    ]
  }
]

// Runs until the first real image is pushed (azd deploy, or deploy.yml's second step). It listens on
// port 80 and has no health endpoints: an app on it gets target port 80 and no probes (the modules'
// `placeholder`), or its first revision never becomes ready and the provisioning ends
// "ContainerAppOperationError ... Operation expired" (Azure-Samples/tutor PR #70).
var placeholderImage = 'mcr.microsoft.com/azuredocs/containerapps-helloworld:latest'
// AZURE_ARM_ENDPOINT of this cloud, without the trailing slash the SDKs would double.
var resourceManager = environment().resourceManager
var armEndpoint = endsWith(resourceManager, '/') ? substring(resourceManager, 0, length(resourceManager) - 1) : resourceManager

// azd passes an unset variable as '', so empty means "this resource group" too.
var targetResourceGroup = empty(targetResourceGroupName) ? resourceGroup().name : targetResourceGroupName

var apiAppName = 'ca-api-${resourceToken}'
var workerAppName = 'ca-worker-${resourceToken}'

// ---------------------------------------------------------------------------------------------
// Monitoring, identities
// ---------------------------------------------------------------------------------------------

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    workspaceName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
    location: location
    tags: allTags
    retentionInDays: logAnalyticsRetentionDays
  }
}

module identities 'modules/identities.bicep' = {
  name: 'identities'
  params: {
    apiIdentityName: 'id-api-${resourceToken}'
    workerIdentityName: 'id-worker-${resourceToken}'
    appsIdentityName: 'id-apps-${resourceToken}'
    location: location
    tags: allTags
  }
}

// ---------------------------------------------------------------------------------------------
// Data and messaging, each with the roles granted on it
// ---------------------------------------------------------------------------------------------

module registry 'modules/registry.bicep' = {
  name: 'registry'
  params: {
    name: 'acr${resourceToken}'
    location: location
    tags: allTags
    sku: containerRegistrySku
    grants: [
      {
        principalId: identities.outputs.api.principalId
        roleDefinitionId: builtInRoles.acrPull
        description: 'API: pulls its own image.'
      }
      {
        principalId: identities.outputs.worker.principalId
        roleDefinitionId: builtInRoles.acrPush
        description: 'Worker: pulls its own image; gets the token kaniko pushes built images and layer cache with.'
      }
      {
        principalId: identities.outputs.worker.principalId
        roleDefinitionId: builtInRoles.acrDelete
        description: 'Worker: removes the tags of images it built when a deployment is cleaned up.'
      }
      {
        principalId: identities.outputs.apps.principalId
        roleDefinitionId: builtInRoles.acrPull
        description: 'Deployed apps: pull the images built for them.'
      }
    ]
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'service-bus'
  params: {
    name: 'sb-${resourceToken}'
    location: location
    tags: allTags
    sku: serviceBusSku
    queueName: queueName
    workspaceId: monitoring.outputs.workspaceId
    grants: [
      {
        principalId: identities.outputs.api.principalId
        roleDefinitionId: builtInRoles.serviceBusDataSender
        description: 'API: publishes jobs.'
      }
      {
        principalId: identities.outputs.api.principalId
        roleDefinitionId: builtInRoles.serviceBusDataOwner
        description: 'API: GET /status/queue reads active, scheduled and dead-lettered counts through the management API, which needs Manage rights, and peeks the dead-letter queue. This queue only.'
      }
      {
        principalId: identities.outputs.worker.principalId
        roleDefinitionId: builtInRoles.serviceBusDataReceiver
        description: 'Worker: receives jobs (sessions), renews locks, completes and dead-letters.'
      }
      {
        principalId: identities.outputs.worker.principalId
        roleDefinitionId: builtInRoles.serviceBusDataSender
        description: 'Worker: schedules back-off messages for retryable failures.'
      }
      {
        principalId: identities.outputs.worker.principalId
        roleDefinitionId: builtInRoles.serviceBusDataOwner
        description: 'Worker scale rule: KEDA reads the queue\'s message count through the management API, which needs Manage rights. This queue only.'
      }
    ]
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    name: 'cosmos-${resourceToken}'
    location: location
    tags: allTags
    databaseName: cosmosDatabaseName
    containers: cosmosContainers
    capacityMode: cosmosCapacityMode
    autoscaleMaxThroughput: cosmosAutoscaleMaxThroughput
    // Both apps read and write deployment records; the worker also writes heartbeats.
    dataContributorPrincipalIds: [
      identities.outputs.api.principalId
      identities.outputs.worker.principalId
    ]
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: allTags
    contextRetentionDays: contextRetentionDays
    sourceRetentionDays: sourceRetentionDays
    logRetentionDays: logRetentionDays
    grants: [
      {
        principalId: identities.outputs.api.principalId
        roleDefinitionId: builtInRoles.storageBlobDataContributor
        description: 'API: stores each deployment\'s source, reads logs, deletes artifacts on cleanup.'
      }
      {
        principalId: identities.outputs.worker.principalId
        roleDefinitionId: builtInRoles.storageBlobDataContributor
        description: 'Worker: reads sources, writes build contexts and logs, deletes contexts after a build.'
      }
      {
        principalId: identities.outputs.worker.principalId
        roleDefinitionId: builtInRoles.storageAccountKeyOperator
        description: 'Worker: reads the account key (listKeys) to hand to kaniko, which refuses SAS for a blob build context.'
      }
    ]
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'key-vault'
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: allTags
    purgeProtection: keyVaultPurgeProtection
    deployApiTokens: deployApiTokens
    grants: [
      {
        principalId: identities.outputs.api.principalId
        roleDefinitionId: builtInRoles.keyVaultSecretsOfficer
        description: 'API: writes each deployment\'s env variable values; reads its own tokens.'
      }
      {
        principalId: identities.outputs.worker.principalId
        roleDefinitionId: builtInRoles.keyVaultSecretsOfficer
        description: 'Worker: reads deployment secrets for the apps it deploys, deletes them on cleanup.'
      }
      {
        principalId: identities.outputs.apps.principalId
        roleDefinitionId: builtInRoles.keyVaultSecretsUser
        description: 'Deployed apps: resolve their env variables through Key Vault references.'
      }
    ]
  }
}

// ---------------------------------------------------------------------------------------------
// Container Apps
// ---------------------------------------------------------------------------------------------

module containerAppsEnvironment 'modules/environment.bicep' = {
  name: 'container-apps-environment'
  params: {
    name: 'cae-${resourceToken}'
    location: location
    tags: allTags
    workspaceName: monitoring.outputs.workspaceName
  }
}

module workerTargetRbac 'modules/worker-target-rbac.bicep' = {
  name: 'worker-target-rbac'
  scope: resourceGroup(targetResourceGroup)
  params: {
    workerPrincipalId: identities.outputs.worker.principalId
  }
}

// Long-running operations report at subscription scope (.../providers/Microsoft.App/locations/<region>/
// containerappOperationStatuses/<id>): a role on a resource group does not cover them
// (microsoft/azure-container-apps#215).
module workerOperationsRbac 'modules/worker-operations-rbac.bicep' = {
  name: 'worker-operations-rbac'
  scope: subscription()
  params: {
    workerPrincipalId: identities.outputs.worker.principalId
    installation: resourceGroup().id
  }
}

module workerSharedRbac 'modules/worker-shared-rbac.bicep' = {
  name: 'worker-shared-rbac'
  params: {
    workerPrincipalId: identities.outputs.worker.principalId
    environmentName: containerAppsEnvironment.outputs.name
    appsIdentityName: identities.outputs.appsIdentityName
  }
}

module apiExistingImage 'modules/existing-image.bicep' = {
  name: 'api-existing-image'
  params: {
    name: apiAppName
    exists: apiExists
  }
}

module workerExistingImage 'modules/existing-image.bicep' = {
  name: 'worker-existing-image'
  params: {
    name: workerAppName
    exists: workerExists
  }
}

// An existing app may still run the placeholder (its image was never pushed): it keeps its placeholder settings.
var apiImageToRun = !empty(apiImage) ? apiImage : (apiExists && !empty(apiExistingImage.outputs.image) ? apiExistingImage.outputs.image : placeholderImage)
var workerImageToRun = !empty(workerImage) ? workerImage : (workerExists && !empty(workerExistingImage.outputs.image) ? workerExistingImage.outputs.image : placeholderImage)

var azure = {
  subscriptionId: subscription().subscriptionId
  tenantId: subscription().tenantId
  resourceGroup: targetResourceGroup
  location: location
  armEndpoint: armEndpoint
  containerRegistry: registry.outputs.loginServer
  containerAppsEnvironmentId: containerAppsEnvironment.outputs.id
  appsIdentityId: identities.outputs.apps.id
  serviceBusNamespace: serviceBus.outputs.fullyQualifiedName
  serviceBusQueue: serviceBus.outputs.queueName
  storageAccountUrl: storage.outputs.blobEndpoint
  cosmosEndpoint: cosmos.outputs.endpoint
  cosmosDatabase: cosmos.outputs.databaseName
  cosmosContainer: cosmosContainerName
  cosmosTtlDays: cosmosTtlDays
  keyVaultUri: keyVault.outputs.uri
  buildContainerCpu: buildContainerCpu
  buildContainerMemory: buildContainerMemory
  kanikoImage: kanikoImage
}

module apiApp 'modules/api-app.bicep' = {
  name: 'api-app'
  params: {
    name: apiAppName
    location: location
    tags: allTags
    environmentId: containerAppsEnvironment.outputs.id
    image: apiImageToRun
    placeholder: apiImageToRun == placeholderImage
    identity: identities.outputs.api
    azure: azure
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    apiTokensSecretName: keyVault.outputs.apiTokensSecretName
    resources: apiResources
    minReplicas: apiMinReplicas
    maxReplicas: apiMaxReplicas
    concurrentRequests: apiConcurrentRequests
    logLevel: logLevel
    deploymentTimeoutMs: deploymentTimeoutMs
    maxActiveDeploymentsPerOrg: maxActiveDeploymentsPerOrg
    rateLimitPerMinute: rateLimitPerMinute
    retentionDays: retentionDays
  }
}

module workerApp 'modules/worker-app.bicep' = {
  name: 'worker-app'
  params: {
    name: workerAppName
    location: location
    tags: allTags
    environmentId: containerAppsEnvironment.outputs.id
    image: workerImageToRun
    placeholder: workerImageToRun == placeholderImage
    identity: identities.outputs.worker
    azure: azure
    serviceBusNamespaceName: serviceBus.outputs.name
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    resources: workerResources
    minReplicas: workerMinReplicas
    maxReplicas: workerMaxReplicas
    maxConcurrentDeployments: workerMaxConcurrentDeployments
    terminationGracePeriodSeconds: workerTerminationGracePeriodSeconds
    logLevel: logLevel
    deploymentTimeoutMs: deploymentTimeoutMs
    buildTimeoutMs: buildTimeoutMs
    revisionReadyTimeoutMs: revisionReadyTimeoutMs
  }
}

// ---------------------------------------------------------------------------------------------
// Dashboard and alerts
// ---------------------------------------------------------------------------------------------

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  params: {
    location: location
    tags: allTags
    displayName: 'Zepid Deploy (${environmentName})'
    appInsightsId: monitoring.outputs.appInsightsId
    serviceBusNamespaceId: serviceBus.outputs.id
    queueName: serviceBus.outputs.queueName
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    tags: allTags
    namePrefix: environmentName
    serviceBusNamespaceId: serviceBus.outputs.id
    queueName: serviceBus.outputs.queueName
    appInsightsId: monitoring.outputs.appInsightsId
    apiAppId: apiApp.outputs.id
    failureRatePercent: failureRateThresholdPercent
    failureMinimumCount: failureMinimumCount
    api5xxThreshold: api5xxThreshold
    alertEmail: alertEmail
    pageEmail: pageEmail
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs (azd stores them in .azure/<env>/.env; deploy.yml reads them)
// ---------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = subscription().tenantId
output AZURE_RESOURCE_GROUP string = resourceGroup().name
output AZURE_TARGET_RESOURCE_GROUP string = targetResourceGroup
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = registry.outputs.loginServer
output AZURE_CONTAINER_REGISTRY_NAME string = registry.outputs.name
output AZURE_CONTAINER_APPS_ENVIRONMENT_ID string = containerAppsEnvironment.outputs.id
output AZURE_CONTAINER_APPS_ENVIRONMENT_DEFAULT_DOMAIN string = containerAppsEnvironment.outputs.defaultDomain
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output AZURE_SERVICE_BUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedName
output AZURE_SERVICE_BUS_QUEUE string = serviceBus.outputs.queueName
output AZURE_COSMOS_ENDPOINT string = cosmos.outputs.endpoint
output AZURE_STORAGE_ACCOUNT_URL string = storage.outputs.blobEndpoint
output API_APP_NAME string = apiApp.outputs.name
output WORKER_APP_NAME string = workerApp.outputs.name
output API_URL string = 'https://${apiApp.outputs.fqdn}'
output API_LATEST_REVISION string = apiApp.outputs.latestRevisionName
output WORKER_LATEST_REVISION string = workerApp.outputs.latestRevisionName
