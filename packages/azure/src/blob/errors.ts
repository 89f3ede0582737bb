import { DeployError, isDeployError } from '@zepid/core';

/**
 * Turns what @azure/storage-blob throws into DeployErrors. The SDK has retried by then, so a timeout,
 * throttling (503 ServerBusy) or no answer at all is DEPENDENCY_UNAVAILABLE and retryable; refused
 * access is DEPENDENCY_UNAVAILABLE that retrying does not fix. Messages name the action and the
 * status, never the request (a connection string's key is never in it, but a SAS could be).
 */
const TRANSIENT_STATUSES = new Set([408, 429, 500, 502, 503, 504]);
/** @azure/identity's failures: no managed identity, or Entra refused; the identity library has retried already. */
const CREDENTIAL_ERRORS = new Set(['CredentialUnavailableError', 'AuthenticationError', 'AggregateAuthenticationError']);

interface StorageLikeError {
  statusCode?: number;
  code?: string;
  name?: string;
}

function shape(error: unknown): StorageLikeError {
  return typeof error === 'object' && error !== null ? error : {};
}

export function storageStatus(error: unknown): number | undefined {
  const { statusCode } = shape(error);
  return typeof statusCode === 'number' ? statusCode : undefined;
}

/** The service's error code (`BlobNotFound`, `BlobIsSealed` …) or a network code (`ECONNREFUSED`). */
export function storageCode(error: unknown): string | undefined {
  const { code } = shape(error);
  return typeof code === 'string' ? code : undefined;
}

export function toArtifactError(error: unknown, action: string): DeployError {
  if (isDeployError(error)) return error;
  const status = storageStatus(error);
  const code = storageCode(error);
  const { name } = shape(error);
  if (name !== undefined && CREDENTIAL_ERRORS.has(name)) {
    return new DeployError('DEPENDENCY_UNAVAILABLE', `No Entra token for Blob Storage to ${action} (${name})`, { retryable: false, cause: error });
  }
  if (status === undefined && (code !== undefined || name === 'AbortError' || name === 'TimeoutError')) {
    return new DeployError('DEPENDENCY_UNAVAILABLE', `Blob Storage could not be reached to ${action} (${code ?? name ?? 'no answer'})`, {
      retryable: true,
      retryAfterSeconds: 5,
      cause: error,
    });
  }
  if (status !== undefined && TRANSIENT_STATUSES.has(status)) {
    return new DeployError('DEPENDENCY_UNAVAILABLE', `Blob Storage is busy or unavailable and could not ${action} (HTTP ${status})`, {
      retryable: true,
      retryAfterSeconds: 5,
      cause: error,
    });
  }
  if (status === 401 || status === 403) {
    return new DeployError('DEPENDENCY_UNAVAILABLE', `Blob Storage refused access when trying to ${action} (HTTP ${status}${code === undefined ? '' : ` ${code}`})`, {
      retryable: false,
      cause: error,
    });
  }
  const what = status === undefined ? (name ?? 'error') : `HTTP ${status}${code === undefined ? '' : ` ${code}`}`;
  return new DeployError('INTERNAL_ERROR', `Blob Storage failed to ${action} (${what})`, { cause: error });
}
