import { isServiceBusError } from '@azure/service-bus';
import { DeployError } from '@zepid/core';

/**
 * Turns what the Service Bus SDK throws into DeployErrors the worker and API understand:
 * - a lost lock (the session or message lock expired, or another receiver has it) → CONCURRENT_UPDATE;
 * - refused credentials or a missing queue → DEPENDENCY_UNAVAILABLE, not retryable (a retry cannot help);
 * - anything else (network, throttling, timeouts) → DEPENDENCY_UNAVAILABLE, retryable.
 * Messages name the queue and the action, never a key, token or connection string. The SDK's own
 * error is kept as the cause except for HTTP errors of the administration client, whose request
 * (with its Authorization header) would travel with it into logs.
 */

const LOCK_LOST = new Set(['SessionLockLost', 'MessageLockLost', 'SessionCannotBeLocked']);

function brief(message: string): string {
  return message.replace(/\s+/g, ' ').slice(0, 300);
}

export function lockLost(messageId: string, cause?: unknown): DeployError {
  return new DeployError('CONCURRENT_UPDATE', `The lock on job ${messageId} was lost (expired, or the job is now another receiver's)`, {
    cause,
  });
}

export function serviceBusFailure(error: unknown, context: { queue: string; action: string; messageId?: string }): DeployError {
  if (error instanceof DeployError) return error;
  // The SDK's retry gives up with an AggregateError of every attempt's error; the last one tells.
  if (error instanceof AggregateError && error.errors.length > 0) return serviceBusFailure(error.errors.at(-1), context);
  const where = `Service Bus queue '${context.queue}'`;
  if (isServiceBusError(error)) {
    if (LOCK_LOST.has(error.code)) return lockLost(context.messageId ?? '(unknown)', error);
    if (error.code === 'UnauthorizedAccess') {
      return new DeployError(
        'DEPENDENCY_UNAVAILABLE',
        `${where} refused the credentials while trying to ${context.action} (check the shared access key, or the identity's Service Bus data role): ${brief(error.message)}`,
        { retryable: false, cause: error },
      );
    }
    if (error.code === 'MessagingEntityNotFound') {
      return new DeployError('DEPENDENCY_UNAVAILABLE', `${where} does not exist (while trying to ${context.action})`, { retryable: false, cause: error });
    }
    return new DeployError('DEPENDENCY_UNAVAILABLE', `${where} failed to ${context.action}: ${error.code}: ${brief(error.message)}`, {
      retryable: error.retryable !== false || error.code === 'ServiceTimeout',
      cause: error,
    });
  }
  const http = error as { name?: string; statusCode?: number; code?: string; message?: string };
  if (http.name === 'RestError') {
    const refused = http.statusCode === 401 || http.statusCode === 403;
    return new DeployError(
      'DEPENDENCY_UNAVAILABLE',
      refused
        ? `${where} refused the credentials while trying to ${context.action} (reading queue counts needs the Manage right, e.g. the 'Azure Service Bus Data Owner' role): ${brief(http.message ?? '')}`
        : `${where} failed to ${context.action}: HTTP ${http.statusCode ?? 'error'} ${http.code ?? ''} ${brief(http.message ?? '')}`.trim(),
      { retryable: !refused, details: { statusCode: http.statusCode, code: http.code } },
    );
  }
  const message = error instanceof Error ? error.message : String(error);
  return new DeployError('DEPENDENCY_UNAVAILABLE', `${where} failed to ${context.action}: ${brief(message)}`, { retryable: true, cause: error });
}
