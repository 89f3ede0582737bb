/**
 * Errors carry a stable code and say whether a retry can help. The HTTP mapping lives in the API's
 * error handler (one place); the worker uses `retryable` to choose between back-off and failing at once.
 */

export const ERROR_CODES = {
  // request errors (API)
  VALIDATION_ERROR: 400,
  INVALID_JSON: 400,
  /** Files given by sha256 alone that the organization has not stored; details list them. */
  SOURCE_FILES_MISSING: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  INVALID_STATE: 409,
  IDEMPOTENCY_CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  QUOTA_EXCEEDED: 429,
  RATE_LIMITED: 429,
  DEPENDENCY_UNAVAILABLE: 503,
  /** This replica is at a capacity limit of its own (open event streams); another replica, or later, can serve it. */
  SERVER_BUSY: 503,
  INTERNAL_ERROR: 500,
  // deployment errors (worker; recorded on the deployment, never an HTTP answer)
  SOURCE_INVALID: 422,
  BUILD_FAILED: 422,
  /** The build ran but left no output where the build plan expects one (details: directories looked at). */
  BUILD_OUTPUT_MISSING: 422,
  BUILD_TIMEOUT: 422,
  DEPLOY_UNHEALTHY: 422,
  START_FAILED: 422,
  TIMEOUT: 422,
  CANCELLED: 409,
  CONCURRENT_UPDATE: 409,
  UNKNOWN_DEPLOYMENT: 404,
  MALFORMED_MESSAGE: 400,
  SANDBOX_FAILED: 502,
  REGISTRY_FAILED: 502,
  CLOUD_QUOTA_EXCEEDED: 502,
  IMAGE_PULL_FAILED: 502,
  NOT_IMPLEMENTED: 501,
  RETRIES_EXHAUSTED: 502,
  /** A newer deployment of the same app is live: this one never takes the traffic (ends `superseded`). */
  SUPERSEDED: 409,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface DeployErrorOptions {
  /** True when running the same operation again later can succeed (network, throttling, lock lost). */
  retryable?: boolean;
  details?: unknown;
  cause?: unknown;
  /** Seconds a client should wait before trying again (429, 503). */
  retryAfterSeconds?: number;
}

export class DeployError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly details: unknown;
  readonly retryAfterSeconds: number | undefined;

  constructor(code: ErrorCode, message: string, options: DeployErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DeployError';
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.details = options.details;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code];
  }
}

/** A transient failure: the worker backs off and tries the step again. */
export function transientError(message: string, cause?: unknown): DeployError {
  return new DeployError('DEPENDENCY_UNAVAILABLE', message, { retryable: true, cause });
}

/** Over the org's active-deployment limit: a 429 with Retry-After, the same wherever it is checked. */
export function quotaExceeded(active: number, limit: number): DeployError {
  return new DeployError('QUOTA_EXCEEDED', `The organization has ${active} active deployments; the limit is ${limit}`, {
    retryAfterSeconds: 30,
    details: { active, limit },
  });
}

export function isDeployError(error: unknown): error is DeployError {
  return error instanceof DeployError;
}

/** Turns anything thrown into a DeployError, keeping the code of ones that already are. */
export function asDeployError(error: unknown, fallback: ErrorCode = 'INTERNAL_ERROR'): DeployError {
  if (error instanceof DeployError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new DeployError(fallback, message, { cause: error });
}
