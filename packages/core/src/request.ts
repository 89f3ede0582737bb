import Type from 'typebox';
import type { Static } from 'typebox';
import type { ContainerSize } from './deployment.ts';
import type { Environment } from './glossary.ts';
import { ENVIRONMENTS } from './glossary.ts';
import { sha256Hex } from './ids.ts';
import {
  DOMAIN_PATTERN,
  ENV_NAME_PATTERN,
  ID_PATTERN,
  isAllowedContainerSize,
  LIMITS,
  RESERVED_ENV_NAMES,
} from './limits.ts';
import { checkSourcePath, FILE_DIGEST_PATTERN } from './source.ts';

/**
 * The body of `POST /deploy` (and its v2 alias `POST /api/deploy`). One schema gives validation,
 * TypeScript types and the OpenAPI document. Accepts the v1 names `orgId` and `initFiles`.
 * Checks a JSON schema cannot express (decoded sizes, duplicate paths, allowed CPU/memory pairs)
 * are in `checkDeployRequest`, which names the field of every violation the same way.
 */

/** No control or invisible format characters (NUL, newlines, bidi overrides, zero-width). */
const PRINTABLE = '^[^\\p{Cc}\\p{Cf}]*$';

const Id = (description: string) =>
  Type.String({ minLength: 1, maxLength: LIMITS.idLength, pattern: ID_PATTERN, description });

const Command = (description: string) =>
  Type.String({ minLength: 1, maxLength: LIMITS.commandLength, pattern: PRINTABLE, description });

export const FileEntrySchema = Type.Object(
  {
    path: Type.String({
      minLength: 1,
      maxLength: LIMITS.pathLength,
      description:
        'Relative path with `/` separators: no leading `/`, no drive letter, no `.` or `..` segment, no `\\`, no control characters.',
    }),
    content: Type.Optional(
      Type.String({
        // base64 of the largest file; the decoded size is checked separately.
        maxLength: Math.ceil(LIMITS.fileBytes / 3) * 4,
        description: `File content, at most ${LIMITS.fileBytes} bytes once decoded. Optional when \`sha256\` is given.`,
      }),
    ),
    sha256: Type.Optional(
      Type.String({
        pattern: FILE_DIGEST_PATTERN,
        description:
          'SHA-256 of the (decoded) content, 64 lowercase hex. Without `content`, the file is taken from what the organization ' +
          'stored before (any earlier deployment with the same content); when the organization does not have it, the request is a ' +
          '400 `SOURCE_FILES_MISSING` listing every missing `{path, sha256}`, and nothing is stored or queued. With `content`, ' +
          'the content must hash to it. Such files count toward the file count and size limits like sent ones.',
      }),
    ),
    encoding: Type.Optional(
      Type.Union([Type.Literal('utf8'), Type.Literal('base64')], { default: 'utf8', description: 'Encoding of `content`.' }),
    ),
  },
  { additionalProperties: false, description: 'One file: `content`, `sha256`, or both.' },
);

const Files = Type.Array(FileEntrySchema, {
  maxItems: LIMITS.files,
  description: `The project's files, at most ${LIMITS.files}, ${LIMITS.sourceBytes} bytes in all once decoded (files given by \`sha256\` alone included).`,
});

export const ContainerSizeSchema = Type.Object(
  {
    cpu: Type.Union([Type.Number({ minimum: 0.25, maximum: 4 }), Type.String({ pattern: '^[0-9]+(\\.[0-9]+)?$', maxLength: 6 })], {
      description: 'vCPU: 0.25 to 4 in steps of 0.25.',
    }),
    memory: Type.String({ pattern: '^[0-9]+(\\.[0-9]+)?Gi$', maxLength: 8, description: 'Twice the CPU, e.g. `2Gi` for 1 vCPU.' }),
  },
  { additionalProperties: false, description: 'A CPU/memory pair Azure Container Apps accepts.' },
);

export const HistoryMessageSchema = Type.Object(
  {
    role: Type.Union([Type.Literal('user'), Type.Literal('assistant'), Type.Literal('system')]),
    content: Type.String({ maxLength: LIMITS.historyMessageLength }),
  },
  { additionalProperties: false },
);

export const DeployRequestSchema = Type.Object(
  {
    projectId: Id('Project id.'),
    organizationId: Type.Optional(Id('Organization id; must be the token\'s organization. `orgId` is accepted too.')),
    orgId: Type.Optional(Id('v1 name of `organizationId`.')),
    userId: Id('User who asked for the deployment.'),
    projectName: Type.Optional(Type.String({ minLength: 1, maxLength: LIMITS.projectNameLength, pattern: PRINTABLE })),
    environment: Type.Optional(
      Type.Enum(ENVIRONMENTS, { description: 'Target environment; `development` when absent.' }),
    ),
    customDomain: Type.Optional(
      Type.String({ maxLength: LIMITS.domainLength, pattern: DOMAIN_PATTERN, description: 'Host name to serve the app on.' }),
    ),
    containerSize: Type.Optional(ContainerSizeSchema),
    envVariables: Type.Optional(
      Type.Record(Type.String({ pattern: ENV_NAME_PATTERN }), Type.String({ maxLength: LIMITS.envValueBytes }), {
        maxProperties: LIMITS.envVariables,
        // Without this a Record only checks the names that match the pattern and lets others through.
        additionalProperties: false,
        description: `Name → value, at most ${LIMITS.envVariables}. Values are secrets: stored in the secret store, never returned or logged.`,
      }),
    ),
    buildEnv: Type.Optional(
      Type.Array(Type.String({ pattern: ENV_NAME_PATTERN }), {
        maxItems: LIMITS.envVariables,
        uniqueItems: true,
        description:
          'Names of envVariables the build reads (scope `build`): changing one later rebuilds instead of restarting. Names starting with ' +
          'VITE_, NEXT_PUBLIC_, PUBLIC_, NUXT_PUBLIC_, REACT_APP_ or GATSBY_ are build-scoped without being listed.',
      }),
    ),
    buildCommand: Type.Optional(Command('Build command; the `build` script of package.json when absent.')),
    startCommand: Type.Optional(Command('Start command; the `start` script when absent, else the project is a static site served from its build output.')),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, description: 'Port the app listens on (given to it as PORT).' })),
    files: Type.Optional(Files),
    initFiles: Type.Optional(Files),
    historyMessages: Type.Optional(
      Type.Array(HistoryMessageSchema, { maxItems: LIMITS.historyMessages, description: 'Kept as metadata with the source.' }),
    ),
  },
  { additionalProperties: false },
);

export type DeployRequestBody = Static<typeof DeployRequestSchema>;

export interface FieldError {
  field: string;
  message: string;
}

export interface SourceFile {
  path: string;
  data: Buffer;
}

/** A file of a request: its digest, and its content unless the client referred to a stored object. */
export interface RequestFile {
  path: string;
  sha256: string;
  data: Buffer | null;
}

/** A validated request, with aliases resolved and file contents decoded. */
export interface DeployRequest {
  projectId: string;
  orgId: string;
  userId: string;
  projectName: string | null;
  environment: Environment;
  customDomain: string | null;
  containerSize: ContainerSize | null;
  envVariables: Record<string, string>;
  /**
   * Whether the request carried `envVariables`. Without them a deployment runs with its app's current
   * env values; with them, with exactly those, which become the app's current ones (issue 12).
   */
  envVariablesGiven: boolean;
  /** Names the request marked build-scoped (`buildEnv`). */
  buildEnv: string[];
  buildCommand: string | null;
  startCommand: string | null;
  port: number | null;
  /** Content sizes are checked; files given by digest alone are checked against the limits once found. */
  files: RequestFile[];
  historyMessages: { role: string; content: string }[];
}

/** The message for sources over LIMITS.sourceBytes; also used once files given by digest are found. */
export function sourceBytesProblem(total: number): string {
  return `files total ${total} bytes; the limit is ${LIMITS.sourceBytes}`;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * What is wrong with one env variable beyond the schema's name pattern: a reserved name, a NUL, a
 * value over LIMITS.envValueBytes (bytes, not characters). POST /deploy and the env endpoints share it.
 */
export function envValueProblems(name: string, value: string, field: string): FieldError[] {
  const errors: FieldError[] = [];
  if (RESERVED_ENV_NAMES.includes(name)) errors.push({ field, message: `${name} is set by the service; use the \`port\` field instead` });
  if (value.includes('\u0000')) errors.push({ field, message: 'contains a NUL character' });
  if (Buffer.byteLength(value) > LIMITS.envValueBytes) errors.push({ field, message: `is longer than ${LIMITS.envValueBytes} bytes` });
  return errors;
}

/**
 * Checks what the schema cannot, and resolves aliases. `body` must already match DeployRequestSchema.
 * Returns every violation (not only the first), each naming its field.
 */
export function checkDeployRequest(body: DeployRequestBody): { request: DeployRequest } | { errors: FieldError[] } {
  const errors: FieldError[] = [];

  const orgId = body.organizationId ?? body.orgId;
  if (orgId === undefined) errors.push({ field: 'organizationId', message: 'is required (or orgId)' });
  if (body.organizationId !== undefined && body.orgId !== undefined && body.organizationId !== body.orgId) {
    errors.push({ field: 'orgId', message: 'differs from organizationId' });
  }

  if (body.files !== undefined && body.initFiles !== undefined) {
    errors.push({ field: 'initFiles', message: 'send files or initFiles, not both' });
  }
  const fileField = body.files !== undefined ? 'files' : 'initFiles';
  const entries = body.files ?? body.initFiles ?? [];
  if (entries.length === 0) errors.push({ field: 'files', message: 'at least one file is required' });

  const files: RequestFile[] = [];
  const seen = new Set<string>();
  let total = 0;
  entries.forEach((entry, index) => {
    const field = `${fileField}/${index}`;
    const pathProblem = checkSourcePath(entry.path);
    if (pathProblem !== null) errors.push({ field: `${field}/path`, message: pathProblem });
    if (seen.has(entry.path)) errors.push({ field: `${field}/path`, message: 'duplicate path' });
    seen.add(entry.path);
    if (entry.content === undefined) {
      if (entry.sha256 === undefined) errors.push({ field, message: 'needs content or sha256' });
      else files.push({ path: entry.path, sha256: entry.sha256, data: null });
      return;
    }
    let data: Buffer;
    if (entry.encoding === 'base64') {
      if (!BASE64.test(entry.content)) {
        errors.push({ field: `${field}/content`, message: 'is not valid base64' });
        return;
      }
      data = Buffer.from(entry.content, 'base64');
    } else {
      data = Buffer.from(entry.content, 'utf8');
    }
    if (data.length > LIMITS.fileBytes) {
      errors.push({ field: `${field}/content`, message: `is ${data.length} bytes; the limit is ${LIMITS.fileBytes}` });
    }
    total += data.length;
    const sha256 = sha256Hex(data);
    if (entry.sha256 !== undefined && entry.sha256 !== sha256) {
      errors.push({ field: `${field}/sha256`, message: `does not match the content, whose sha256 is ${sha256}` });
    }
    files.push({ path: entry.path, sha256, data });
  });
  if (total > LIMITS.sourceBytes) {
    errors.push({ field: fileField, message: sourceBytesProblem(total) });
  }

  let containerSize: ContainerSize | null = null;
  if (body.containerSize !== undefined) {
    const cpu = Number(body.containerSize.cpu);
    if (!isAllowedContainerSize(cpu, body.containerSize.memory)) {
      errors.push({
        field: 'containerSize',
        message: 'must be an allowed pair: cpu 0.25 to 4 in steps of 0.25 with memory twice the cpu in Gi (e.g. 1 and 2Gi)',
      });
    } else {
      containerSize = { cpu, memory: body.containerSize.memory };
    }
  }

  const envVariables = body.envVariables ?? {};
  for (const [name, value] of Object.entries(envVariables)) errors.push(...envValueProblems(name, value, `envVariables/${name}`));
  for (const name of body.buildEnv ?? []) {
    if (!(name in envVariables)) errors.push({ field: 'buildEnv', message: `names ${name}, which is not in envVariables` });
  }

  if (errors.length > 0 || orgId === undefined) return { errors };
  return {
    request: {
      projectId: body.projectId,
      orgId,
      userId: body.userId,
      projectName: body.projectName ?? null,
      environment: body.environment ?? 'development',
      customDomain: body.customDomain?.toLowerCase() ?? null,
      containerSize,
      envVariables: { ...envVariables },
      envVariablesGiven: body.envVariables !== undefined,
      buildEnv: [...(body.buildEnv ?? [])],
      buildCommand: body.buildCommand ?? null,
      startCommand: body.startCommand ?? null,
      port: body.port ?? null,
      files,
      historyMessages: body.historyMessages ?? [],
    },
  };
}
