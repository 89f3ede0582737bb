// Cosmos DB (API for NoSQL): the deployment store. Serverless by default (pay per request, no idle
// cost); autoscale throughput per container as the alternative. Entra ID only: the apps get the
// built-in Data Contributor role on the database through data-plane role assignments.

import { cosmosContainer } from '../types.bicep'

@description('Account name: 3-44 lowercase letters, digits and hyphens, globally unique.')
param name string

@description('Region of the account (single region).')
param location string

@description('Tags for the account.')
param tags object

@description('Database name (AZURE_COSMOS_DATABASE).')
param databaseName string

@description('Containers of the database, with their partition keys and TTL.')
param containers cosmosContainer[]

@allowed([
  'serverless'
  'autoscale'
])
@description('serverless: pay per request unit; autoscale: provisioned throughput that scales between 10% and 100% of autoscaleMaxThroughput per container.')
param capacityMode string

@minValue(1000)
@maxValue(1000000)
@description('Maximum RU/s of each container in autoscale mode.')
param autoscaleMaxThroughput int

@description('Object ids of the identities that read and write items (API and worker).')
param dataContributorPrincipalIds string[]

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    capabilities: capacityMode == 'serverless' ? [{ name: 'EnableServerless' }] : []
    // Keys would bypass the role assignments below; DefaultAzureCredential is the only way in.
    disableLocalAuth: true
    // Databases and containers change through this template only, never from the apps.
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource sqlContainers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = [
  for container in containers: {
    parent: database
    name: container.name
    properties: {
      resource: {
        id: container.name
        partitionKey: {
          paths: [
            container.partitionKeyPath
          ]
          kind: 'Hash'
          version: 2
        }
        defaultTtl: container.defaultTtl
        indexingPolicy: {
          indexingMode: 'consistent'
          automatic: true
          includedPaths: [
            {
              path: '/*'
            }
          ]
          excludedPaths: map(container.excludedPaths, path => { path: path })
          compositeIndexes: container.compositeIndexes
        }
        uniqueKeyPolicy: {
          uniqueKeys: map(container.uniqueKeyPaths, path => { paths: [path] })
        }
      }
      // Serverless accounts take no throughput settings.
      options: capacityMode == 'autoscale' ? { autoscaleSettings: { maxThroughput: autoscaleMaxThroughput } } : {}
    }
  }
]

// Cosmos DB Built-in Data Contributor: read and write items, no control-plane rights.
var dataContributorRoleId = '${account.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002'

resource dataContributors 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = [
  for principalId in dataContributorPrincipalIds: {
    parent: account
    name: guid(account.id, principalId, dataContributorRoleId)
    properties: {
      roleDefinitionId: dataContributorRoleId
      principalId: principalId
      // The database, not the whole account.
      scope: '${account.id}/dbs/${databaseName}'
    }
    dependsOn: [
      database
    ]
  }
]

output name string = account.name
output endpoint string = account.properties.documentEndpoint
output databaseName string = database.name
