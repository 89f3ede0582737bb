import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ApiEnvSchema } from '../../apps/api/src/env.ts';
import { WorkerEnvSchema } from '../../apps/worker/src/env.ts';
import { azureEnv } from '../../packages/azure/src/env.ts';
import { containerEnvNames } from './bicep-source.ts';
import { readRepoFile } from './repo-files.ts';

// The variables each app reads come from its schema, never from a list copied here, so a variable a
// colleague adds must also be set in Azure (Bicep), in docker-compose.yml and in .env.example, or
// be listed below with the reason it must not be.

/** Read by the apps, but never set on the Azure container apps. */
const NOT_IN_BICEP: Record<string, string> = {
  DATA_DIR: 'local mode\'s database and files; in Azure the default ./.data is the container\'s scratch space',
  LOCAL_ROUTER_PORT: 'the local runtime\'s router; in Azure apps are Container Apps with their own ingress',
  LOCAL_ROUTER_HOST: 'the local runtime\'s router, as LOCAL_ROUTER_PORT',
  LOCAL_STATIC_CACHE_MB: 'the local router\'s memory for static files; in Azure a static site is its own nginx Container App',
  LOCAL_STATIC_CACHE_FILE_KB: 'the local router\'s memory for static files, as LOCAL_STATIC_CACHE_MB',
  QUEUE_LOCK_DURATION_MS: 'the SQLite queue\'s lock; the Service Bus lock duration is a queue property (infra/modules/servicebus.bicep)',
  LOCAL_BUILD_ISOLATION: 'the local builder\'s sandboxing; in Azure every build runs in its own ACI container group',
  LOCAL_UID_RANGE: 'the local builder\'s uids, as LOCAL_BUILD_ISOLATION',
  LOCAL_SANDBOX_DIR: 'where local builds and apps run; in Azure each runs in its own container',
  LOCAL_LIMIT_MEMORY_MB: 'limits of local builds and apps; in Azure the container size sets them',
  LOCAL_LIMIT_PROCESSES: 'limits of local builds and apps, as LOCAL_LIMIT_MEMORY_MB',
  LOCAL_LIMIT_OPEN_FILES: 'limits of local builds and apps, as LOCAL_LIMIT_MEMORY_MB',
  LOCAL_SINGLE_TENANT: 'local mode\'s refusal of several organizations without uid isolation; Azure isolates each app in its own Container App',
  BUILD_ENV_PASSTHROUGH: 'the local builder\'s environment; in Azure kaniko builds in its own container group',
  LOCAL_BUILD_CACHE_MAX_MB: 'the local builder\'s dependency cache; in Azure kaniko caches the install layer in the registry (the generated Dockerfile installs before copying the sources)',
  LOCAL_BUILD_CACHE_MAX_AGE_DAYS: 'the local builder\'s dependency cache, as LOCAL_BUILD_CACHE_MAX_MB',
  AZURE_SERVICE_BUS_CONNECTION_STRING: 'emulator only: in Azure the apps use managed identity and AZURE_SERVICE_BUS_NAMESPACE (local auth is off)',
  AZURE_STORAGE_CONNECTION_STRING: 'emulator only: in Azure the apps use managed identity and AZURE_STORAGE_ACCOUNT_URL',
  AZURE_COSMOS_CONNECTION_STRING: 'emulator only: in Azure the apps use managed identity and AZURE_COSMOS_ENDPOINT (local auth is off)',
  AZURE_CREATE_IF_MISSING: 'emulator only: in Azure infra/main.bicep creates the database, containers and queue, and the apps have no rights to',
};

/** Read by the apps, but never set by docker-compose.yml (which runs Azure mode on the emulators). */
const NOT_IN_COMPOSE: Record<string, string> = {
  QUEUE_LOCK_DURATION_MS: 'the SQLite queue\'s lock; compose uses the Service Bus emulator',
  LOCAL_SANDBOX_DIR: 'compose runs local builds as the worker\'s own user (no uid isolation), which keeps them in DATA_DIR',
};

/** In .env.example for docker compose, read by no app. */
const COMPOSE_ONLY = ['MSSQL_SA_PASSWORD', 'ACCEPT_EULA'];

const APPS = {
  api: { schema: Object.keys(ApiEnvSchema.properties), bicep: 'infra/modules/api-app.bicep' },
  worker: { schema: Object.keys(WorkerEnvSchema.properties), bicep: 'infra/modules/worker-app.bicep' },
} as const;

const difference = (a: readonly string[], b: readonly string[]) => a.filter((name) => !b.includes(name)).sort();

function composeEnvironment(service: string): string[] {
  const compose = parse(readRepoFile('docker-compose.yml'), { merge: true }) as { services: Record<string, { environment?: Record<string, unknown> }> };
  return Object.keys(compose.services[service]?.environment ?? {});
}

/** `NAME=value` and `# NAME=value` lines of .env.example. */
function envExampleEntries(): { name: string; value: string; commented: boolean }[] {
  return readRepoFile('.env.example')
    .split('\n')
    .flatMap((line) => {
      const match = /^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$/.exec(line.trim());
      return match?.[2] === undefined ? [] : [{ name: match[2], value: match[3] ?? '', commented: match[1] !== undefined }];
    });
}

describe('environment variables: schemas vs Bicep, docker-compose.yml and .env.example', () => {
  it('the allow-lists name variables the apps really read', () => {
    const read = [...APPS.api.schema, ...APPS.worker.schema];
    expect(difference(Object.keys(NOT_IN_BICEP), read)).toEqual([]);
    expect(difference(Object.keys(NOT_IN_COMPOSE), read)).toEqual([]);
    expect(APPS.api.schema).toContain('DEPLOY_MODE');
    expect(APPS.worker.schema).toContain('MAX_CONCURRENT_DEPLOYMENTS');
  });

  for (const [app, { schema, bicep }] of Object.entries(APPS)) {
    describe(app, () => {
      it(`${bicep} sets every variable the ${app} reads (local-only and emulator-only ones excepted)`, () => {
        const set = containerEnvNames(readRepoFile(bicep));
        expect(difference(difference(schema, Object.keys(NOT_IN_BICEP)), set)).toEqual([]);
      });

      it(`${bicep} sets only variables the ${app} reads, none of the allow-listed ones, each once`, () => {
        const set = containerEnvNames(readRepoFile(bicep));
        expect(difference(set, schema)).toEqual([]);
        expect(set.filter((name) => name in NOT_IN_BICEP)).toEqual([]);
        expect(set.length).toBe(new Set(set).size);
      });

      it(`docker-compose.yml's ${app} service sets every variable it reads, and only those`, () => {
        const set = composeEnvironment(app);
        expect(difference(difference(schema, Object.keys(NOT_IN_COMPOSE)), set)).toEqual([]);
        expect(difference(set, schema)).toEqual([]);
      });
    });
  }

  it('.env.example lists every variable either app reads, and nothing else but the compose settings', () => {
    const listed = envExampleEntries().map((entry) => entry.name);
    const read = [...new Set([...APPS.api.schema, ...APPS.worker.schema])];
    expect(difference(read, listed)).toEqual([]);
    expect(difference(listed, [...read, ...COMPOSE_ONLY])).toEqual([]);
    expect(listed.length).toBe(new Set(listed).size);
  });

  it('.env.example keeps the Azure variables commented out and shows the schema defaults', () => {
    const schemas = { ...ApiEnvSchema.properties, ...WorkerEnvSchema.properties } as Record<string, { default?: string | number | boolean }>;
    for (const entry of envExampleEntries()) {
      if (entry.name in azureEnv) expect(entry.commented, `${entry.name} is commented out`).toBe(true);
      const fallback = schemas[entry.name]?.default;
      if (fallback !== undefined && entry.value !== '') expect(entry.value, `${entry.name} default`).toBe(String(fallback));
    }
  });
});
