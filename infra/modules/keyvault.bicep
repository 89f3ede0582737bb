// Key Vault with RBAC authorization: deployment secrets (env variable values the API writes and
// deployed apps read through Key Vault references) and the API's own tokens.

import { roleGrant } from '../types.bicep'

@description('Vault name: 3-24 characters, globally unique.')
param name string

@description('Region of the vault.')
param location string

@description('Tags for the vault.')
param tags object

@description('Purge protection: a deleted vault or secret cannot be purged before its retention ends. Irreversible once on; recommended for production.')
param purgeProtection bool

@secure()
@description('DEPLOY_API_TOKENS (comma-separated orgId:token pairs). Written to the secret deploy-api-tokens when not empty; empty leaves the secret as it is.')
param deployApiTokens string

@description('Roles granted on the vault.')
param grants roleGrant[]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    // Roles, not access policies: the same RBAC model as every other resource here.
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    // The property accepts true or nothing: false is rejected once it was ever true.
    enablePurgeProtection: purgeProtection ? true : null
    publicNetworkAccess: 'Enabled'
  }
}

resource apiTokens 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(deployApiTokens)) {
  parent: vault
  name: 'deploy-api-tokens'
  properties: {
    value: deployApiTokens
    contentType: 'text/plain; comma-separated orgId:token pairs'
  }
}

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for grant in grants: {
    name: guid(vault.id, grant.principalId, grant.roleDefinitionId)
    scope: vault
    properties: {
      principalId: grant.principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grant.roleDefinitionId)
      description: grant.description
    }
  }
]

output name string = vault.name
output uri string = vault.properties.vaultUri
output apiTokensSecretName string = 'deploy-api-tokens'
