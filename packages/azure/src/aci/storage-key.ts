import type { TokenCredential } from '@azure/identity';
import { DeployError } from '@zepid/core';

/**
 * Kaniko reads an Azure Blob build context only with the account key (AZURE_STORAGE_ACCESS_KEY; a
 * SAS is refused), so the builder needs one. Two sources: the key inside a connection string, or
 * the storage account's `listKeys` action through ARM with the worker's identity (the production
 * path: no key in the worker's configuration, only the "Storage Account Key Operator" role).
 */
export type StorageAccessKeyProvider = (signal?: AbortSignal) => Promise<string>;

export function storageKeyFromConnectionString(connectionString: string): StorageAccessKeyProvider {
  const match = /(?:^|;)\s*AccountKey=([^;]+)/i.exec(connectionString);
  const key = match?.[1];
  if (key === undefined) throw new DeployError('SANDBOX_FAILED', 'The storage connection string has no AccountKey, which kaniko needs to read the build context');
  return () => Promise.resolve(key);
}

export interface ArmStorageKeyOptions {
  credential: TokenCredential;
  subscriptionId: string;
  resourceGroup: string;
  accountName: string;
  armEndpoint?: string | undefined;
  armScope?: string | undefined;
  timeoutMs?: number | undefined;
}

const STORAGE_API_VERSION = '2023-05-01';

export function storageKeyFromArm(options: ArmStorageKeyOptions): StorageAccessKeyProvider {
  return async (signal) => {
    const endpoint = (options.armEndpoint ?? 'https://management.azure.com').replace(/\/+$/, '');
    const token = await options.credential.getToken(options.armScope ?? 'https://management.azure.com/.default', signal === undefined ? {} : { abortSignal: signal });
    if (token === null) throw new DeployError('SANDBOX_FAILED', 'No Entra token to read the storage account key');
    const url =
      `${endpoint}/subscriptions/${encodeURIComponent(options.subscriptionId)}/resourceGroups/${encodeURIComponent(options.resourceGroup)}` +
      `/providers/Microsoft.Storage/storageAccounts/${encodeURIComponent(options.accountName)}/listKeys?api-version=${STORAGE_API_VERSION}`;
    const timeout = AbortSignal.timeout(options.timeoutMs ?? 30_000);
    let response: Response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${token.token}` },
        signal: signal === undefined ? timeout : AbortSignal.any([signal, timeout]),
      });
    } catch {
      throw new DeployError('DEPENDENCY_UNAVAILABLE', 'Azure Resource Manager could not be reached to read the storage account key', { retryable: true });
    }
    if (!response.ok) {
      await response.body?.cancel();
      const transient = response.status === 429 || response.status >= 500;
      throw new DeployError(transient ? 'DEPENDENCY_UNAVAILABLE' : 'SANDBOX_FAILED', `Reading the storage account key failed with ${response.status}`, {
        retryable: transient,
        details: { status: response.status },
      });
    }
    const body = (await response.json()) as { keys?: { keyName?: string; value?: string }[] };
    const key = body.keys?.find((entry) => typeof entry.value === 'string' && entry.value !== '')?.value;
    if (key === undefined) throw new DeployError('SANDBOX_FAILED', `The storage account ${options.accountName} has no key to give kaniko`);
    return key;
  };
}
