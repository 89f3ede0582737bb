import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import type { ValidateFunction } from 'ajv';

/**
 * Validates request bodies against an official Azure REST spec (swagger 2.0), as ARM's front door
 * does: `$ref`s resolve to the spec's definitions, `allOf` bases merge into one object, and an object
 * whose schema lists its properties accepts no others (ARM answers 400 for a misspelt property; a
 * plain JSON-schema reading of swagger would let it through). Properties marked `x-ms-secret` are
 * what `redact` blanks before a body is kept in a request log.
 */
export interface SwaggerBodyValidator {
  /** Problems of `body` as a `definition`, each `<path> <message>`; empty when valid. */
  validate(definition: string, body: unknown): string[];
  /** A copy of `body` with every secret value replaced by `[redacted]`. */
  redact(definition: string, body: unknown): unknown;
}

/** The official spec shipped beside the repository (../shared), as the issue names it. */
export const SHARED_CONTAINER_INSTANCE_SPEC = fileURLToPath(
  new URL('../../../../../../shared/azure-rest-specs/Microsoft.ContainerInstance/2023-05-01/containerInstance.json', import.meta.url),
);
/** A byte-identical copy in the repository, for checkouts without ../shared (GitHub Actions). */
export const VENDORED_CONTAINER_INSTANCE_SPEC = fileURLToPath(new URL('../../../specs/containerInstance-2023-05-01.json', import.meta.url));

/** The spec of the ACI API version @azure/arm-containerinstance 9.1.0 calls: ../shared's when present. */
export const CONTAINER_INSTANCE_SPEC = existsSync(SHARED_CONTAINER_INSTANCE_SPEC) ? SHARED_CONTAINER_INSTANCE_SPEC : VENDORED_CONTAINER_INSTANCE_SPEC;

type Schema = Record<string, unknown>;
interface SwaggerDocument {
  definitions: Record<string, Schema>;
}

/** JSON-schema keywords kept from swagger; everything else (x-ms-*, descriptions, examples) is dropped. */
const KEPT = new Set(['type', 'required', 'enum', 'format', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'minLength', 'maxLength', 'pattern', 'minItems', 'maxItems', 'uniqueItems']);
const REDACTED = '[redacted]';

export function loadSwaggerValidator(specPath: string, options: { secretMaps?: readonly string[] } = {}): SwaggerBodyValidator {
  const document = JSON.parse(readFileSync(specPath, 'utf8')) as SwaggerDocument;
  if (document.definitions === undefined) throw new Error(`${specPath} has no definitions`);
  const secretMaps = new Set(options.secretMaps ?? []);
  const normalized: Record<string, Schema> = {};
  for (const [name, schema] of Object.entries(document.definitions)) normalized[name] = normalize(schema, document, secretMaps.has(name), new Set([name]));

  const ajv = new Ajv({ allErrors: true, strict: true, strictTypes: false, strictTuples: false });
  ajv.addKeyword({ keyword: 'x-secret', schemaType: 'boolean' });
  ajv.addFormat('int32', { type: 'number', validate: (value: number) => Number.isInteger(value) && value >= -(2 ** 31) && value < 2 ** 31 });
  ajv.addFormat('int64', { type: 'number', validate: (value: number) => Number.isInteger(value) });
  ajv.addFormat('double', { type: 'number', validate: (value: number) => Number.isFinite(value) });
  ajv.addFormat('float', { type: 'number', validate: (value: number) => Number.isFinite(value) });
  ajv.addFormat('date-time', { type: 'string', validate: (value: string) => !Number.isNaN(Date.parse(value)) });
  ajv.addFormat('uuid', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i);
  ajv.addFormat('uri', { type: 'string', validate: (value: string) => URL.canParse(value) });
  ajv.addFormat('password', { type: 'string', validate: () => true });
  ajv.addFormat('byte', /^[A-Za-z0-9+/]*={0,2}$/);
  ajv.addFormat('arm-id', /^\//);
  ajv.addSchema({ $id: 'spec', definitions: normalized });
  const compiled = new Map<string, ValidateFunction>();

  const schemaOf = (definition: string): Schema => {
    const schema = normalized[definition];
    if (schema === undefined) throw new Error(`${specPath} has no definition ${definition}`);
    return schema;
  };

  return {
    validate(definition, body) {
      schemaOf(definition);
      let validate = compiled.get(definition);
      if (validate === undefined) {
        validate = ajv.compile({ $ref: `spec#/definitions/${definition}` });
        compiled.set(definition, validate);
      }
      if (validate(body)) return [];
      return (validate.errors ?? []).map((error) => {
        const where = error.instancePath === '' ? '(body)' : error.instancePath;
        const extra = error.keyword === 'additionalProperties' ? ` '${String((error.params as { additionalProperty?: unknown }).additionalProperty)}'` : '';
        return `${where} ${error.message ?? error.keyword}${extra}`;
      });
    },
    redact(definition, body) {
      return redactWith(schemaOf(definition), body, normalized);
    },
  };
}

/** Swagger node → JSON-schema node: refs kept (to `spec#/definitions/…`), allOf merged, objects closed. */
function normalize(schema: Schema, document: SwaggerDocument, secretMap: boolean, seen: ReadonlySet<string>): Schema {
  if (typeof schema.$ref === 'string') return { $ref: `spec#/definitions/${definitionName(schema.$ref)}` };
  const merged = mergeAllOf(schema, document, seen);
  const out: Schema = {};
  for (const [key, value] of Object.entries(merged)) if (KEPT.has(key)) out[key] = value;
  if (merged['x-ms-secret'] === true) out['x-secret'] = true;
  const properties = merged.properties as Record<string, Schema> | undefined;
  if (properties !== undefined) {
    out.properties = Object.fromEntries(Object.entries(properties).map(([name, child]) => [name, normalize(child, document, false, seen)]));
    out.type ??= 'object';
  }
  if (merged.items !== undefined) out.items = normalize(merged.items as Schema, document, false, seen);
  const additional = merged.additionalProperties;
  if (additional !== undefined && typeof additional === 'object' && additional !== null) {
    const child = normalize(additional as Schema, document, false, seen);
    out.additionalProperties = secretMap ? { ...child, 'x-secret': true } : child;
  } else if (typeof additional === 'boolean') {
    out.additionalProperties = additional;
  } else if (properties !== undefined) {
    // ARM rejects properties its schema does not list.
    out.additionalProperties = false;
  }
  return out;
}

/** One object schema out of `allOf: [$ref Base, …]` plus the node's own properties. */
function mergeAllOf(schema: Schema, document: SwaggerDocument, seen: ReadonlySet<string>): Schema {
  const parts = schema.allOf as Schema[] | undefined;
  if (parts === undefined) return schema;
  const properties: Record<string, Schema> = {};
  const required = new Set<string>();
  for (const part of parts) {
    let resolved = part;
    if (typeof part.$ref === 'string') {
      const name = definitionName(part.$ref);
      if (seen.has(name)) throw new Error(`allOf cycle through ${name}`);
      const target = document.definitions[name];
      if (target === undefined) throw new Error(`unresolved $ref ${part.$ref}`);
      resolved = mergeAllOf(target, document, new Set([...seen, name]));
    }
    Object.assign(properties, resolved.properties as Record<string, Schema> | undefined);
    for (const name of (resolved.required as string[] | undefined) ?? []) required.add(name);
  }
  Object.assign(properties, schema.properties as Record<string, Schema> | undefined);
  for (const name of (schema.required as string[] | undefined) ?? []) required.add(name);
  const { allOf: _allOf, ...rest } = schema;
  return { ...rest, type: 'object', properties, ...(required.size > 0 ? { required: [...required] } : {}) };
}

function definitionName(ref: string): string {
  const match = /^#\/definitions\/(.+)$/.exec(ref);
  if (match?.[1] === undefined) throw new Error(`only local definition $refs are supported, got ${ref}`);
  return match[1];
}

function redactWith(schema: Schema, value: unknown, definitions: Record<string, Schema>): unknown {
  let node = schema;
  while (typeof node.$ref === 'string') {
    const target = definitions[node.$ref.replace('spec#/definitions/', '')];
    if (target === undefined) return value;
    node = target;
  }
  if (node['x-secret'] === true && value !== undefined && value !== null) return REDACTED;
  if (Array.isArray(value)) {
    const items = node.items as Schema | undefined;
    return items === undefined ? value : value.map((item) => redactWith(items, item, definitions));
  }
  if (value !== null && typeof value === 'object') {
    const properties = (node.properties as Record<string, Schema> | undefined) ?? {};
    const additional = typeof node.additionalProperties === 'object' ? (node.additionalProperties as Schema) : undefined;
    const out: Record<string, unknown> = {};
    for (const [key, child] of Object.entries(value)) {
      const childSchema = properties[key] ?? additional;
      out[key] = childSchema === undefined ? child : redactWith(childSchema, child, definitions);
    }
    return out;
  }
  return value;
}
