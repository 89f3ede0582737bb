import { DeployError, isDeployError } from '@zepid/core';

/**
 * Turns what @azure/keyvault-secrets throws into DeployErrors. The SDK error is deliberately not kept
 * as `cause`: a failed `setSecret` carries the request, and with it the value, and a logger that walks
 * causes must not find it. The status and Key Vault's error code are enough to act on.
 */
const TRANSIENT_STATUSES = new Set([408, 429, 500, 502, 503, 504]);
/** @azure/identity's failures: no managed identity, or Entra refused; the identity library has retried already. */
const CREDENTIAL_ERRORS = new Set(['CredentialUnavailableError', 'AuthenticationError', 'AggregateAuthenticationError']);

interface KeyVaultLikeError {
  statusCode?: number;
  code?: string;
  name?: string;
  details?: { error?: { code?: string; innerError?: { code?: string }; innererror?: { code?: string } } };
}

function shape(error: unknown): KeyVaultLikeError {
  return typeof error === 'object' && error !== null ? error : {};
}

export function vaultStatus(error: unknown): number | undefined {
  const { statusCode } = shape(error);
  return typeof statusCode === 'number' ? statusCode : undefined;
}

/** Key Vault's own code, most specific first (`ObjectIsDeletedButRecoverable`, `SecretNotFound`, `Forbidden`). */
export function vaultCode(error: unknown): string | undefined {
  const { code, details } = shape(error);
  const inner = details?.error?.innerError?.code ?? details?.error?.innererror?.code;
  return inner ?? details?.error?.code ?? (typeof code === 'string' ? code : undefined);
}

export function toVaultError(error: unknown, action: string): DeployError {
  if (isDeployError(error)) return error;
  const status = vaultStatus(error);
  const code = vaultCode(error);
  const { name } = shape(error);
  // Without a status or code it is the SDK's own error (a failed challenge check, say): its message is
  // about configuration and carries no request data.
  const plain = status === undefined && code === undefined && error instanceof Error ? `${error.name}: ${error.message.slice(0, 200)}` : undefined;
  const what = plain ?? (`${status === undefined ? '' : `HTTP ${status}`}${code === undefined ? '' : ` ${code}`}`.trim() || 'no answer');
  if (name !== undefined && CREDENTIAL_ERRORS.has(name)) {
    return new DeployError('DEPENDENCY_UNAVAILABLE', `No Entra token for Key Vault to ${action} (${name})`, { retryable: false });
  }
  const unreachable = status === undefined && (code !== undefined || name === 'AbortError' || name === 'TimeoutError');
  if (unreachable || (status !== undefined && TRANSIENT_STATUSES.has(status))) {
    return new DeployError('DEPENDENCY_UNAVAILABLE', `Key Vault could not ${action} (${what})`, { retryable: true, retryAfterSeconds: 5 });
  }
  if (status === 401 || status === 403) {
    return new DeployError('DEPENDENCY_UNAVAILABLE', `Key Vault refused to ${action} (${what}); check the identity's role on the vault`, {
      retryable: false,
    });
  }
  return new DeployError('INTERNAL_ERROR', `Key Vault could not ${action} (${what})`);
}
