import { existsSync, readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
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

/**
 * Microsoft.App 2025-07-01, the newest version published as separate files (the SDK calls
 * 2026-07-01): ../shared/azure-rest-specs, unmodified, with the common types its `$ref`s reach.
 */
export const SHARED_REST_SPECS = fileURLToPath(new URL('../../../../../../shared/azure-rest-specs/', import.meta.url));
/** Byte-identical copies of those files in the repository, same layout, for checkouts without ../shared. */
export const VENDORED_REST_SPECS = fileURLToPath(new URL('../../../specs/azure-rest-specs/', import.meta.url));
const REST_SPECS = existsSync(SHARED_REST_SPECS) ? SHARED_REST_SPECS : VENDORED_REST_SPECS;
/** The Microsoft.App files the simulator validates with; their definitions are addressed by plain name. */
export const CONTAINER_APPS_SPECS = ['ContainerApps.json', 'CommonDefinitions.json'].map((file) => resolve(REST_SPECS, 'Microsoft.App/2025-07-01', file));
/** Every file of the copied set (for the byte-identity test). */
export const REST_SPEC_FILES = [
  'Microsoft.App/2025-07-01/ContainerApps.json',
  'Microsoft.App/2025-07-01/CommonDefinitions.json',
  'Microsoft.App/2025-07-01/ContainerAppsRevisions.json',
  'Microsoft.App/2025-07-01/ManagedEnvironments.json',
  'common-types/resource-management/v3/types.json',
  'common-types/resource-management/v3/managedidentity.json',
  'common-types/resource-management/v5/types.json',
  'common-types/resource-management/v5/privatelinks.json',
];
/**
 * The Microsoft.App files keep the upstream layout: `../../../../../../common-types/` climbs to
 * `specification/`; in the copied tree the common types are two folders up (its README says so).
 */
const COMMON_TYPES_PREFIX = '../../../../../../common-types/';

type Schema = Record<string, unknown>;
interface SwaggerDocument {
  definitions: Record<string, Schema>;
}

/** JSON-schema keywords kept from swagger; everything else (x-ms-*, descriptions, examples) is dropped. */
const KEPT = new Set(['type', 'required', 'enum', 'format', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'minLength', 'maxLength', 'pattern', 'minItems', 'maxItems', 'uniqueItems']);
const REDACTED = '[redacted]';

/**
 * `specPaths`: one file, or several whose definitions are all addressed by plain name (they must not
 * clash). `$ref`s to other files (`./CommonDefinitions.json#/definitions/X`, the common types) are
 * followed; their definitions get keys qualified by file.
 */
export function loadSwaggerValidator(specPaths: string | readonly string[], options: { secretMaps?: readonly string[] } = {}): SwaggerBodyValidator {
  const roots = (typeof specPaths === 'string' ? [specPaths] : [...specPaths]).map((path) => resolve(path));
  const specPath = roots.join(', ');
  const secretMaps = new Set(options.secretMaps ?? []);
  const documents = new SpecFiles(roots);
  const normalized: Record<string, Schema> = {};
  // Every file reachable from the roots, every definition in it (roots first: their plain names).
  for (let index = 0; index < documents.loaded.length; index += 1) {
    const file = documents.loaded[index];
    if (file === undefined) continue;
    const document = documents.get(file);
    for (const [name, schema] of Object.entries(document.definitions)) {
      const key = documents.key(file, name);
      if (normalized[key] !== undefined) throw new Error(`definition ${name} is in two root files`);
      normalized[key] = normalize(schema, documents, file, secretMaps.has(name), new Set([key]));
    }
  }

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

/** The files of a spec, loaded as `$ref`s reach them; keys of their definitions in the one schema. */
class SpecFiles {
  readonly loaded: string[] = [];
  private readonly documents = new Map<string, SwaggerDocument>();
  private readonly roots: ReadonlySet<string>;
  private readonly base: string;

  constructor(roots: readonly string[]) {
    this.roots = new Set(roots);
    this.base = dirname(roots[0] ?? '.');
    for (const root of roots) this.get(root);
  }

  get(file: string): SwaggerDocument {
    let document = this.documents.get(file);
    if (document === undefined) {
      document = JSON.parse(readFileSync(file, 'utf8')) as SwaggerDocument;
      if (document.definitions === undefined) document = { definitions: {} };
      this.documents.set(file, document);
      this.loaded.push(file);
    }
    return document;
  }

  /** Plain name in a root file; else qualified by the file's path (Ajv wants a safe pointer segment). */
  key(file: string, name: string): string {
    if (this.roots.has(file)) return name;
    return `${relative(this.base, file).replace(/[^A-Za-z0-9_.-]+/g, '_')}__${name}`;
  }

  /** The file and definition a `$ref` made in `from` points at. */
  resolve(from: string, ref: string): { file: string; name: string; schema: Schema } {
    const match = /^([^#]*)#\/definitions\/(.+)$/.exec(ref);
    if (match?.[2] === undefined) throw new Error(`only definition $refs are supported, got ${ref}`);
    const path = match[1] ?? '';
    const file = path === '' ? from : resolve(dirname(from), path.startsWith(COMMON_TYPES_PREFIX) ? `../../common-types/${path.slice(COMMON_TYPES_PREFIX.length)}` : path);
    const schema = this.get(file).definitions[match[2]];
    if (schema === undefined) throw new Error(`unresolved $ref ${ref} (from ${from})`);
    return { file, name: match[2], schema };
  }
}

/** Swagger node → JSON-schema node: refs kept (to `spec#/definitions/…`), allOf merged, objects closed. */
function normalize(schema: Schema, document: SpecFiles, file: string, secretMap: boolean, seen: ReadonlySet<string>): Schema {
  if (typeof schema.$ref === 'string') {
    const target = document.resolve(file, schema.$ref);
    return { $ref: `spec#/definitions/${document.key(target.file, target.name)}` };
  }
  const merged = mergeAllOf(schema, document, file, seen);
  const out: Schema = {};
  for (const [key, value] of Object.entries(merged.schema)) if (KEPT.has(key)) out[key] = value;
  if (merged.schema['x-ms-secret'] === true) out['x-secret'] = true;
  if (merged.properties !== undefined) {
    out.properties = Object.fromEntries([...merged.properties].map(([name, child]) => [name, normalize(child.schema, document, child.file, false, seen)]));
    out.type ??= 'object';
    if (merged.required.size > 0) out.required = [...merged.required];
  }
  if (merged.schema.items !== undefined) out.items = normalize(merged.schema.items as Schema, document, file, false, seen);
  const additional = merged.schema.additionalProperties;
  if (additional !== undefined && typeof additional === 'object' && additional !== null) {
    const child = normalize(additional as Schema, document, file, false, seen);
    out.additionalProperties = secretMap ? { ...child, 'x-secret': true } : child;
  } else if (typeof additional === 'boolean') {
    out.additionalProperties = additional;
  } else if (merged.properties !== undefined) {
    // ARM rejects properties its schema does not list.
    out.additionalProperties = false;
  }
  return out;
}

interface MergedSchema {
  schema: Schema;
  /** Each property with the file its `$ref`s are relative to (a base may live in another file). */
  properties: Map<string, { schema: Schema; file: string }> | undefined;
  required: Set<string>;
}

/** One object schema out of `allOf: [$ref Base, …]` plus the node's own properties. */
function mergeAllOf(schema: Schema, document: SpecFiles, file: string, seen: ReadonlySet<string>): MergedSchema {
  const own = schema.properties as Record<string, Schema> | undefined;
  const required = new Set<string>((schema.required as string[] | undefined) ?? []);
  const parts = schema.allOf as Schema[] | undefined;
  const ownProperties = own === undefined ? undefined : new Map(Object.entries(own).map(([name, child]) => [name, { schema: child, file }]));
  if (parts === undefined) return { schema, properties: ownProperties, required };
  const properties = new Map<string, { schema: Schema; file: string }>();
  for (const part of parts) {
    let resolved: MergedSchema;
    if (typeof part.$ref === 'string') {
      const target = document.resolve(file, part.$ref);
      const key = document.key(target.file, target.name);
      if (seen.has(key)) throw new Error(`allOf cycle through ${key}`);
      resolved = mergeAllOf(target.schema, document, target.file, new Set([...seen, key]));
    } else {
      resolved = mergeAllOf(part, document, file, seen);
    }
    for (const [name, child] of resolved.properties ?? []) properties.set(name, child);
    for (const name of resolved.required) required.add(name);
  }
  for (const [name, child] of ownProperties ?? []) properties.set(name, child);
  const { allOf: _allOf, properties: _properties, required: _required, ...rest } = schema;
  return { schema: { ...rest, type: 'object' }, properties, required };
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
