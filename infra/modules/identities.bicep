// The three user-assigned identities. Each app runs as its own identity so each gets only the roles
// it needs; the third is given to the apps the worker deploys (AcrPull, Key Vault Secrets User).

import { identityRef } from '../types.bicep'

@description('Name of the API identity.')
param apiIdentityName string

@description('Name of the worker identity.')
param workerIdentityName string

@description('Name of the identity deployed apps run as.')
param appsIdentityName string

@description('Region of the identities.')
param location string

@description('Tags for the identities.')
param tags object

resource api 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: apiIdentityName
  location: location
  tags: tags
}

resource worker 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: workerIdentityName
  location: location
  tags: tags
}

resource apps 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: appsIdentityName
  location: location
  tags: tags
}

output api identityRef = {
  id: api.id
  clientId: api.properties.clientId
  principalId: api.properties.principalId
}

output worker identityRef = {
  id: worker.id
  clientId: worker.properties.clientId
  principalId: worker.properties.principalId
}

output apps identityRef = {
  id: apps.id
  clientId: apps.properties.clientId
  principalId: apps.properties.principalId
}

output appsIdentityName string = apps.name
