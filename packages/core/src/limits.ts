/**
 * Every limit the service enforces, in one place. The README's "Limits" table and the OpenAPI
 * descriptions are written from these numbers; a request over any of them is a 400 (413 for the body)
 * whose details name the field.
 */
export const LIMITS = {
  /** Largest accepted request body (JSON, before base64 decoding). */
  bodyBytes: 16 * 1024 * 1024,
  /** Number of files in one deployment. */
  files: 2000,
  /** One file, after base64 decoding. */
  fileBytes: 5 * 1024 * 1024,
  /** All files together, after decoding. */
  sourceBytes: 12 * 1024 * 1024,
  /** A file path: relative, `/`-separated, no `..`, no control characters. */
  pathLength: 512,
  pathSegmentLength: 255,
  pathDepth: 32,
  /** projectId, organizationId, userId. */
  idLength: 128,
  projectNameLength: 100,
  domainLength: 253,
  envVariables: 100,
  envNameLength: 128,
  /** Key Vault stores at most 25 KB per secret; the same limit holds locally so a deployment moves between modes. */
  envValueBytes: 24 * 1024,
  commandLength: 1024,
  historyMessages: 500,
  historyMessageLength: 64 * 1024,
  idempotencyKeyLength: 255,
  pageSize: 100,
  defaultPageSize: 20,
  cursorLength: 2048,
  /** Log lines kept per deployment; later lines are dropped with a notice. */
  logBytesPerDeployment: 5 * 1024 * 1024,
  logLineLength: 4096,
  /** Lines the status endpoint returns. */
  statusLogLines: 50,
} as const;

/** Identifier form for projectId, organizationId and userId. */
export const ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$';
/** `dep_` + 26 lowercase base32 characters (130 random bits). */
export const DEPLOYMENT_ID_PATTERN = '^dep_[a-z2-7]{26}$';
/** POSIX-style environment variable names. */
export const ENV_NAME_PATTERN = '^[A-Za-z_][A-Za-z0-9_]{0,127}$';
/** Names the service sets itself; a request may not override them. */
export const RESERVED_ENV_NAMES: readonly string[] = ['PORT'];
/** A DNS host name with at least two labels, each 1-63 of [a-z0-9-], not starting or ending with `-`. */
export const DOMAIN_PATTERN = '^(?=.{4,253}$)(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\\.)+[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$';

/**
 * CPU/memory pairs Azure Container Apps accepts on the Consumption profile: 0.25 vCPU steps up to 4,
 * memory always twice the CPU in GiB.
 */
export const CONTAINER_SIZES: readonly { cpu: number; memory: string }[] = Array.from({ length: 16 }, (_, i) => {
  const cpu = (i + 1) * 0.25;
  return { cpu, memory: `${cpu * 2}Gi` };
});

export function isAllowedContainerSize(cpu: number, memory: string): boolean {
  return CONTAINER_SIZES.some((size) => size.cpu === cpu && size.memory === memory);
}
