import type { TokenCredential } from '@azure/identity';
import { DefaultAzureCredential } from '@azure/identity';

/**
 * The one credential every Azure adapter uses: DefaultAzureCredential (managed identity in Azure,
 * Azure CLI on a laptop). With a user-assigned identity, AZURE_CLIENT_ID picks it.
 */
export function createCredential(options: { clientId?: string | undefined; tenantId?: string | undefined }): TokenCredential {
  return new DefaultAzureCredential({
    ...(options.clientId === undefined ? {} : { managedIdentityClientId: options.clientId }),
    ...(options.tenantId === undefined ? {} : { tenantId: options.tenantId }),
  });
}
