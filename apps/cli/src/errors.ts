/** Exit codes, as documented in the CLI's --help and the README. */
export const EXIT = {
  ok: 0,
  /** The deployment failed or was cancelled, or the API refused the operation. */
  failed: 1,
  /** Bad usage or flags, no or a refused token. */
  usage: 2,
  /** --timeout passed; the deployment goes on. */
  timeout: 124,
} as const;

/** A problem with how the CLI was called or configured (exit 2). */
export class UsageError extends Error {}

/** An error answer of the API, in its documented shape `{success: false, error, message, details?}`. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;

  constructor(status: number, code: string, message: string, details?: unknown) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }

  /** Auth problems are usage problems for a CLI: the user has to fix the token, not retry. */
  get exitCode(): number {
    return this.status === 401 || this.status === 403 ? EXIT.usage : EXIT.failed;
  }
}
