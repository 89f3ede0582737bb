import { dirname, join, normalize } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { DEPLOYMENTS_CONTAINER } from '../../packages/azure/src/cosmos/store.ts';
import {
  balancedBlock,
  exportedNames,
  imports,
  modules,
  outputs,
  params,
  stripComments,
  topLevelKeys,
  unbalancedLine,
} from './bicep-source.ts';
import { listRepoFiles, readRepoFile, repoFileExists } from './repo-files.ts';

// No Bicep compiler runs here (ci.yml runs `az bicep build` and `az bicep lint` on GitHub), so these
// checks catch on the source text what would otherwise only fail there: a parameter without a
// description, a module or import path that does not exist, a module parameter that is missing or
// unknown, an output main.bicep uses but the module does not declare.

const BICEP_FILES = ['infra/main.bicep', 'infra/types.bicep', ...listRepoFiles('infra/modules', '.bicep')];
const source = (file: string) => readRepoFile(file);

describe('Bicep structure', () => {
  it('finds the files it checks', () => {
    expect(BICEP_FILES).toContain('infra/modules/api-app.bicep');
    expect(BICEP_FILES).toContain('infra/modules/worker-app.bicep');
    expect(BICEP_FILES.length).toBeGreaterThanOrEqual(15);
  });

  it.each(BICEP_FILES)('%s: brackets balance', (file) => {
    expect(unbalancedLine(source(file))).toBeNull();
  });

  it.each(BICEP_FILES)('%s: every param has a @description', (file) => {
    const found = params(source(file));
    const missing = found.filter((param) => !param.decorators.includes('description')).map((param) => `${param.name} (line ${param.lineNumber})`);
    expect(missing).toEqual([]);
  });

  it.each(BICEP_FILES)('%s: imports name files that exist and names they export', (file) => {
    for (const use of imports(source(file))) {
      const target = normalize(join(dirname(file), use.path));
      expect(repoFileExists(target), `${file} imports ${use.path}`).toBe(true);
      const exported = exportedNames(readRepoFile(target));
      for (const name of use.names) expect(exported, `${name} exported by ${target}`).toContain(name);
    }
  });

  it.each(BICEP_FILES)('%s: loadTextContent/loadJsonContent paths exist', (file) => {
    for (const match of stripComments(source(file)).matchAll(/load(?:Text|Json)Content\('([^']+)'/g)) {
      const target = normalize(join(dirname(file), match[1] ?? ''));
      expect(repoFileExists(target), `${file} loads ${match[1]}`).toBe(true);
    }
  });

  it('main.bicep: every module exists, gets every required param and only declared ones', () => {
    const main = source('infra/main.bicep');
    const used = modules(main);
    expect(used.length).toBeGreaterThanOrEqual(14);
    for (const use of used) {
      const target = normalize(join('infra', use.path));
      expect(repoFileExists(target), `module ${use.symbol}: ${use.path}`).toBe(true);
      const declared = params(readRepoFile(target));
      const required = declared.filter((param) => !param.hasDefault).map((param) => param.name);
      expect(use.params.filter((name) => !declared.some((param) => param.name === name)), `unknown params of ${use.symbol}`).toEqual([]);
      expect(required.filter((name) => !use.params.includes(name)), `missing params of ${use.symbol}`).toEqual([]);
    }
  });

  it('main.bicep: every <module>.outputs.<name> it reads is declared by that module', () => {
    const main = stripComments(source('infra/main.bicep'));
    const bySymbol = new Map(modules(main).map((use) => [use.symbol, outputs(readRepoFile(normalize(join('infra', use.path))))]));
    const references = [...main.matchAll(/\b(\w+)\.outputs\.(\w+)/g)];
    expect(references.length).toBeGreaterThan(20);
    for (const [, symbol = '', output = ''] of references) {
      expect(bySymbol.has(symbol), `${symbol} is a module`).toBe(true);
      expect(bySymbol.get(symbol), `${symbol}.outputs.${output}`).toContain(output);
    }
  });

  it('main.parameters.json names only main.bicep params and covers the required ones', () => {
    const declared = params(source('infra/main.bicep'));
    const file = JSON.parse(readRepoFile('infra/main.parameters.json')) as { parameters: Record<string, unknown> };
    const given = Object.keys(file.parameters);
    expect(given.filter((name) => !declared.some((param) => param.name === name))).toEqual([]);
    expect(declared.filter((param) => !param.hasDefault && !given.includes(param.name)).map((param) => param.name)).toEqual([]);
  });

  it('every built-in role main.bicep grants is defined in types.bicep', () => {
    const roles = balancedBlock(stripComments(source('infra/types.bicep')), stripComments(source('infra/types.bicep')).indexOf('var builtInRoles'));
    const defined = topLevelKeys(roles);
    const used = [...source('infra/main.bicep').matchAll(/builtInRoles\.(\w+)/g)].map((match) => match[1] ?? '');
    expect(used.length).toBeGreaterThan(10);
    for (const role of used) expect(defined).toContain(role);
    for (const guid of roles.matchAll(/'([^']+)'/g)) expect(guid[1]).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  });

  it('the azure settings main.bicep passes to both apps have exactly the fields of their type', () => {
    const types = stripComments(source('infra/types.bicep'));
    const main = stripComments(source('infra/main.bicep'));
    const declared = topLevelKeys(balancedBlock(types, types.indexOf('type azureSettings')));
    const given = topLevelKeys(balancedBlock(main, main.indexOf('var azure = {')));
    expect(declared.length).toBeGreaterThan(15);
    expect([...given].sort()).toEqual([...declared].sort());
  });

  it('the reader sees through comments and strings (self-check)', () => {
    const sample = [
      "// param hidden string",
      "@description('a // not a comment')",
      'param shown string',
      '/* @description() */',
      "param bare string = 'x'",
      "var s = '''",
      "param insideString string",
      "'''",
    ].join('\n');
    expect(params(sample)).toEqual([
      { name: 'shown', decorators: ['description'], hasDefault: false, lineNumber: 3 },
      { name: 'bare', decorators: [], hasDefault: true, lineNumber: 5 },
    ]);
  });
});

describe('Bicep content the code depends on', () => {
  const api = () => stripComments(source('infra/modules/api-app.bicep'));
  const worker = () => stripComments(source('infra/modules/worker-app.bicep'));

  it('the API app has external ingress, health probes and at least one replica', () => {
    expect(api()).toMatch(/external:\s*true/);
    expect(api()).toMatch(/type:\s*'Liveness'[\s\S]*?path:\s*'\/health\/live'/);
    expect(api()).toMatch(/type:\s*'Readiness'[\s\S]*?path:\s*'\/health\/ready'/);
    expect(api()).toMatch(/http:\s*\{\s*metadata:\s*\{\s*concurrentRequests:/);
    const minReplicas = params(source('infra/modules/api-app.bicep')).find((param) => param.name === 'minReplicas');
    expect(minReplicas?.decorators).toContain('minValue');
    expect(source('infra/modules/api-app.bicep')).toMatch(/@minValue\(1\)\s*@maxValue\(\d+\)\s*@description\([^)]*\)\s*param minReplicas/);
  });

  it('the worker has no ingress and scales on the queue with KEDA and its own identity', () => {
    expect(worker()).not.toMatch(/ingress:/);
    const rule = balancedBlock(worker(), worker().indexOf('custom:'));
    expect(rule).toMatch(/type:\s*'azure-servicebus'/);
    const metadata = balancedBlock(rule, rule.indexOf('metadata:'));
    expect(topLevelKeys(metadata).sort()).toEqual(['messageCount', 'namespace', 'queueName']);
    // KEDA wants strings in metadata.
    expect(metadata).toMatch(/messageCount:\s*string\(/);
    expect(rule).toMatch(/identity:\s*identity\.id/);
    const maxReplicas = params(source('infra/main.bicep')).find((param) => param.name === 'workerMaxReplicas');
    expect(maxReplicas?.hasDefault).toBe(true);
  });

  it('the queue is session-enabled, deduplicated, dead-letters on expiry and delivers 3 times', () => {
    const bus = stripComments(source('infra/modules/servicebus.bicep'));
    const queue = balancedBlock(bus, bus.indexOf("resource queue 'Microsoft.ServiceBus/namespaces/queues"));
    expect(queue).toMatch(/requiresSession:\s*true/);
    expect(queue).toMatch(/requiresDuplicateDetection:\s*true/);
    expect(queue).toMatch(/maxDeliveryCount:\s*3\b/);
    expect(queue).toMatch(/deadLetteringOnMessageExpiration:\s*true/);
    expect(stripComments(source('infra/main.bicep'))).toMatch(/var queueName = 'deployment-queue'/);
  });

  it('Cosmos DB: zepid-deploy/deployments partitioned by /orgId with TTL on, and the data-plane role', () => {
    const main = stripComments(source('infra/main.bicep'));
    expect(main).toMatch(/var cosmosDatabaseName = 'zepid-deploy'/);
    expect(main).toMatch(/var cosmosContainerName = 'deployments'/);
    expect(main).toMatch(/name:\s*cosmosContainerName\s*partitionKeyPath:\s*'\/orgId'\s*defaultTtl:\s*-1/);
    expect(source('infra/modules/cosmos.bicep')).toContain('sqlRoleDefinitions/00000000-0000-0000-0000-000000000002');
  });

  it('the deployments container matches the one the store adapter would create (indexes, unique key)', () => {
    const main = stripComments(source('infra/main.bicep'));
    const block = balancedBlock(main, main.indexOf('var cosmosContainers = ['));
    const strings = [...block.matchAll(/'([^']*)'/g)].map((match) => match[1]);
    expect(block).toMatch(new RegExp(`partitionKeyPath:\\s*'${DEPLOYMENTS_CONTAINER.partitionKey?.paths?.[0] ?? '?'}'`));
    expect(block).toMatch(new RegExp(`defaultTtl:\\s*${DEPLOYMENTS_CONTAINER.defaultTtl ?? '?'}\\b`));
    const policy = DEPLOYMENTS_CONTAINER.indexingPolicy;
    const excluded = (policy?.excludedPaths ?? []).map((entry) => entry.path);
    const composite = (policy?.compositeIndexes ?? []).flat().flatMap((entry) => [entry.path, entry.order]);
    const unique = (DEPLOYMENTS_CONTAINER.uniqueKeyPolicy?.uniqueKeys ?? []).flatMap((key) => key.paths);
    expect(excluded.length).toBeGreaterThan(0);
    // The quoted values of the Bicep block, in order: excluded paths, composite index, unique keys.
    expect(strings.slice(strings.indexOf(excluded[0] ?? ''))).toEqual([...excluded, ...composite, ...unique]);
  });

  it('the worker\'s custom roles hold only the actions it needs', () => {
    const actionsOf = (file: string) => [...stripComments(source(file)).matchAll(/^\s*'(Microsoft\.[^']+)'\s*$/gm)].map((match) => match[1]).sort();
    expect(actionsOf('infra/modules/worker-target-rbac.bicep')).toEqual(['Microsoft.App/containerApps/*', 'Microsoft.ContainerInstance/containerGroups/*']);
    expect(actionsOf('infra/modules/worker-shared-rbac.bicep')).toEqual([
      'Microsoft.App/managedEnvironments/join/action',
      'Microsoft.App/managedEnvironments/managedCertificates/*',
      'Microsoft.App/managedEnvironments/read',
      'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action',
    ]);
  });

  it('the worker may read the status of the operations it starts, at subscription scope (microsoft/azure-container-apps#215)', () => {
    const actionsOf = (file: string) => [...stripComments(source(file)).matchAll(/^\s*'(Microsoft\.[^']+)'\s*$/gm)].map((match) => match[1]).sort();
    const file = 'infra/modules/worker-operations-rbac.bicep';
    expect(stripComments(source(file))).toMatch(/targetScope = 'subscription'/);
    expect(actionsOf(file)).toEqual([
      'Microsoft.App/locations/containerappOperationResults/read',
      'Microsoft.App/locations/containerappOperationStatuses/read',
      'Microsoft.App/locations/managedCertificateOperationStatuses/read',
      'Microsoft.ContainerInstance/locations/operations/read',
    ]);
    const main = stripComments(source('infra/main.bicep'));
    const use = balancedBlock(main, main.indexOf("module workerOperationsRbac 'modules/worker-operations-rbac.bicep'"));
    expect(use).toMatch(/scope:\s*subscription\(\)/);
  });

  it('first provisioning: an app on the placeholder image gets its port (80) and no probes, so its first revision becomes ready', () => {
    const main = stripComments(source('infra/main.bicep'));
    expect(main).toMatch(/var placeholderImage = 'mcr\.microsoft\.com\/azuredocs\/containerapps-helloworld:latest'/);
    for (const [module, image] of [['apiApp', 'apiImageToRun'], ['workerApp', 'workerImageToRun']] as const) {
      const use = balancedBlock(main, main.indexOf(`module ${module} `));
      expect(use).toMatch(new RegExp(`image:\\s*${image}\\b`));
      expect(use).toMatch(new RegExp(`placeholder:\\s*${image} == placeholderImage`));
    }
    // An app that exists but never got its image keeps the placeholder settings too.
    expect(main).toMatch(/var apiImageToRun = !empty\(apiImage\) \? apiImage : \(apiExists && !empty\(apiExistingImage\.outputs\.image\)/);
    expect(api()).toMatch(/var ingressPort = placeholder \? 80 : port/);
    expect(api()).toMatch(/targetPort:\s*ingressPort/);
    expect(api()).toMatch(/probes:\s*placeholder \? \[\] : \[/);
    expect(worker()).toMatch(/probes:\s*placeholder \? \[\] : \[/);
    // With the real image, the probes and the ingress keep the ports the apps listen on.
    expect(api()).toMatch(/var port = 3010/);
    expect(worker()).toMatch(/var healthPort = 8080/);
  });

  it('keys stay off where identities suffice', () => {
    expect(stripComments(source('infra/modules/registry.bicep'))).toMatch(/adminUserEnabled:\s*false/);
    expect(stripComments(source('infra/modules/keyvault.bicep'))).toMatch(/enableRbacAuthorization:\s*true/);
    expect(stripComments(source('infra/modules/cosmos.bicep'))).toMatch(/disableLocalAuth:\s*true/);
    expect(stripComments(source('infra/modules/servicebus.bicep'))).toMatch(/disableLocalAuth:\s*true/);
  });
  // The workbook and the alert queries: telemetry-queries.test.ts.
});

describe('azure.yaml (azd)', () => {
  interface AzureYaml {
    infra: { provider: string; path: string; module: string };
    services: Record<string, { project: string; host: string; docker: { path: string; context: string; target: string } }>;
  }
  const azd = () => parse(readRepoFile('azure.yaml')) as AzureYaml;

  it('provisions infra/main.bicep', () => {
    expect(azd().infra).toEqual({ provider: 'bicep', path: 'infra', module: 'main' });
    expect(repoFileExists('infra/main.parameters.json')).toBe(true);
  });

  it('deploys the api and worker Dockerfile targets to the container apps tagged with their service names', () => {
    const dockerfile = readRepoFile('Dockerfile');
    for (const [name, service] of Object.entries(azd().services)) {
      expect(service.host).toBe('containerapp');
      expect(dockerfile).toMatch(new RegExp(`^FROM \\S+ AS ${service.docker.target}$`, 'm'));
      const module = name === 'api' ? 'infra/modules/api-app.bicep' : 'infra/modules/worker-app.bicep';
      expect(readRepoFile(module)).toContain(`'azd-service-name': '${name}'`);
    }
    expect(Object.keys(azd().services).sort()).toEqual(['api', 'worker']);
    expect(outputs(readRepoFile('infra/main.bicep'))).toContain('AZURE_CONTAINER_REGISTRY_ENDPOINT');
  });
});
