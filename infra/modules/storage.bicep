// Blob Storage: `sources` (each file once per org under `objects/`, and a manifest per deployment
// under `manifests/`, written by the API), `contexts` (build contexts kaniko reads) and `logs` (append
// blobs, one per deployment). A lifecycle policy deletes old contexts, sources and logs so the
// account does not grow forever; an object still in use is refreshed (its last modification moves)
// at most hourly whenever a deployment references it, so the policy only reaches unused ones.

import { roleGrant } from '../types.bicep'

@description('Account name: 3-24 lowercase letters and digits, globally unique.')
param name string

@description('Region of the account.')
param location string

@description('Tags for the account.')
param tags object

@minValue(1)
@maxValue(3650)
@description('Days after which build contexts are deleted: only a running build reads them.')
param contextRetentionDays int

@minValue(1)
@maxValue(3650)
@description('Days after a source blob was last modified (objects: last used) when it is deleted: a retry of an older deployment then fails with a clear error instead of rebuilding.')
param sourceRetentionDays int

@minValue(1)
@maxValue(3650)
@description('Days after which deployment logs are deleted.')
param logRetentionDays int

@description('Roles granted on the account.')
param grants roleGrant[]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    // kaniko reads the build context with the account key and refuses SAS, so shared keys stay
    // enabled; the apps themselves use Entra ID, and the portal defaults to it too.
    allowSharedKeyAccess: true
    defaultToOAuthAuthentication: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for containerName in ['sources', 'contexts', 'logs']: {
    parent: blobService
    name: containerName
    properties: {
      publicAccess: 'None'
    }
  }
]

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          enabled: true
          name: 'delete-old-contexts'
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: ['blockBlob']
              prefixMatch: ['contexts/']
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: contextRetentionDays
                }
              }
            }
          }
        }
        {
          enabled: true
          name: 'delete-old-sources'
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: ['blockBlob']
              prefixMatch: ['sources/']
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: sourceRetentionDays
                }
              }
            }
          }
        }
        {
          enabled: true
          name: 'delete-old-logs'
          type: 'Lifecycle'
          definition: {
            filters: {
              // Logs are append blobs; delete is the only lifecycle action they support.
              blobTypes: ['appendBlob']
              prefixMatch: ['logs/']
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: logRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    containers
  ]
}

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for grant in grants: {
    name: guid(storage.id, grant.principalId, grant.roleDefinitionId)
    scope: storage
    properties: {
      principalId: grant.principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grant.roleDefinitionId)
      description: grant.description
    }
  }
]

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
