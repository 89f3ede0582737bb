import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { resolve } from 'node:path';
import { ContainerAppsAPIClient } from '@azure/arm-appcontainers';
import type { TrafficWeight } from '@azure/arm-appcontainers';
import type { Environment, RevisionSpec } from '@zepid/core';
import { alwaysHeld, appName, newDeploymentId, revisionSuffix } from '@zepid/core';
import { rejection, testCertificate, trustTestCertificate } from '@zepid/testkit';
import { CONTAINER_APPS_SPEC_ALLOWANCES } from '@zepid/testkit/fakes/arm/server.ts';
import { CONTAINER_APPS_SPECS, REST_SPEC_FILES, SHARED_REST_SPECS, VENDORED_REST_SPECS, loadSwaggerValidator } from '@zepid/testkit/fakes/arm/swagger-validator.ts';
import { startArmSimulator } from '@zepid/testkit/fakes/arm/index.ts';
import type { ArmSimulator, WireContainerApp } from '@zepid/testkit/fakes/arm/index.ts';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { imageRepository } from '../src/aci/builder.ts';
import { ContainerAppsRuntime, revisionName, secretName } from '../src/containerapps/runtime.ts';
import type { ContainerAppsRuntimeOptions } from '../src/containerapps/runtime.ts';

interface LoggedLine {
  message: string;
  level: 'info' | 'warn' | 'error';
}

const ORG = 'org_acme';
const PROJECT = 'shop-front';

let sim: ArmSimulator;
let identityId: string;

beforeAll(() => {
  trustTestCertificate();
});

beforeEach(async () => {
  sim = await startArmSimulator({ lroPolls: 2 });
  identityId = `/subscriptions/${sim.subscriptionId}/resourceGroups/${sim.resourceGroup}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/zepid-apps`;
});

afterEach(async () => {
  expect(sim.invalidRequests()).toEqual([]);
  await sim.close();
});

/** Key Vault secret URIs per name, as the Key Vault secret store's references() gives them. */
const keyVault = {
  references(deploymentId: string, names: readonly string[]): Promise<Record<string, string>> {
    return Promise.resolve(Object.fromEntries(names.map((name) => [name, `https://zepid-kv.vault.azure.net/secrets/${deploymentId.replace(/_/g, '-')}-${name.toLowerCase().replace(/_/g, '-')}`])));
  },
};

function runtime(overrides: Partial<ContainerAppsRuntimeOptions> = {}): ContainerAppsRuntime {
  return new ContainerAppsRuntime({
    subscriptionId: sim.subscriptionId,
    resourceGroup: sim.resourceGroup,
    location: sim.location,
    credential: sim.credential,
    armEndpoint: sim.url,
    environmentId: sim.apps.environment.id,
    registry: sim.registry,
    appsIdentityId: identityId,
    secrets: keyVault,
    pollIntervalMs: 5,
    maxPollIntervalMs: 20,
    operationPollIntervalMs: 5,
    healthTimeoutMs: 20_000,
    certificateTimeoutMs: 20_000,
    maxRetries: 0,
    ...overrides,
  });
}

/** A spec whose image the fake registry holds (as a build would have pushed it). */
function spec(
  options: Partial<Pick<RevisionSpec, 'environment' | 'containerSize' | 'customDomain' | 'envVariableNames'>> & { onLine?: (line: LoggedLine) => void } = {},
): { spec: RevisionSpec; lines: LoggedLine[]; controller: AbortController } {
  const environment: Environment = options.environment ?? 'production';
  const deploymentId = newDeploymentId();
  const app = appName(ORG, PROJECT, environment);
  const digest = `sha256:${createHash('sha256').update(randomBytes(8)).digest('hex')}`;
  sim.acr.push(imageRepository(app), deploymentId, digest);
  const lines: LoggedLine[] = [];
  const controller = new AbortController();
  return {
    spec: {
      deploymentId,
      orgId: ORG,
      projectId: PROJECT,
      appName: app,
      environment,
      image: `${sim.registry}/${imageRepository(app)}:${deploymentId}`,
      imageDigest: digest,
      plan: { kind: 'node', install: 'npm ci', build: null, start: 'npm start', port: 3000, framework: 'node', packageManager: null, outputDir: null, outputHint: null, image: 'start' },
      containerSize: options.containerSize ?? null,
      customDomain: options.customDomain ?? null,
      envVariableNames: options.envVariableNames ?? [],
      attempt: 1,
      signal: controller.signal,
      fence: alwaysHeld,
      log: (message, level = 'info') => {
        const line = { message, level };
        lines.push(line);
        options.onLine?.(line);
      },
    },
    lines,
    controller,
  };
}

describe('ContainerAppsRuntime', () => {
  it('creates a new app pinned by digest, pulling with the managed identity, tagged with the deployment', async () => {
    const { spec: first } = spec();
    const info = await runtime().deploy(first);
    const revision = `${first.appName}--${revisionSuffix(first.deploymentId)}`;
    expect(info).toEqual({ revision, url: `https://${first.appName}.${sim.apps.environment.defaultDomain}`, previousRevision: null, dnsRecords: [] });

    const app = sim.apps.app(first.appName);
    expect(app?.tags).toEqual({ deploymentId: first.deploymentId, projectId: PROJECT, orgId: ORG });
    expect(app?.identity).toEqual({ type: 'UserAssigned', userAssignedIdentities: { [identityId]: {} } });
    expect(app?.configuration.activeRevisionsMode).toBe('Multiple');
    expect(app?.configuration.registries).toEqual([{ server: sim.registry, identity: identityId }]);
    expect(app?.configuration.ingress).toMatchObject({ external: true, targetPort: 3000, allowInsecure: false });
    expect(app?.template.revisionSuffix).toBe(revisionSuffix(first.deploymentId));
    const container = app?.template.containers?.[0];
    expect(container?.image).toBe(`${sim.registry}/${imageRepository(first.appName)}@${first.imageDigest ?? ''}`);
    expect(container?.env).toEqual([{ name: 'PORT', value: '3000' }]);
    expect(sim.apps.traffic(first.appName)).toEqual({ [revision]: 100 });
    expect(sim.apps.revision(first.appName, revision)).toMatchObject({ active: true, healthState: 'Healthy' });
  });

  it('moves traffic to a new revision only once it is healthy, keeping the previous one for rollback', async () => {
    const adapter = runtime();
    const { spec: first } = spec();
    const a = (await adapter.deploy(first)).revision;
    sim.apps.revisionOutcome = { kind: 'healthy', pollsUntilHealthy: 4 };
    let trafficWhileStarting: Record<string, number> | null = null;
    const second = spec({
      onLine: (line) => {
        if (trafficWhileStarting === null && line.message.includes('provisioning Provisioned, running Processing')) trafficWhileStarting = sim.apps.traffic(first.appName);
      },
    });
    const info = await adapter.deploy(second.spec);
    expect(info.previousRevision).toBe(a);
    expect(trafficWhileStarting).toEqual({ [a]: 100 });
    expect(sim.apps.traffic(first.appName)).toEqual({ [info.revision]: 100 });
    // Every change of the split that gave the new revision traffic happened while it was healthy.
    const toNew = sim.apps.trafficChanges.filter((change) => (change.weights[info.revision] ?? 0) > 0);
    expect(toNew.length).toBeGreaterThan(0);
    for (const change of toNew) expect(change.health[info.revision]).toBe('Healthy');
    expect(sim.apps.revision(first.appName, a)).toMatchObject({ active: true, trafficWeight: 0 });

    // A third deployment keeps only itself and the one before active.
    sim.apps.revisionOutcome = { kind: 'healthy', pollsUntilHealthy: 1 };
    const third = await adapter.deploy(spec().spec);
    expect(third.previousRevision).toBe(info.revision);
    expect(sim.apps.revision(first.appName, a)?.active).toBe(false);
    expect(sim.apps.revision(first.appName, info.revision)?.active).toBe(true);
  });

  it('keeps traffic on the previous revision, stops the new one and fails DEPLOY_UNHEALTHY when it never gets healthy', async () => {
    const adapter = runtime({ healthTimeoutMs: 300 });
    const a = (await runtime().deploy(spec().spec)).revision;
    sim.apps.revisionOutcome = { kind: 'unhealthy' };
    const { spec: second } = spec();
    const error = await rejection(adapter.deploy(second));
    const b = revisionName(second.appName, second.deploymentId);
    expect(error.code).toBe('DEPLOY_UNHEALTHY');
    expect(error.message).toContain(b);
    expect(error.message).toContain(`traffic stays on ${a}`);
    // What a fixed-port server (Koa's README app, Hono's template) needs to change.
    expect(error.message).toContain(`listens on the port in PORT (${second.plan.port})`);
    expect(error.details).toMatchObject({ revision: b, previousRevision: a, healthState: 'Unhealthy' });
    expect(sim.apps.traffic(second.appName)).toEqual({ [a]: 100 });
    expect(sim.apps.revision(second.appName, b)).toMatchObject({ active: false, trafficWeight: 0 });
  });

  it('fails fast with IMAGE_PULL_FAILED when the revision cannot pull its image', async () => {
    const { spec: broken } = spec();
    const error = await rejection(runtime().deploy({ ...broken, imageDigest: `sha256:${'0'.repeat(64)}` }));
    expect(error.code).toBe('IMAGE_PULL_FAILED');
    expect(error.message).toContain('manifest unknown');
    expect(error.message).not.toContain('PORT');
  });

  it('rolls back: traffic to the previous revision, the failed one stopped, twice without harm', async () => {
    const adapter = runtime();
    const a = (await adapter.deploy(spec().spec)).revision;
    const { spec: second } = spec();
    const b = (await adapter.deploy(second)).revision;
    expect(sim.apps.traffic(second.appName)).toEqual({ [b]: 100 });
    const logged: string[] = [];
    const target = { deploymentId: second.deploymentId, appName: second.appName, revision: b, previousRevision: a, fence: alwaysHeld };
    await adapter.rollback(target, (message) => logged.push(message));
    expect(sim.apps.traffic(second.appName)).toEqual({ [a]: 100 });
    expect(sim.apps.revision(second.appName, b)?.active).toBe(false);
    expect(logged.join('\n')).toContain(`Moving all traffic back to revision ${a}`);
    await adapter.rollback(target, (message) => logged.push(message));
    expect(sim.apps.traffic(second.appName)).toEqual({ [a]: 100 });
  });

  it('finds its own revision when the deploy step runs again, and still knows the one before', async () => {
    const adapter = runtime();
    const a = (await adapter.deploy(spec().spec)).revision;
    const { spec: second } = spec();
    const once = await adapter.deploy(second);
    const again = await adapter.deploy(second);
    expect(again).toEqual(once);
    expect(again.previousRevision).toBe(a);
    expect([...Object.keys(sim.apps.traffic(second.appName))]).toEqual([once.revision]);
  });

  it('returns the DNS records to add when the custom domain is not verified, without failing', async () => {
    const { spec: first, lines } = spec({ customDomain: 'shop.example.com' });
    const info = await runtime().deploy(first);
    const fqdn = `${first.appName}.${sim.apps.environment.defaultDomain}`;
    expect(info.url).toBe(`https://${fqdn}`);
    expect(info.dnsRecords).toEqual([
      { type: 'TXT', name: 'asuid.shop.example.com', value: sim.apps.environment.customDomainVerificationId },
      { type: 'CNAME', name: 'shop.example.com', value: fqdn },
    ]);
    expect(lines.some((line) => line.level === 'warn' && line.message.includes('asuid.shop.example.com'))).toBe(true);
    expect(sim.apps.app(first.appName)?.configuration.ingress?.customDomains).toBeUndefined();

    const apex = spec({ customDomain: 'example.org', environment: 'staging' });
    const apexInfo = await runtime().deploy(apex.spec);
    expect(apexInfo.dnsRecords).toContainEqual({ type: 'A', name: 'example.org', value: sim.apps.environment.staticIp });
  });

  it('binds a verified custom domain with a managed certificate and serves it', async () => {
    const { spec: first } = spec({ customDomain: 'shop.example.com' });
    sim.apps.addDomainRecords('shop.example.com', first.appName);
    const info = await runtime().deploy(first);
    expect(info.url).toBe('https://shop.example.com');
    expect(info.dnsRecords).toEqual([]);
    const bindings = sim.apps.app(first.appName)?.configuration.ingress?.customDomains;
    expect(bindings).toEqual([{ name: 'shop.example.com', bindingType: 'SniEnabled', certificateId: `${sim.apps.environment.id}/managedCertificates/mc-shop-example-com` }]);
    expect(sim.apps.certificate('mc-shop-example-com')).toEqual({
      subjectName: 'shop.example.com',
      provisioningState: 'Succeeded',
      tags: { deploymentId: first.deploymentId, projectId: PROJECT, orgId: ORG, appName: first.appName },
    });

    // The next deployment keeps the binding in its PUT (which replaces the configuration), so the
    // domain never drops off the app, and does not touch the certificate or the binding again.
    const mark = sim.requests.length;
    const next = spec({ customDomain: 'shop.example.com' });
    const nextInfo = await runtime().deploy(next.spec);
    expect(nextInfo.url).toBe('https://shop.example.com');
    const later = sim.requests.slice(mark);
    const put = later.filter((request) => request.method === 'PUT' && request.path.endsWith(`/containerApps/${first.appName}`));
    expect(put).toHaveLength(1);
    expect((put[0]?.body as WireContainerApp).properties?.configuration?.ingress?.customDomains).toEqual(bindings);
    expect(later.filter((request) => request.path.includes('/managedCertificates/') && request.method === 'PUT')).toEqual([]);
    expect(later.filter((request) => request.method === 'PATCH').map((request) => (request.body as WireContainerApp).properties?.configuration?.ingress?.customDomains)).toEqual([undefined]);
    expect(sim.apps.app(first.appName)?.configuration.ingress?.customDomains).toEqual(bindings);
  });

  it('scales per environment, and an explicit container size replaces cpu and memory only', async () => {
    const adapter = runtime();
    const expected = {
      development: { minReplicas: 0, maxReplicas: 2, cpu: 0.5, memory: '1Gi' },
      staging: { minReplicas: 1, maxReplicas: 3, cpu: 1, memory: '2Gi' },
      production: { minReplicas: 2, maxReplicas: 10, cpu: 2, memory: '4Gi' },
    } as const;
    for (const environment of ['development', 'staging', 'production'] as const) {
      const { spec: next } = spec({ environment });
      await adapter.deploy(next);
      const template = sim.apps.app(next.appName)?.template;
      expect(template?.scale).toEqual({
        minReplicas: expected[environment].minReplicas,
        maxReplicas: expected[environment].maxReplicas,
        rules: [{ name: 'http-scaling', http: { metadata: { concurrentRequests: '100' } } }],
      });
      expect(template?.containers?.[0]?.resources).toEqual({ cpu: expected[environment].cpu, memory: expected[environment].memory });
    }
    const sized = spec({ environment: 'production', containerSize: { cpu: 1.5, memory: '3Gi' } });
    await adapter.deploy(sized.spec);
    const template = sim.apps.app(sized.spec.appName)?.template;
    expect(template?.containers?.[0]?.resources).toEqual({ cpu: 1.5, memory: '3Gi' });
    expect(template?.scale).toMatchObject({ minReplicas: 2, maxReplicas: 10 });
  });

  it('passes env variables as Key Vault references read with the apps identity, never as values', async () => {
    const adapter = runtime();
    const { spec: first } = spec({ envVariableNames: ['DATABASE_URL', 'API_KEY'] });
    await adapter.deploy(first);
    const references = await keyVault.references(first.deploymentId, ['DATABASE_URL', 'API_KEY']);
    const configuration = sim.apps.app(first.appName)?.configuration;
    expect(configuration?.secrets).toEqual([
      { name: secretName(first.deploymentId, 'DATABASE_URL'), keyVaultUrl: references.DATABASE_URL, identity: identityId },
      { name: secretName(first.deploymentId, 'API_KEY'), keyVaultUrl: references.API_KEY, identity: identityId },
    ]);
    expect(sim.apps.app(first.appName)?.template.containers?.[0]?.env).toEqual([
      { name: 'PORT', value: '3000' },
      { name: 'DATABASE_URL', secretRef: secretName(first.deploymentId, 'DATABASE_URL') },
      { name: 'API_KEY', secretRef: secretName(first.deploymentId, 'API_KEY') },
    ]);
    expect(JSON.stringify(sim.requests)).not.toMatch(/"value":"https:\/\/zepid-kv/);

    // The next deployment brings its own references and keeps the serving revision's ones.
    const { spec: second } = spec({ envVariableNames: ['DATABASE_URL'] });
    await adapter.deploy(second);
    const names = sim.apps.app(first.appName)?.configuration.secrets?.map((secret) => secret.name);
    expect(names).toEqual([secretName(second.deploymentId, 'DATABASE_URL'), secretName(first.deploymentId, 'DATABASE_URL'), secretName(first.deploymentId, 'API_KEY')]);
  });

  it('stops the new revision and throws CANCELLED when the deployment is cancelled while it starts', async () => {
    const adapter = runtime();
    const a = (await adapter.deploy(spec().spec)).revision;
    sim.apps.revisionOutcome = { kind: 'healthy', pollsUntilHealthy: 1000 };
    const second = spec({
      onLine: (line) => {
        if (line.message.includes('provisioning Provisioned')) second.controller.abort();
      },
    });
    const error = await rejection(adapter.deploy(second.spec));
    expect(error.code).toBe('CANCELLED');
    expect(sim.apps.traffic(second.spec.appName)).toEqual({ [a]: 100 });
    expect(sim.apps.revision(second.spec.appName, revisionName(second.spec.appName, second.spec.deploymentId))?.active).toBe(false);
  });

  it('a run that lost its lease while its revision starts sends no further ARM request: the revision is the new owner\'s', async () => {
    const adapter = runtime();
    await adapter.deploy(spec().spec);
    sim.apps.revisionOutcome = { kind: 'healthy', pollsUntilHealthy: 1000 };
    let held = true;
    let mark = -1;
    const second = spec({
      onLine: (line) => {
        if (held && line.message.includes('provisioning Provisioned')) {
          held = false;
          mark = sim.requests.length;
          second.controller.abort(Object.assign(new Error('another delivery took the deployment over'), { name: 'LeaseLost' }));
        }
      },
    });
    second.spec.fence = () => Promise.resolve(held);
    await rejection(adapter.deploy(second.spec));
    const revision = revisionName(second.spec.appName, second.spec.deploymentId);
    // Not deactivated (the new owner is bringing this very revision up), and nothing else sent either.
    expect(sim.apps.revision(second.spec.appName, revision)?.active).toBe(true);
    expect(sim.requests.slice(mark)).toEqual([]);
  });

  describe('isServing (an identical redeploy keeps such a revision)', () => {
    const serving = (adapter: ContainerAppsRuntime, app: string, revision: string, customDomain: string | null = null) =>
      adapter.isServing({ appName: app, revision, customDomain }, AbortSignal.timeout(10_000));
    const armClient = () => new ContainerAppsAPIClient(sim.credential, sim.subscriptionId, { endpoint: sim.url, retryOptions: { maxRetries: 0 } });
    const setTraffic = (app: string, traffic: TrafficWeight[]) =>
      armClient().containerApps.update(sim.resourceGroup, app, { location: sim.location, configuration: { ingress: { traffic } } }, { updateIntervalInMs: 5 });

    it('is true for the revision with all the traffic, provisioned, running and healthy, and reads only', async () => {
      const adapter = runtime();
      const { spec: first } = spec();
      const a = (await adapter.deploy(first)).revision;
      const mark = sim.requests.length;
      expect(await serving(adapter, first.appName, a)).toBe(true);
      expect(sim.requests.slice(mark).every((request) => request.method === 'GET')).toBe(true);
      // Traffic given to the latest ready revision counts when that is this one.
      await setTraffic(first.appName, [{ latestRevision: true, weight: 100 }]);
      expect(await serving(adapter, first.appName, a)).toBe(true);

      const b = (await adapter.deploy(spec().spec)).revision;
      expect(await serving(adapter, first.appName, b)).toBe(true);
      // Active and healthy, kept for rollback, but without traffic.
      expect(sim.apps.revision(first.appName, a)).toMatchObject({ active: true, healthState: 'Healthy', trafficWeight: 0 });
      expect(await serving(adapter, first.appName, a)).toBe(false);
      // A split is not "all the traffic".
      await setTraffic(first.appName, [{ revisionName: a, weight: 50 }, { revisionName: b, weight: 50 }]);
      expect(await serving(adapter, first.appName, b)).toBe(false);
      expect(await serving(adapter, 'no-such-app', b)).toBe(false);
      expect(await serving(adapter, first.appName, `${first.appName}--gone`)).toBe(false);
    });

    it('is false for a revision with all the traffic that is not running healthy', async () => {
      const adapter = runtime({ healthTimeoutMs: 300 });
      await runtime().deploy(spec().spec);
      sim.apps.revisionOutcome = { kind: 'unhealthy' };
      const { spec: broken } = spec();
      await rejection(adapter.deploy(broken));
      const revision = revisionName(broken.appName, broken.deploymentId);
      // Started again and given the traffic by hand (as a crash after the switch would leave it).
      await armClient().containerAppsRevisions.activateRevision(sim.resourceGroup, broken.appName, revision);
      await setTraffic(broken.appName, [{ revisionName: revision, weight: 100 }]);
      expect(sim.apps.traffic(broken.appName)).toEqual({ [revision]: 100 });
      expect(await serving(adapter, broken.appName, revision)).toBe(false);
      expect(sim.apps.revision(broken.appName, revision)).toMatchObject({ active: true, healthState: 'Unhealthy' });
    });

    it('with a custom domain, is true only once the domain is bound with a certificate', async () => {
      const adapter = runtime();
      const { spec: first } = spec({ customDomain: 'shop.example.com' });
      const a = (await adapter.deploy(first)).revision;
      expect(await serving(adapter, first.appName, a)).toBe(true);
      expect(await serving(adapter, first.appName, a, 'shop.example.com')).toBe(false);
      sim.apps.addDomainRecords('shop.example.com', first.appName);
      const b = (await adapter.deploy(spec({ customDomain: 'shop.example.com' }).spec)).revision;
      expect(await serving(adapter, first.appName, b, 'Shop.Example.com')).toBe(true);
    });

    it('throws a DeployError when ARM cannot answer, so the deploy step starts a new revision', async () => {
      const adapter = runtime();
      const { spec: first } = spec();
      const a = (await adapter.deploy(first)).revision;
      sim.injectFault({ method: 'GET', path: /\/revisions\//, status: 503, code: 'ServiceUnavailable' });
      const error = await rejection(serving(adapter, first.appName, a));
      expect(error.retryable).toBe(true);
    });
  });

  describe('as Azure behaves', () => {
    it('finding 2: a development revision (minReplicas 0) that activates and scales to zero is live, and stays kept', async () => {
      const adapter = runtime();
      const first = spec({ environment: 'development' });
      const info = await adapter.deploy(first.spec);
      expect(sim.apps.revision(first.spec.appName, info.revision)).toMatchObject({ active: true, runningState: 'ScaledToZero', trafficWeight: 100 });
      expect(sim.apps.traffic(first.spec.appName)).toEqual({ [info.revision]: 100 });
      expect(first.lines.map((line) => line.message).join('\n')).toContain('scaled to zero');
      expect(await adapter.isServing({ appName: first.spec.appName, revision: info.revision, customDomain: null }, AbortSignal.timeout(10_000))).toBe(true);
      // The next development deploy replaces it the same way.
      const second = await adapter.deploy(spec({ environment: 'development' }).spec);
      expect(second.previousRevision).toBe(info.revision);
      expect(sim.apps.traffic(first.spec.appName)).toEqual({ [second.revision]: 100 });
    });

    it('finding 4: the PUT is submitted and the revision polled; an image that cannot be pulled fails IMAGE_PULL_FAILED and is deactivated', async () => {
      const adapter = runtime();
      const a = (await adapter.deploy(spec().spec)).revision;
      const { spec: broken } = spec();
      const error = await rejection(adapter.deploy({ ...broken, imageDigest: `sha256:${'0'.repeat(64)}` }));
      expect(error.code).toBe('IMAGE_PULL_FAILED');
      expect(error.message).toContain('manifest unknown');
      expect(sim.apps.traffic(broken.appName)).toEqual({ [a]: 100 });
      expect(sim.apps.revision(broken.appName, revisionName(broken.appName, broken.deploymentId))?.active).toBe(false);
    });

    it('finding 4: a revision that never gets healthy fails DEPLOY_UNHEALTHY within the health timeout, not when ARM gives up', async () => {
      const adapter = runtime({ healthTimeoutMs: 500 });
      await runtime().deploy(spec().spec);
      sim.apps.revisionOutcome = { kind: 'unhealthy' };
      sim.apps.operationExpiresAfterPolls = 100_000;
      const { spec: second } = spec();
      const started = Date.now();
      const error = await rejection(adapter.deploy(second));
      expect(error.code).toBe('DEPLOY_UNHEALTHY');
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(sim.apps.revision(second.appName, revisionName(second.appName, second.deploymentId))?.active).toBe(false);
    });

    it('finding 7: a retry after an unhealthy attempt starts a new revision (suffix per attempt) and goes live', async () => {
      const adapter = runtime({ healthTimeoutMs: 500 });
      await runtime().deploy(spec().spec);
      sim.apps.revisionOutcome = { kind: 'unhealthy' };
      const { spec: second } = spec();
      await rejection(adapter.deploy(second));
      sim.apps.revisionOutcome = { kind: 'healthy', pollsUntilHealthy: 1 };
      const retried = await runtime().deploy({ ...second, attempt: 2 });
      expect(retried.revision).toBe(revisionName(second.appName, second.deploymentId, 2));
      expect(retried.revision).not.toBe(revisionName(second.appName, second.deploymentId));
      expect(sim.apps.traffic(second.appName)).toEqual({ [retried.revision]: 100 });
    });

    it('finding 7: the same attempt run again after its revision was stopped activates it again instead of waiting on it', async () => {
      const adapter = runtime({ healthTimeoutMs: 5_000 });
      const a = (await adapter.deploy(spec().spec)).revision;
      sim.apps.revisionOutcome = { kind: 'healthy', pollsUntilHealthy: 3 };
      const second = spec({
        onLine: (line) => {
          if (line.message.includes('provisioning Provisioned')) second.controller.abort();
        },
      });
      await rejection(adapter.deploy(second.spec));
      const b = revisionName(second.spec.appName, second.spec.deploymentId);
      expect(sim.apps.revision(second.spec.appName, b)?.active).toBe(false);
      const again = await adapter.deploy({ ...second.spec, signal: new AbortController().signal });
      expect(again.revision).toBe(b);
      expect(again.previousRevision).toBe(a);
      expect(sim.apps.traffic(second.spec.appName)).toEqual({ [b]: 100 });
    });

    it('finding 6: after a failed deploy, the next one keeps the Key Vault references the serving revision uses', async () => {
      const adapter = runtime({ healthTimeoutMs: 500 });
      const { spec: first } = spec({ envVariableNames: ['DATABASE_URL'] });
      const a = (await runtime().deploy(first)).revision;
      sim.apps.revisionOutcome = { kind: 'unhealthy' };
      await rejection(adapter.deploy(spec({ envVariableNames: ['OTHER'] }).spec));
      sim.apps.revisionOutcome = { kind: 'healthy', pollsUntilHealthy: 1 };
      // The serving revision (a) stays active while the new one starts: its secrets must stay.
      const { spec: third } = spec({ envVariableNames: ['API_KEY'] });
      const info = await runtime().deploy(third);
      expect(info.previousRevision).toBe(a);
      const names = sim.apps.app(first.appName)?.configuration.secrets?.map((secret) => secret.name) ?? [];
      expect(names).toContain(secretName(first.deploymentId, 'DATABASE_URL'));
      expect(names).toContain(secretName(third.deploymentId, 'API_KEY'));
    });

    it('finding 3: an apex domain gets an A record and HTTP validation, and is bound', async () => {
      const { spec: first } = spec({ customDomain: 'example.org' });
      sim.apps.addDomainRecords('example.org', first.appName, { apex: true });
      const info = await runtime().deploy(first);
      expect(info.url).toBe('https://example.org');
      const certificate = sim.requests.find((request) => request.method === 'PUT' && request.path.includes('/managedCertificates/'));
      expect((certificate?.body as { properties?: { domainControlValidation?: string } }).properties?.domainControlValidation).toBe('HTTP');
    });

    it('finding 5: a certificate still Pending at the step deadline leaves the domain for the next deployment; the deploy completes in time', async () => {
      sim.apps.certificateOutcome = 'pending';
      const { spec: first, lines, controller } = spec({ customDomain: 'shop.example.com' });
      sim.apps.addDomainRecords('shop.example.com', first.appName);
      const stop = setTimeout(() => controller.abort(new Error('the test gave up')), 5_000);
      try {
        const info = await runtime({ certificateTimeoutMs: 60_000 }).deploy({ ...first, deadline: Date.now() + 1_500 });
        expect(info.url).toBe(`https://${first.appName}.${sim.apps.environment.defaultDomain}`);
        expect(lines.some((line) => line.level === 'warn' && line.message.includes('still being issued'))).toBe(true);
        expect(sim.apps.traffic(first.appName)).toEqual({ [info.revision]: 100 });
      } finally {
        clearTimeout(stop);
      }
    });

    it('finding 5: stopped after the traffic moved (certificate pending), the deploy moves the traffic back before it fails', async () => {
      const adapter = runtime();
      const a = (await adapter.deploy(spec({ customDomain: 'shop.example.com' }).spec)).revision;
      sim.apps.certificateOutcome = 'pending';
      const second = spec({
        customDomain: 'shop.example.com',
        onLine: (line) => {
          if (line.message.includes('Requesting a managed certificate')) setTimeout(() => second.controller.abort(), 50);
        },
      });
      sim.apps.addDomainRecords('shop.example.com', second.spec.appName);
      const error = await rejection(adapter.deploy(second.spec));
      expect(error.code).toBe('CANCELLED');
      expect(sim.apps.traffic(second.spec.appName)).toEqual({ [a]: 100 });
      expect(sim.apps.revision(second.spec.appName, revisionName(second.spec.appName, second.spec.deploymentId))?.active).toBe(false);
    });
  });

  describe('request bodies against the official Microsoft.App 2025-07-01 spec', () => {
    /** A raw ARM call: the SDK's serializers drop what its models do not know, ARM's front door sees everything. */
    const raw = async (method: string, path: string, body: unknown): Promise<{ status: number; text: string }> => {
      const token = await sim.credential.getToken('https://management.azure.com/.default');
      const url = new URL(`${path}?api-version=2026-07-01`, sim.url);
      return new Promise((done, fail) => {
        const outgoing = httpsRequest(url, { method, ca: testCertificate().cert, headers: { authorization: `Bearer ${token?.token ?? ''}`, 'content-type': 'application/json' } }, (incoming) => {
          let text = '';
          incoming.setEncoding('utf8');
          incoming.on('data', (chunk: string) => (text += chunk));
          incoming.on('end', () => done({ status: incoming.statusCode ?? 0, text }));
        });
        outgoing.on('error', fail);
        outgoing.end(JSON.stringify(body));
      });
    };

    it('validates with the unmodified spec files; the vendored copies are byte-identical to ../shared', () => {
      for (const file of REST_SPEC_FILES) {
        const vendored = resolve(VENDORED_REST_SPECS, file);
        if (existsSync(resolve(SHARED_REST_SPECS, file))) expect(readFileSync(vendored, 'utf8'), file).toBe(readFileSync(resolve(SHARED_REST_SPECS, file), 'utf8'));
        expect(existsSync(vendored), file).toBe(true);
      }
      expect(CONTAINER_APPS_SPECS.every((file) => file.endsWith('.json') && existsSync(file))).toBe(true);
    });

    it('needs no allowance: every property the runtime sends is in 2025-07-01', () => {
      // Each deploy above is checked (afterEach: no request was refused as malformed); an allowance
      // would have to be named here with its reason. The SDK calls 2026-07-01, but the runtime uses no
      // property newer than 2025-07-01.
      expect(CONTAINER_APPS_SPEC_ALLOWANCES).toEqual([]);
    });

    it('refuses, as ARM does, an app or certificate body with a misspelt or unknown property, a wrong type or enum', async () => {
      const { spec: first } = spec();
      await runtime().deploy(first);
      const app = `/subscriptions/${sim.subscriptionId}/resourceGroups/${sim.resourceGroup}/providers/Microsoft.App/containerApps/${first.appName}`;
      const patch = await raw('PATCH', app, { location: sim.location, properties: { configuration: { ingress: { trafic: [] } } } });
      expect(patch.status).toBe(400);
      expect(patch.text).toContain("additional properties 'trafic'");
      const put = await raw('PUT', app, { location: sim.location, properties: { environmentId: sim.apps.environment.id, template: { containers: [{ name: 'app', image: 'x', resources: { cpu: '2' } }] } } });
      expect(put.status).toBe(400);
      expect(put.text).toContain('/properties/template/containers/0/resources/cpu must be number');
      const certificate = await raw('PUT', `${sim.apps.environment.id}/managedCertificates/mc-x`, { location: sim.location, properties: { subjectName: 'x.example.com', domainControlValidation: 'DNS' } });
      expect(certificate.status).toBe(400);
      expect(certificate.text).toContain('domainControlValidation must be equal to one of the allowed values');
      // Those three were malformed on purpose: not what afterEach looks for.
      sim.requests.splice(0, sim.requests.length, ...sim.requests.filter((request) => request.status !== 400));
      const validator = loadSwaggerValidator(CONTAINER_APPS_SPECS);
      expect(validator.validate('ContainerApp', { location: 'westeurope', properties: { configuration: { activeRevisionsMode: 'Several' } } })).toEqual([
        '/properties/configuration/activeRevisionsMode must be equal to one of the allowed values',
      ]);
    });
  });

  describe('app operations (issue 12)', () => {
    /** Key Vault as far as the runtime reads it: versionless URIs per deployment, and the values behind them. */
    function vaultWith(values: Map<string, string>) {
      return {
        references: (deploymentId: string, names: readonly string[]) => keyVault.references(deploymentId, names),
        values,
        // A method using `this`, as the Key Vault store's is: the runtime must call it on the store.
        valueAt(this: { values: Map<string, string> }, url: string) {
          return Promise.resolve(this.values.get(url) ?? null);
        },
        async put(deploymentId: string, entries: Record<string, string>) {
          const urls = await keyVault.references(deploymentId, Object.keys(entries));
          for (const [name, value] of Object.entries(entries)) values.set(urls[name] ?? '', value);
        },
      };
    }
    /** A deployment of an earlier deployment's image (a rollback or a config change): same digest, no push. */
    function sameImage(of: RevisionSpec, overrides: Partial<RevisionSpec> = {}): { spec: RevisionSpec; lines: LoggedLine[] } {
      const { spec: next, lines } = spec({ envVariableNames: of.envVariableNames });
      return { spec: { ...next, image: of.image, imageDigest: of.imageDigest, ...overrides }, lines };
    }
    /** Runtime and vault, and a deploy of a new image whose env values the vault holds first, as the worker does. */
    function withVault() {
      const vault = vaultWith(new Map<string, string>());
      const adapter = runtime({ secrets: vault });
      const deployWith = async (values: Record<string, string>) => {
        const { spec: next } = spec({ envVariableNames: Object.keys(values) });
        await vault.put(next.deploymentId, values);
        return { spec: next, revision: (await adapter.deploy(next)).revision };
      };
      return { vault, adapter, deployWith };
    }
    const appPuts = (appName: string, from = 0) => sim.requests.slice(from).filter((request) => request.method === 'PUT' && request.path.endsWith(`/containerApps/${appName}`));

    it('rollback: reactivates the earlier revision, moves the traffic once it runs healthy, and creates no revision', async () => {
      const { vault, adapter, deployWith } = withVault();
      const { spec: v1, revision: r1 } = await deployWith({ GREETING: 'hello' });
      const { revision: r2 } = await deployWith({ GREETING: 'hello' });
      const { revision: r3 } = await deployWith({ GREETING: 'hello' });
      // Multiple mode keeps the new revision and the one before active; v1's is inactive now.
      expect(sim.apps.revision(v1.appName, r1)?.active).toBe(false);
      expect(sim.apps.revision(v1.appName, r2)?.active).toBe(true);

      const mark = sim.requests.length;
      const changes = sim.apps.trafficChanges.length;
      const { spec: back, lines } = sameImage(v1, { reactivateRevision: r1 });
      await vault.put(back.deploymentId, { GREETING: 'hello' });
      const info = await adapter.deploy(back);
      expect(info).toMatchObject({ revision: r1, previousRevision: r3, url: `https://${v1.appName}.${sim.apps.environment.defaultDomain}` });
      expect(sim.apps.traffic(v1.appName)).toEqual({ [r1]: 100 });
      expect(appPuts(v1.appName, mark)).toEqual([]);
      const later = sim.requests.slice(mark);
      expect(later.filter((request) => request.method === 'POST' && request.path.endsWith(`/revisions/${r1}/activate`))).toHaveLength(1);
      // The switch happened once r1 was healthy again, never before.
      const switches = sim.apps.trafficChanges.slice(changes);
      expect(switches.map((change) => change.weights)).toEqual([{ [r1]: 100 }]);
      expect(switches[0]?.health[r1]).toBe('Healthy');
      // The revision before stays active for an instant way back; the one before that stops.
      expect(sim.apps.revision(v1.appName, r3)?.active).toBe(true);
      expect(sim.apps.revision(v1.appName, r2)?.active).toBe(false);
      expect(lines.map((line) => line.message).join('\n')).toContain(`Reactivating revision ${r1}`);
      expect(JSON.stringify(lines)).not.toContain('hello');
    });

    it('rollback: a new revision pinned to the digest when the old one is gone or its env values differ', async () => {
      const { vault, adapter, deployWith } = withVault();
      const { spec: v1, revision: r1 } = await deployWith({ GREETING: 'hello' });
      await deployWith({ GREETING: 'hello' });

      // The app's env changed since v1 ran: reactivating r1 would serve the old value.
      const { spec: changed, lines } = sameImage(v1, { reactivateRevision: r1 });
      await vault.put(changed.deploymentId, { GREETING: 'bonjour' });
      const mark = sim.requests.length;
      const info = await adapter.deploy(changed);
      expect(info.revision).toBe(revisionName(v1.appName, changed.deploymentId));
      expect(lines.map((line) => line.message).join('\n')).toContain('env variable GREETING has another value now');
      const puts = appPuts(v1.appName, mark);
      expect(puts).toHaveLength(1);
      expect((puts[0]?.body as WireContainerApp).properties?.template?.containers?.[0]?.image).toBe(`${sim.registry}/${imageRepository(v1.appName)}@${v1.imageDigest ?? ''}`);
      expect(sim.apps.traffic(v1.appName)).toEqual({ [info.revision]: 100 });

      // A revision Container Apps no longer has (beyond its inactive history) is replaced the same way.
      const { spec: gone, lines: goneLines } = sameImage(v1, { reactivateRevision: `${v1.appName}--dnotthere01` });
      await vault.put(gone.deploymentId, { GREETING: 'bonjour' });
      expect((await adapter.deploy(gone)).revision).toBe(revisionName(v1.appName, gone.deploymentId));
      expect(goneLines.map((line) => line.message).join('\n')).toContain('no longer exists');
    });

    it('rollback: a revision beyond Container Apps\' inactive history is gone, so the rollback starts a new revision of its digest', async () => {
      const adapter = runtime();
      const { spec: v1 } = spec();
      const r1 = (await adapter.deploy(v1)).revision;
      await adapter.deploy(spec().spec);
      await adapter.deploy(spec().spec);
      expect(sim.apps.revision(v1.appName, r1)?.active).toBe(false);
      // The app's history limit lowered to none (configuration.maxInactiveRevisions, in the spec): r1 is forgotten.
      const client = new ContainerAppsAPIClient(sim.credential, sim.subscriptionId, { endpoint: sim.url, retryOptions: { maxRetries: 0 } });
      await client.containerApps.update(sim.resourceGroup, v1.appName, { location: sim.location, configuration: { maxInactiveRevisions: 0 } }, { updateIntervalInMs: 5 });
      expect(sim.apps.revision(v1.appName, r1)).toBeUndefined();
      const { spec: back, lines } = sameImage(v1, { reactivateRevision: r1 });
      const info = await adapter.deploy(back);
      expect(info.revision).toBe(revisionName(v1.appName, back.deploymentId));
      expect(lines.map((line) => line.message).join('\n')).toContain(`Revision ${r1} no longer exists`);
      expect(sim.apps.app(v1.appName)?.template.containers?.[0]?.image).toBe(`${sim.registry}/${imageRepository(v1.appName)}@${v1.imageDigest ?? ''}`);
    });

    it('config: a new revision of the same image digest with the new env references, the old one stopped after the switch', async () => {
      const { vault, adapter, deployWith } = withVault();
      const { revision: r0 } = await deployWith({ GREETING: 'hello' });
      const { spec: v1, revision: r1 } = await deployWith({ GREETING: 'hello' });
      const { spec: config } = sameImage(v1);
      await vault.put(config.deploymentId, { GREETING: 'bonjour' });
      const info = await adapter.deploy(config);
      expect(info).toMatchObject({ revision: revisionName(v1.appName, config.deploymentId), previousRevision: r1 });
      const app = sim.apps.app(v1.appName);
      expect(app?.template.containers?.[0]?.image).toBe(`${sim.registry}/${imageRepository(v1.appName)}@${v1.imageDigest ?? ''}`);
      expect(app?.template.containers?.[0]?.env).toEqual([
        { name: 'PORT', value: '3000' },
        { name: 'GREETING', secretRef: secretName(config.deploymentId, 'GREETING') },
      ]);
      const references = await keyVault.references(config.deploymentId, ['GREETING']);
      expect(app?.configuration.secrets?.find((secret) => secret.name === secretName(config.deploymentId, 'GREETING'))?.keyVaultUrl).toBe(references.GREETING);
      expect(sim.apps.traffic(v1.appName)).toEqual({ [info.revision]: 100 });
      expect(sim.apps.revision(v1.appName, r0)?.active).toBe(false);
    });

    it('removeApp deletes the Container App (its URL stops answering) and the managed certificate it made, and again without harm', async () => {
      const adapter = runtime();
      const { spec: first } = spec({ customDomain: 'shop.example.com' });
      sim.apps.addDomainRecords('shop.example.com', first.appName);
      await adapter.deploy(first);
      await adapter.deploy(spec().spec);
      expect(sim.apps.certificate('mc-shop-example-com')?.provisioningState).toBe('Succeeded');
      const lines: string[] = [];
      const app = { orgId: ORG, projectId: PROJECT, environment: first.environment, appName: first.appName };
      await adapter.removeApp(app, { signal: new AbortController().signal, log: (message) => lines.push(message) });
      expect(sim.apps.exists(first.appName)).toBe(false);
      expect(sim.apps.traffic(first.appName)).toEqual({});
      expect(sim.apps.certificate('mc-shop-example-com')).toBeUndefined();
      expect(sim.requests.filter((request) => request.method === 'DELETE').map((request) => request.path.replace(/^.*\/providers\//, ''))).toEqual([
        `Microsoft.App/containerApps/${first.appName}`,
        `Microsoft.App/managedEnvironments/${sim.apps.environment.name}/managedCertificates/mc-shop-example-com`,
      ]);
      await expect(runtime().isServing({ appName: first.appName, revision: revisionName(first.appName, first.deploymentId), customDomain: null }, new AbortController().signal)).resolves.toBe(false);
      await adapter.removeApp(app, { signal: new AbortController().signal, log: (message) => lines.push(message) });
      expect(lines.join('\n')).toContain('does not exist; nothing to delete');
    });

    it('removeApp waits out a write that still holds the app, and refuses an app of another project', async () => {
      const adapter = runtime();
      const { spec: first } = spec();
      await adapter.deploy(first);
      // A deployment being cancelled: its PUT still runs when the delete comes.
      sim.apps.revisionOutcome = { kind: 'healthy', pollsUntilHealthy: 6 };
      const { spec: second } = spec();
      const pending = runtime().deploy(second).catch((error: unknown) => error);
      while (!sim.requests.some((request) => request.method === 'PUT' && request.path.endsWith(`/containerApps/${first.appName}`) && request.body !== undefined && JSON.stringify(request.body).includes(revisionSuffix(second.deploymentId)))) {
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      const app = { orgId: ORG, projectId: PROJECT, environment: first.environment, appName: first.appName };
      await adapter.removeApp(app, { signal: new AbortController().signal, log: () => undefined });
      await pending;
      expect(sim.apps.exists(first.appName)).toBe(false);
      const deletes = sim.requests.filter((request) => request.method === 'DELETE' && request.path.endsWith(`/containerApps/${first.appName}`));
      expect(deletes[0]?.error?.code).toBe('ContainerAppLockConflict');
      expect(deletes.at(-1)?.status).toBe(202);

      const other = spec({ environment: 'staging' });
      await adapter.deploy(other.spec);
      const error = await rejection(adapter.removeApp({ orgId: 'org_other', projectId: PROJECT, environment: 'staging', appName: other.spec.appName }, { signal: new AbortController().signal, log: () => undefined }));
      expect(error).toMatchObject({ code: 'CONFLICT' });
      expect(sim.apps.exists(other.spec.appName)).toBe(true);
    });
  });

  it('asks only for ARM tokens and reports healthy', async () => {
    await expect(runtime().health()).resolves.toMatchObject({ status: 'healthy' });
    expect(sim.credential.requestedScopes.every((scopes) => scopes.join(' ') === 'https://management.azure.com/.default')).toBe(true);
  });
});
