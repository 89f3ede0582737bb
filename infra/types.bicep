// Types and constants shared by main.bicep and the modules (compile-time imports), so a role id or a
// settings shape is written once.

@export()
@description('Built-in role definition ids this template grants, by their portal names.')
var builtInRoles = {
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
  acrPush: '8311e382-0749-4cb8-b61a-304f252e45ec'
  acrDelete: 'c2f4ef07-c644-48eb-af81-4b1b4947fb11'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageAccountKeyOperator: '81a9662b-bebf-436f-a333-f67b29880f12'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}

@export()
@description('One role for one principal on the resource a module owns. The description is stored on the assignment, so the portal says why it exists.')
type roleGrant = {
  @description('Object (principal) id of the managed identity.')
  principalId: string

  @description('Role definition GUID, from builtInRoles.')
  roleDefinitionId: string

  @description('Why this principal needs this role.')
  description: string
}

@export()
@description('A user-assigned managed identity as the apps and role assignments need it.')
type identityRef = {
  @description('Resource id; goes in the app\'s identity list, registry and Key Vault references.')
  id: string

  @description('Client id; each app gets its own as AZURE_CLIENT_ID so DefaultAzureCredential picks it.')
  clientId: string

  @description('Object id; the subject of role assignments.')
  principalId: string
}

@export()
@description('CPU and memory of a container; Container Apps (Consumption) wants memory = 2 x vCPU in Gi.')
type containerResources = {
  @description('vCPU as a string, because Bicep has no decimal numbers: 0.25 to 4 in steps of 0.25.')
  cpu: string

  @description('Memory, e.g. 1Gi for 0.5 vCPU.')
  memory: string
}

@export()
@description('One entry of a Cosmos DB composite index.')
type compositePath = {
  @description('Property path, e.g. /createdAt.')
  path: string

  @description('Sort order the index serves.')
  order: 'ascending' | 'descending'
}

@export()
@description('A Cosmos DB container as the store adapter creates it (packages/azure/src/cosmos/store.ts, DEPLOYMENTS_CONTAINER).')
type cosmosContainer = {
  @description('Container name.')
  name: string

  @description('Partition key path, e.g. /orgId.')
  partitionKeyPath: string

  @description('Default TTL in seconds; -1 turns TTL on without expiring items unless they set ttl themselves.')
  defaultTtl: int

  @description('Paths left out of the index (never filtered on; cheaper writes).')
  excludedPaths: string[]

  @description('Composite indexes, each a list of paths with their order (multi-property ORDER BY needs one).')
  compositeIndexes: compositePath[][]

  @description('Unique key paths, one unique key each. Fixed at creation: changing them means a new container.')
  uniqueKeyPaths: string[]
}

@export()
@description('What both apps need to reach Azure: the values of the AZURE_* variables of packages/azure/src/env.ts (AZURE_CLIENT_ID excepted: it is per app).')
type azureSettings = {
  @description('AZURE_SUBSCRIPTION_ID: where the worker creates build containers and apps.')
  subscriptionId: string

  @description('AZURE_TENANT_ID.')
  tenantId: string

  @description('AZURE_RESOURCE_GROUP: where the worker creates build containers and apps.')
  resourceGroup: string

  @description('AZURE_LOCATION: region of build containers and apps.')
  location: string

  @description('AZURE_ARM_ENDPOINT, without a trailing slash.')
  armEndpoint: string

  @description('AZURE_CONTAINER_REGISTRY: the ACR login server.')
  containerRegistry: string

  @description('AZURE_CONTAINER_APPS_ENVIRONMENT_ID.')
  containerAppsEnvironmentId: string

  @description('AZURE_APPS_IDENTITY_ID: identity of the deployed apps (AcrPull, Key Vault Secrets User).')
  appsIdentityId: string

  @description('AZURE_SERVICE_BUS_NAMESPACE: fully qualified, e.g. sb-x.servicebus.windows.net.')
  serviceBusNamespace: string

  @description('AZURE_SERVICE_BUS_QUEUE.')
  serviceBusQueue: string

  @description('AZURE_STORAGE_ACCOUNT_URL: the blob endpoint.')
  storageAccountUrl: string

  @description('AZURE_COSMOS_ENDPOINT.')
  cosmosEndpoint: string

  @description('AZURE_COSMOS_DATABASE.')
  cosmosDatabase: string

  @description('AZURE_COSMOS_CONTAINER: the deployments container (partition key /orgId).')
  cosmosContainer: string

  @description('AZURE_COSMOS_TTL_DAYS: TTL of finished records, the backstop behind POST /status/cleanup.')
  cosmosTtlDays: int

  @description('AZURE_KEY_VAULT_URI.')
  keyVaultUri: string

  @description('BUILD_CONTAINER_CPU: vCPU of each ACI build container.')
  buildContainerCpu: string

  @description('BUILD_CONTAINER_MEMORY: GB of memory of each ACI build container.')
  buildContainerMemory: string

  @description('KANIKO_IMAGE: the kaniko executor image builds run.')
  kanikoImage: string
}
