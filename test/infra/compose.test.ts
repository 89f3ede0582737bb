import { describe, expect, it } from 'vitest';
import { parse, parseDocument } from 'yaml';
import { readRepoFile, repoFileExists } from './repo-files.ts';

// `docker compose config` is not available here, so this checks docker-compose.yml as data: the
// services and official emulator images, ports, the Azure-mode environment, depends_on conditions
// that can be met, healthchecks, mounted files, and the Service Bus emulator's queue declaration.

interface Healthcheck {
  test?: string[] | string;
  disable?: boolean;
}

interface Service {
  image?: string;
  build?: { context?: string; target?: string };
  command?: string[];
  environment?: Record<string, string | number | boolean>;
  ports?: string[];
  volumes?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: Healthcheck;
  restart?: string;
  stop_grace_period?: string;
}

interface Compose {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
}

const text = () => readRepoFile('docker-compose.yml');
const compose = () => parse(text(), { merge: true }) as Compose;
const service = (name: string): Service => {
  const found = compose().services[name];
  if (found === undefined) throw new Error(`no service ${name}`);
  return found;
};
const env = (name: string) => service(name).environment ?? {};

const hasHealthcheck = (s: Service) => s.healthcheck !== undefined && s.healthcheck.disable !== true && s.healthcheck.test !== undefined;

describe('docker-compose.yml', () => {
  it('is well-formed YAML without duplicate keys', () => {
    const document = parseDocument(text(), { merge: true, uniqueKeys: true });
    expect(document.errors.map((error) => error.message)).toEqual([]);
    expect(document.warnings.map((warning) => warning.message)).toEqual([]);
  });

  it('runs both apps and the official emulators', () => {
    const services = compose().services;
    expect(Object.keys(services).sort()).toEqual(['api', 'azurite', 'cosmos', 'mssql', 'servicebus', 'worker']);
    expect(service('azurite').image).toMatch(/^mcr\.microsoft\.com\/azure-storage\/azurite(:|$)/);
    expect(service('cosmos').image).toBe('mcr.microsoft.com/cosmosdb/linux/azure-cosmos-emulator:vnext-preview');
    expect(service('servicebus').image).toMatch(/^mcr\.microsoft\.com\/azure-messaging\/servicebus-emulator(:|$)/);
    expect(service('mssql').image).toMatch(/^mcr\.microsoft\.com\/(mssql\/server|azure-sql-edge)(:|$)/);
  });

  it('builds the api and worker targets of the Dockerfile', () => {
    expect(service('api').build).toEqual({ context: '.', target: 'api' });
    expect(service('worker').build).toEqual({ context: '.', target: 'worker' });
  });

  it('publishes the API, the router, and the emulators\' usual ports, each host port once', () => {
    expect(service('api').ports).toContain('3010:3010');
    expect(service('worker').ports).toContain('3011:3011');
    expect(service('cosmos').ports).toContain('8081:8081');
    expect(service('azurite').ports).toContain('10000:10000');
    expect(service('servicebus').ports).toContain('5672:5672');
    const hostPorts = Object.values(compose().services).flatMap((s) => (s.ports ?? []).map((port) => port.split(':')[0]));
    expect(hostPorts.length).toBe(new Set(hostPorts).size);
  });

  it('runs the apps in Azure mode against the emulators, addressed by service name', () => {
    const names = Object.keys(compose().services);
    for (const app of ['api', 'worker']) {
      const vars = env(app);
      expect(vars.DEPLOY_MODE).toBe('azure');
      expect(vars.AZURE_SERVICE_BUS_QUEUE).toBe('deployment-queue');
      expect(vars.AZURE_SERVICE_BUS_CONNECTION_STRING).toMatch(/^Endpoint=sb:\/\/servicebus;.*UseDevelopmentEmulator=true;/);
      expect(vars.AZURE_STORAGE_CONNECTION_STRING).toMatch(/AccountName=devstoreaccount1;.*BlobEndpoint=http:\/\/azurite:10000\/devstoreaccount1;/);
      expect(vars.AZURE_COSMOS_CONNECTION_STRING).toMatch(/^AccountEndpoint=http:\/\/cosmos:8081\/;AccountKey=/);
      // The emulators start empty; in Azure infra/main.bicep creates what this creates.
      expect(vars.AZURE_CREATE_IF_MISSING).toBe('true');
      for (const host of ['servicebus', 'azurite', 'cosmos']) expect(names).toContain(host);
    }
    expect(env('api').HOST).toBe('0.0.0.0');
    expect(String(env('api').PORT)).toBe('3010');
    expect(env('worker').LOCAL_ROUTER_HOST).toBe('0.0.0.0');
    expect(String(env('worker').LOCAL_ROUTER_PORT)).toBe('3011');
  });

  it('takes real secrets from .env without a default, never from the file', () => {
    // ${VAR:?message}: compose refuses to start without it; nothing to leak in git.
    expect(String(env('api').DEPLOY_API_TOKENS)).toMatch(/^\$\{DEPLOY_API_TOKENS:\?/);
    expect(String(env('servicebus').MSSQL_SA_PASSWORD)).toMatch(/^\$\{MSSQL_SA_PASSWORD:\?/);
    expect(String(env('mssql').MSSQL_SA_PASSWORD)).toMatch(/^\$\{MSSQL_SA_PASSWORD:\?/);
    expect(String(env('mssql').ACCEPT_EULA)).toMatch(/^\$\{ACCEPT_EULA:\?/);
  });

  it('every depends_on names a service and a condition that service can meet', () => {
    const services = compose().services;
    for (const [name, s] of Object.entries(services)) {
      for (const [dependency, { condition }] of Object.entries(s.depends_on ?? {})) {
        const target = services[dependency];
        expect(target, `${name} depends on ${dependency}`).toBeDefined();
        if (target === undefined) continue;
        expect(['service_started', 'service_healthy', 'service_completed_successfully']).toContain(condition);
        if (condition === 'service_healthy') expect(hasHealthcheck(target), `${dependency} has a healthcheck`).toBe(true);
        if (condition === 'service_completed_successfully') expect(target.restart, `${dependency} runs once`).toBe('no');
      }
    }
    for (const app of ['api', 'worker']) {
      expect(service(app).depends_on?.cosmos?.condition).toBe('service_healthy');
      expect(service(app).depends_on?.azurite?.condition).toBe('service_healthy');
      expect(service(app).depends_on?.servicebus?.condition).toBe('service_started');
    }
    expect(service('servicebus').depends_on?.mssql?.condition).toBe('service_healthy');
  });

  it('healthchecks are exec-form and probe the ports the services listen on', () => {
    for (const name of ['api', 'worker', 'azurite', 'cosmos', 'mssql']) {
      const test = service(name).healthcheck?.test;
      expect(Array.isArray(test), `${name} healthcheck`).toBe(true);
      expect(['CMD', 'CMD-SHELL']).toContain((test as string[])[0]);
    }
    const testOf = (name: string) => [service(name).healthcheck?.test ?? []].flat().join(' ');
    expect(testOf('api')).toContain('127.0.0.1:3010/health/ready');
    expect(testOf('worker')).toContain(`127.0.0.1:${String(env('worker').HEALTH_PORT)}/health/ready`);
  });

  it('the worker stops within its grace period', () => {
    const graceSeconds = Number(/^(\d+)s$/.exec(service('worker').stop_grace_period ?? '')?.[1]);
    expect(Number(env('worker').SHUTDOWN_GRACE_MS)).toBeLessThan(graceSeconds * 1000);
  });

  it('mounts files that exist and declares its named volumes', () => {
    const declared = Object.keys(compose().volumes ?? {});
    for (const [name, s] of Object.entries(compose().services)) {
      for (const volume of s.volumes ?? []) {
        const source = volume.split(':')[0] ?? '';
        if (source.startsWith('./')) expect(repoFileExists(source), `${name} mounts ${source}`).toBe(true);
        else expect(declared, `${name} uses volume ${source}`).toContain(source);
      }
    }
  });
});

describe('docker/servicebus/Config.json (Service Bus emulator)', () => {
  interface QueueProperties {
    RequiresSession: boolean;
    RequiresDuplicateDetection: boolean;
    MaxDeliveryCount: number;
    DeadLetteringOnMessageExpiration: boolean;
    LockDuration: string;
    DefaultMessageTimeToLive: string;
    DuplicateDetectionHistoryTimeWindow: string;
  }
  const config = () =>
    JSON.parse(readRepoFile('docker/servicebus/Config.json')) as {
      UserConfig: { Namespaces: { Name: string; Queues: { Name: string; Properties: QueueProperties }[] }[] };
    };

  it('is mounted where the emulator reads it', () => {
    expect(service('servicebus').volumes).toContain('./docker/servicebus/Config.json:/ServiceBus_Emulator/ConfigFiles/Config.json:ro');
  });

  it('declares deployment-queue as in Azure: sessions, duplicate detection, 3 deliveries, dead-lettering', () => {
    const namespaces = config().UserConfig.Namespaces;
    expect(namespaces.map((namespace) => namespace.Name)).toEqual(['sbemulatorns']);
    const queue = namespaces[0]?.Queues.find((q) => q.Name === 'deployment-queue');
    expect(queue?.Properties).toMatchObject({
      RequiresSession: true,
      RequiresDuplicateDetection: true,
      MaxDeliveryCount: 3,
      DeadLetteringOnMessageExpiration: true,
    });
  });

  it('stays within the emulator\'s limits (lock at most 5 minutes, TTL at most 1 hour)', () => {
    const properties = config().UserConfig.Namespaces[0]?.Queues[0]?.Properties;
    const minutes = (duration: string | undefined) => {
      const match = /^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$/.exec(duration ?? '');
      if (match === null) throw new Error(`not a time duration: ${duration}`);
      return Number(match[1] ?? 0) * 60 + Number(match[2] ?? 0) + Number(match[3] ?? 0) / 60;
    };
    expect(minutes(properties?.LockDuration)).toBeLessThanOrEqual(5);
    expect(minutes(properties?.DefaultMessageTimeToLive)).toBeLessThanOrEqual(60);
    expect(minutes(properties?.DuplicateDetectionHistoryTimeWindow)).toBeGreaterThan(0);
  });
});
