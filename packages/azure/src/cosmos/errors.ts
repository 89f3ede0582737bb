import { DeployError, isDeployError } from '@zepid/core';

/**
 * Turns what @azure/cosmos throws into DeployErrors. The SDK has already retried throttling (429) and
 * failovers by the time an error reaches us, so what remains transient is reported as
 * DEPENDENCY_UNAVAILABLE (retryable) and everything else as a non-retryable error. Messages are ours:
 * Cosmos error bodies can echo request details, so they stay in `cause`, out of the message.
 */

/** Status codes after which the same request can succeed later. 449 is Cosmos' "retry with". */
const TRANSIENT_STATUSES = new Set([408, 410, 429, 449, 500, 502, 503, 504]);
/** @azure/identity's failures: no managed identity, or Entra refused; the identity library has retried already. */
const CREDENTIAL_ERRORS = new Set(['CredentialUnavailableError', 'AuthenticationError', 'AggregateAuthenticationError']);

interface CosmosLikeError {
  code?: number | string;
  statusCode?: number;
  retryAfterInMs?: number;
  name?: string;
}

function shape(error: unknown): CosmosLikeError {
  return typeof error === 'object' && error !== null ? error : {};
}

/** The HTTP status of a Cosmos failure, or undefined when the request got no answer. */
export function cosmosStatus(error: unknown): number | undefined {
  const { code, statusCode } = shape(error);
  if (typeof code === 'number') return code;
  return typeof statusCode === 'number' ? statusCode : undefined;
}

/** No HTTP answer at all: connection refused or reset, DNS, TLS, timeout. */
function isNetworkFailure(error: unknown): boolean {
  const { code, name } = shape(error);
  if (cosmosStatus(error) !== undefined) return false;
  return typeof code === 'string' || name === 'TimeoutError' || name === 'AbortError';
}

export function toStoreError(error: unknown, action: string): DeployError {
  if (isDeployError(error)) return error;
  const status = cosmosStatus(error);
  const { name } = shape(error);
  if (name !== undefined && CREDENTIAL_ERRORS.has(name)) {
    return new DeployError('DEPENDENCY_UNAVAILABLE', `No Entra token for Cosmos DB to ${action} (${name})`, { retryable: false, cause: error });
  }
  if (isNetworkFailure(error)) {
    const { code } = shape(error);
    return new DeployError('DEPENDENCY_UNAVAILABLE', `Cosmos DB could not be reached to ${action} (${String(code ?? 'timeout')})`, {
      retryable: true,
      retryAfterSeconds: 5,
      cause: error,
    });
  }
  if (status !== undefined && TRANSIENT_STATUSES.has(status)) {
    const waitMs = shape(error).retryAfterInMs;
    return new DeployError('DEPENDENCY_UNAVAILABLE', `Cosmos DB is busy or unavailable and could not ${action} (HTTP ${status})`, {
      retryable: true,
      retryAfterSeconds: Math.max(1, Math.ceil((waitMs ?? 5000) / 1000)),
      cause: error,
    });
  }
  if (status === 401 || status === 403) {
    // A missing role assignment or a wrong key: retrying cannot help until someone fixes access.
    return new DeployError('DEPENDENCY_UNAVAILABLE', `Cosmos DB refused access when trying to ${action} (HTTP ${status})`, {
      retryable: false,
      cause: error,
    });
  }
  return new DeployError('INTERNAL_ERROR', `Cosmos DB failed to ${action}${status === undefined ? '' : ` (HTTP ${status})`}`, { cause: error });
}
