import Type from 'typebox';
import type { Static, TObject, TProperties } from 'typebox';
import AjvModule from 'ajv';
import type { ValidateFunction } from 'ajv';
import { OBJECT_RETENTION } from './source.ts';

/**
 * One config schema per app (apps/api/src/env.ts, apps/worker/src/env.ts), parsed once in main and
 * passed down as a typed object; no other module reads process.env. The fragments here are the
 * variables both apps share.
 */

export class ConfigError extends Error {
  readonly problems: { variable: string; message: string }[];

  constructor(problems: { variable: string; message: string }[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  ${p.variable}: ${p.message}`).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

function describe(error: { keyword: string; message: string; params: Record<string, unknown> }, schema: unknown): string {
  const options = schema as { anyOf?: { const?: unknown }[]; enum?: unknown[] } | undefined;
  if (options?.enum !== undefined) return `must be one of ${options.enum.map(String).join(', ')}`;
  const anyOf = options?.anyOf;
  if (anyOf !== undefined && anyOf.every((option) => option.const !== undefined)) {
    return `must be one of ${anyOf.map((option) => String(option.const)).join(', ')}`;
  }
  return error.message;
}

/**
 * The env schemas' validators, compiled once per schema by Ajv: the API's Fastify loads Ajv anyway,
 * where TypeBox's own `typebox/value` (Convert/Default/Check/Errors) loaded ~300 more modules and
 * ~3 MB of RSS into every service process at start (BENCHMARKS.md, issue 13's memory target).
 */
let ajv: InstanceType<typeof AjvModule.default> | null = null;
const validators = new WeakMap<object, ValidateFunction>();

function validatorOf(schema: TObject): ValidateFunction {
  let validate = validators.get(schema);
  if (validate === undefined) {
    // No meta-schema (the schemas are this code's own): it would be compiled to check them, for nothing.
    ajv ??= new AjvModule.default({ strict: false, allErrors: true, coerceTypes: true, useDefaults: true, meta: false, validateSchema: false, addUsedSchema: false });
    validate = ajv.compile(schema);
    validators.set(schema, validate);
  }
  return validate;
}

/** A boolean variable reads `true`/`false` (any case) or `1`/`0`; other text stays and is reported. */
function asBoolean(raw: string): boolean | string {
  const lower = raw.toLowerCase();
  if (lower === 'true' || raw === '1') return true;
  if (lower === 'false' || raw === '0') return false;
  return raw;
}

/** Parses `env` against `schema`: strings are converted, defaults applied, every bad variable named. */
export function parseEnv<P extends TProperties>(schema: TObject<P>, env: Record<string, string | undefined>): Static<TObject<P>> {
  const input: Record<string, unknown> = {};
  for (const [key, property] of Object.entries(schema.properties) as [string, { type?: unknown }][]) {
    const raw = env[key]?.trim();
    if (raw === undefined || raw === '') continue;
    input[key] = property.type === 'boolean' ? asBoolean(raw) : raw;
  }
  // Ajv converts numbers in place (coerceTypes) and fills in the defaults (useDefaults).
  const value = { ...input };
  const validate = validatorOf(schema);
  if (validate(value)) return value as Static<TObject<P>>;

  const problems = new Map<string, string>();
  for (const error of validate.errors ?? []) {
    const missing = (error.params as { missingProperty?: string }).missingProperty;
    const variable = error.instancePath.split('/')[1] ?? missing ?? '(root)';
    if (problems.has(variable)) continue;
    const given = input[variable];
    const shown = given === undefined ? 'is required' : describe({ keyword: error.keyword, message: error.message ?? 'is not valid', params: error.params }, schema.properties[variable]);
    problems.set(variable, given === undefined ? shown : `${shown} (got ${JSON.stringify(given).slice(0, 60)})`);
  }
  throw new ConfigError([...problems].map(([variable, message]) => ({ variable, message })));
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Variables every app reads. */
export const commonEnv = {
  DEPLOY_MODE: Type.Union([Type.Literal('local'), Type.Literal('azure')], {
    default: 'local',
    description: 'local: embedded adapters (SQLite, disk, local builds and processes); azure: Azure services.',
  }),
  DATA_DIR: Type.String({ default: './.data', description: 'Where local mode keeps its database, artifacts and builds.' }),
  LOG_LEVEL: Type.Enum(LOG_LEVELS, { default: 'info' }),
  DEPLOYMENT_TIMEOUT_MS: Type.Integer({ minimum: 1000, maximum: 24 * 3600 * 1000, default: 600_000 }),
  OBJECT_UPLOAD_WINDOW_MS: Type.Integer({
    minimum: 1,
    maximum: 3_600_000,
    default: OBJECT_RETENTION.uploadWindowMs,
    description:
      'API and worker (same value in both): a POST /deploy taking longer than this from looking up its stored files to storing its manifest looks them up again; the delete-app job waits this long before deleting the files only the deleted app used.',
  }),
  WEBHOOK_ALLOW_PRIVATE_NETWORKS: Type.Optional(
    Type.Boolean({ description: 'Webhooks may go to loopback and private addresses; default true in local mode, false in azure mode.' }),
  ),
};

/** The webhook address rules of a mode: private networks by WEBHOOK_ALLOW_PRIVATE_NETWORKS (default: local only), https in Azure. */
export function webhookPolicyOf(env: { DEPLOY_MODE: Provider; WEBHOOK_ALLOW_PRIVATE_NETWORKS?: boolean | undefined }) {
  return { allowPrivateNetworks: env.WEBHOOK_ALLOW_PRIVATE_NETWORKS ?? env.DEPLOY_MODE === 'local', requireHttps: env.DEPLOY_MODE === 'azure' };
}

export const positiveInt = (defaultValue: number, maximum: number, description: string) =>
  Type.Integer({ minimum: 1, maximum, default: defaultValue, description });

export type Provider = 'local' | 'azure';

export interface Providers {
  data: Provider;
  secrets: Provider;
  builder: Provider;
  runtime: Provider;
}

/**
 * Which adapter each port uses: DEPLOY_MODE for all, overridden per port by SECRETS_PROVIDER,
 * BUILDER_PROVIDER, RUNTIME_PROVIDER. Combinations that cannot work are refused up front:
 * kaniko reads build contexts from Blob Storage, Container Apps run images from ACR and read env
 * values from Key Vault, and the local runtime runs what the local builder made.
 */
export function chooseProviders(env: {
  DEPLOY_MODE: Provider;
  SECRETS_PROVIDER?: Provider | undefined;
  BUILDER_PROVIDER?: Provider | undefined;
  RUNTIME_PROVIDER?: Provider | undefined;
}): Providers {
  const providers: Providers = {
    data: env.DEPLOY_MODE,
    secrets: env.SECRETS_PROVIDER ?? env.DEPLOY_MODE,
    builder: env.BUILDER_PROVIDER ?? env.DEPLOY_MODE,
    runtime: env.RUNTIME_PROVIDER ?? env.DEPLOY_MODE,
  };
  const problems: { variable: string; message: string }[] = [];
  if (providers.secrets === 'azure' && providers.data === 'local') {
    problems.push({ variable: 'SECRETS_PROVIDER', message: 'azure needs DEPLOY_MODE=azure' });
  }
  if (providers.builder === 'azure' && providers.data === 'local') {
    problems.push({ variable: 'BUILDER_PROVIDER', message: 'azure needs DEPLOY_MODE=azure: kaniko reads the build context from Blob Storage' });
  }
  if (providers.runtime !== providers.builder) {
    problems.push({
      variable: 'RUNTIME_PROVIDER',
      message: `${providers.runtime} needs BUILDER_PROVIDER=${providers.runtime}: ${providers.runtime === 'azure' ? 'Container Apps run images pushed to ACR' : 'the local runtime runs what the local builder made'}`,
    });
  }
  if (providers.runtime === 'azure' && providers.secrets !== 'azure') {
    problems.push({ variable: 'SECRETS_PROVIDER', message: 'local cannot serve Container Apps, which read env values from Key Vault; set azure' });
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return providers;
}
