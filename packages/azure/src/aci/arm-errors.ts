import { DeployError, SecretMasker } from '@zepid/core';

/**
 * What an Azure Resource Manager failure says, taken from the SDK error without keeping the error
 * itself: a RestError carries the request it failed on, body included, and ours hold secure values
 * (the storage key, the registry token). Nothing built from here may keep a reference to it.
 */
export interface ArmFailure {
  /** HTTP status, when the service answered at all. */
  status: number | undefined;
  /** ARM error code (`ContainerGroupQuotaReached`, `InaccessibleImage`, …) or a network error code. */
  code: string | undefined;
  message: string;
}

const LRO_FAILURE = /^The long-running operation has failed\. ([A-Za-z0-9_.]+)\. ([\s\S]*)$/;
const NETWORK_CODES = new Set(['REQUEST_SEND_ERROR', 'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'UND_ERR_SOCKET']);

export function armFailure(error: unknown): ArmFailure {
  if (error === null || typeof error !== 'object') return { status: undefined, code: undefined, message: String(error) };
  const record = error as { statusCode?: unknown; code?: unknown; message?: unknown; details?: unknown };
  const status = typeof record.statusCode === 'number' ? record.statusCode : undefined;
  let code = typeof record.code === 'string' ? record.code : undefined;
  let message = typeof record.message === 'string' ? record.message : 'unknown error';
  // The modular SDKs (arm-appcontainers) put the ARM error body in `details`.
  const detail = (record.details as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  if (detail !== undefined) {
    if (typeof detail.code === 'string') code = detail.code;
    if (typeof detail.message === 'string') message = detail.message;
  }
  // A failed long-running operation surfaces as a plain Error whose message embeds the ARM code.
  const lro = LRO_FAILURE.exec(message);
  if (lro !== null) {
    code = lro[1];
    message = lro[2] ?? message;
  }
  return { status, code, message };
}

export function isNotFound(error: unknown): boolean {
  const failure = armFailure(error);
  return failure.status === 404 || failure.code === 'ResourceNotFound' || failure.code === 'ResourceGroupNotFound';
}

/** Throttling, server errors and lost connections: the same call can succeed later. */
export function isTransient(failure: ArmFailure): boolean {
  if (failure.status === 429 || failure.status === 408) return true;
  if (failure.status !== undefined && failure.status >= 500) return true;
  if (failure.status === undefined && failure.code !== undefined && NETWORK_CODES.has(failure.code)) return true;
  return failure.status === undefined && failure.code === undefined && /socket|network|timed? ?out/i.test(failure.message);
}

export function isQuotaFailure(failure: ArmFailure): boolean {
  return /quota/i.test(failure.code ?? '') || /\bquota\b/i.test(failure.message);
}

/** The error of an ARM call that has no more specific meaning: retryable when transient, else `fallback`. */
export function armError(
  error: unknown,
  action: string,
  fallback: 'SANDBOX_FAILED' | 'REGISTRY_FAILED' | 'START_FAILED' | 'BUILD_FAILED',
  masker: SecretMasker = new SecretMasker([]),
): DeployError {
  if (error instanceof DeployError) return error;
  const failure = armFailure(error);
  const said = masker.mask(describe(failure));
  if (isTransient(failure)) {
    return new DeployError('DEPENDENCY_UNAVAILABLE', `Azure was unavailable while ${action}: ${said}`, {
      retryable: true,
      details: { status: failure.status, armCode: failure.code },
      ...(failure.status === 429 ? { retryAfterSeconds: 30 } : {}),
    });
  }
  if (isQuotaFailure(failure)) {
    // Cores free up as other builds and revisions finish, so a later attempt can get through.
    return new DeployError('CLOUD_QUOTA_EXCEEDED', `Azure quota exceeded while ${action}: ${said}`, {
      retryable: true,
      retryAfterSeconds: 60,
      details: { status: failure.status, armCode: failure.code },
    });
  }
  return new DeployError(fallback, `Azure refused ${action}: ${said}`, { details: { status: failure.status, armCode: failure.code } });
}

function describe(failure: ArmFailure): string {
  const prefix = [failure.status, failure.code].filter((part) => part !== undefined).join(' ');
  const message = failure.message.length > 500 ? `${failure.message.slice(0, 500)}…` : failure.message;
  return prefix === '' ? message : `${prefix}: ${message}`;
}
