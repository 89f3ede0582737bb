import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AzuriteBlob } from '@zepid/testkit/emulators/azurite.ts';
import { startAzuriteBlob } from '@zepid/testkit/emulators/azurite.ts';
import type { CosmosEmulator } from '@zepid/testkit/emulators/cosmos.ts';
import { startCosmosEmulator } from '@zepid/testkit/emulators/cosmos.ts';
import type { FakeAppInsights } from '@zepid/testkit/fakes/appinsights.ts';
import { startFakeAppInsights } from '@zepid/testkit/fakes/appinsights.ts';
import type { ArmSimulator } from '@zepid/testkit/fakes/arm/index.ts';
import { startArmSimulator } from '@zepid/testkit/fakes/arm/index.ts';
import type { FakeKeyVault } from '@zepid/testkit/fakes/keyvault.ts';
import { startFakeKeyVault } from '@zepid/testkit/fakes/keyvault.ts';
import type { ManagedIdentityEndpoint } from '@zepid/testkit/fakes/managed-identity.ts';
import { startManagedIdentityEndpoint } from '@zepid/testkit/fakes/managed-identity.ts';
import type { FakeServiceBus } from '@zepid/testkit/fakes/servicebus/index.ts';
import { startFakeServiceBus } from '@zepid/testkit/fakes/servicebus/index.ts';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { SseClient, trustTestCertificate } from '@zepid/testkit';
import { appPrefixOf, imageRepository } from '@zepid/azure';
import { BlobServiceClient } from '@azure/storage-blob';
import { orgStorageKey, sha256Hex } from '@zepid/core';
import { freePort, waitFor } from './support.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const TOKEN = 'azure-e2e-token-0123456789';
const KEY_VAULT_TOKEN = 'e2e-key-vault-token';

interface Status {
  status: string;
  url: string | null;
  image: string | null;
  revision: string | null;
  reuse: { buildFrom: string | null; revisionKept: boolean };
  error: string | null;
  errorCode: string | null;
  logs: string[];
  steps: Record<string, { status: string }>;
}

/**
 * Azure mode end to end: the API and worker processes, DEPLOY_MODE=azure, against every stand-in at
 * once — Cosmos DB (cosmosdb-server), Blob Storage (Azurite), Service Bus (the AMQP fake), Key Vault
 * (HTTPS fake), ARM for ACI + kaniko + ACR and Container Apps (TLS simulator) — with credentials
 * from a managed-identity endpoint, as in Container Apps.
 */
describe('Azure mode, end to end', () => {
  let cosmos: CosmosEmulator;
  let azurite: AzuriteBlob;
  let serviceBus: FakeServiceBus;
  let keyVault: FakeKeyVault;
  let arm: ArmSimulator;
  let identity: ManagedIdentityEndpoint;
  let insights: FakeAppInsights;
  let api: ChildProcess;
  let worker: ChildProcess;
  let apiUrl: string;
  let output = '';

  const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
  const status = async (id: string) => (await (await fetch(`${apiUrl}/deploy/${id}/status`, { headers })).json()) as Status;
  const deploy = async (projectId: string, extra: Record<string, unknown> = {}) => {
    const body = { projectId, organizationId: 'org_az', userId: 'u', files: [{ path: 'index.html', content: '<h1>on Azure</h1>' }], ...extra };
    const response = await fetch(`${apiUrl}/deploy`, { method: 'POST', headers, body: JSON.stringify(body) });
    expect(response.status, await response.clone().text()).toBe(202);
    return ((await response.json()) as { deploymentId: string }).deploymentId;
  };
  const settle = async (id: string): Promise<Status> => {
    let last: Status | null = null;
    await waitFor(`${id} to finish`, async () => {
      last = await status(id);
      return ['completed', 'failed', 'cancelled', 'superseded'].includes(last.status);
    }, 60_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\nlast status: ${JSON.stringify(last)}\noutput:\n${output.slice(-4000)}`);
    });
    return last as unknown as Status;
  };

  beforeAll(async () => {
    const certificate = trustTestCertificate();
    [cosmos, azurite, serviceBus, keyVault, arm] = await Promise.all([
      startCosmosEmulator(),
      startAzuriteBlob(),
      startFakeServiceBus({ queues: [{ name: 'deployment-queue', lockDurationMs: 10_000, maxDeliveryCount: 3 }] }),
      startFakeKeyVault({ token: KEY_VAULT_TOKEN }),
      startArmSimulator({ lroPolls: 1, lifetimeMs: 10 * 60_000 }),
    ]);
    insights = await startFakeAppInsights();
    identity = await startManagedIdentityEndpoint(async (resource) => {
      if (resource.startsWith('https://vault.azure.net')) return KEY_VAULT_TOKEN;
      return (await arm.credential.getToken(`${resource}/.default`))?.token ?? '';
    });
    const port = await freePort();
    apiUrl = `http://127.0.0.1:${port}`;
    const env: Record<string, string> = {
      ...(process.env as Record<string, string>),
      NODE_EXTRA_CA_CERTS: certificate.certPath,
      LOG_LEVEL: 'warn',
      DEPLOY_MODE: 'azure',
      PORT: String(port),
      DEPLOY_API_TOKENS: `org_az:${TOKEN}`,
      DEPLOYMENT_TIMEOUT_MS: '60000',
      RATE_LIMIT_PER_MINUTE: '100000',
      IDENTITY_ENDPOINT: identity.endpoint,
      IDENTITY_HEADER: identity.header,
      AZURE_CLIENT_ID: '11111111-2222-3333-4444-555555555555',
      AZURE_COSMOS_CONNECTION_STRING: cosmos.connectionString,
      AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString,
      AZURE_SERVICE_BUS_CONNECTION_STRING: serviceBus.connectionString(),
      AZURE_SERVICE_BUS_LOCK_DURATION_MS: '10000',
      AZURE_SERVICE_BUS_MAX_DELIVERY_COUNT: '3',
      AZURE_CREATE_IF_MISSING: 'true',
      AZURE_KEY_VAULT_URI: keyVault.vaultUrl,
      AZURE_KEY_VAULT_VERIFY_CHALLENGE_RESOURCE: 'false',
      AZURE_SUBSCRIPTION_ID: arm.subscriptionId,
      AZURE_RESOURCE_GROUP: arm.resourceGroup,
      AZURE_LOCATION: arm.location,
      AZURE_ARM_ENDPOINT: arm.url,
      AZURE_CONTAINER_REGISTRY: arm.registry,
      AZURE_CONTAINER_APPS_ENVIRONMENT_ID: arm.apps.environment.id,
      AZURE_APPS_IDENTITY_ID: `/subscriptions/${arm.subscriptionId}/resourceGroups/${arm.resourceGroup}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-apps`,
      AZURE_POLL_INTERVAL_MS: '100',
      AZURE_EVENTS_POLL_MS: '200',
      // The webhook receiver of this test is on loopback (https, as Azure mode requires).
      WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true',
      REVISION_READY_TIMEOUT_MS: '5000',
      // The delete job waits this long before deleting an app's source objects: short here.
      OBJECT_UPLOAD_WINDOW_MS: '500',
      APPLICATIONINSIGHTS_CONNECTION_STRING: insights.connectionString,
      // The SDK's own usage reports would go to Microsoft: off, so everything stays on loopback.
      APPLICATION_INSIGHTS_NO_STATSBEAT: 'true',
    };
    const start = (entry: string) => {
      const child = spawn(process.execPath, [entry], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      return child;
    };
    api = start('apps/api/src/server.ts');
    worker = start('apps/worker/src/main.ts');
    await waitFor('the API', async () => (await fetch(`${apiUrl}/health/ready`).catch(() => null))?.status === 200, 60_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\noutput:\n${output.slice(-4000)}`);
    });
  }, 120_000);

  afterAll(async () => {
    for (const child of [worker, api]) child?.kill('SIGTERM');
    await waitFor('the processes to stop', () => [worker, api].every((child) => child === undefined || child.exitCode !== null || child.signalCode !== null), 40_000).catch(() => {
      for (const child of [worker, api]) child?.kill('SIGKILL');
    });
    await Promise.allSettled([insights?.stop(), identity?.stop(), arm?.close(), keyVault?.stop(), serviceBus?.stop(), azurite?.stop(), cosmos?.stop()]);
  }, 60_000);

  it('deploys to a Container App: completed, with its FQDN as url and the image pinned by digest', async () => {
    arm.aci.scenario = { logLines: ['INFO[0000] Retrieving image manifest node:24-slim', 'INFO[0003] Pushing image'], linesPerPoll: 1 };
    const secret = 'azure-e2e-secret-value-42';
    const id = await deploy('shop', { environment: 'production', envVariables: { API_KEY: secret } });
    const done = await settle(id);
    expect(done.status, done.logs.join('\n')).toBe('completed');
    expect(done.url).toMatch(/^https:\/\/shop-[a-z0-9]{6}-production\./);
    expect(done.image).toMatch(/@sha256:[0-9a-f]{64}$/);
    expect(done.logs.some((line) => line.includes('Pushing image'))).toBe(true);
    // The build ran in an ACI group named after the deployment, which cleanup removed.
    const group = `build-${id.slice(4)}`;
    expect(arm.aci.names()).not.toContain(group);
    expect(arm.aci.deleted).toContain(group);
    // The app reads the env value from Key Vault through a reference; the value went nowhere else.
    const app = arm.apps.app(done.url?.match(/^https:\/\/([^.]+)\./)?.[1] ?? '');
    expect(JSON.stringify(app?.configuration.secrets)).toContain(keyVault.vaultUrl);
    expect(JSON.stringify(arm.requests)).not.toContain(secret);
    expect(output).not.toContain(secret);
    expect(arm.invalidRequests()).toEqual([]);
    expect(identity.requests.some((request) => request.resource.startsWith('https://management.azure.com'))).toBe(true);

    // Telemetry: the API's and the worker's events belong to one operation, and carry no secret.
    const ofDeployment = (name: string) => insights.events(name).find((event) => event.data.baseData.properties?.deploymentId === id);
    await insights.waitFor(() => ofDeployment('DeploymentQueued') !== undefined && ofDeployment('DeploymentCompleted') !== undefined, 30_000, 'deployment events');
    const queued = ofDeployment('DeploymentQueued');
    const completed = ofDeployment('DeploymentCompleted');
    expect(queued?.tags['ai.cloud.role']).toBe('zepid-api');
    expect(completed?.tags['ai.cloud.role']).toBe('zepid-worker');
    expect(completed?.tags['ai.operation.id']).toBe(queued?.tags['ai.operation.id']);
    // The API's request span is exported in a later batch than the event it produced.
    await insights.waitFor(
      () => insights.requestsTelemetry().some((request) => request.tags['ai.operation.id'] === queued?.tags['ai.operation.id'] && request.tags['ai.cloud.role'] === 'zepid-api'),
      30_000,
      'the POST /deploy request in the same operation',
    );
    expect(insights.rawBodies()).not.toContain(secret);
  }, 90_000);

  it('streams a deployment over SSE (polling the record and the append blob) and tells a signed webhook it succeeded', async () => {
    const certificate = trustTestCertificate();
    const bodies: { headers: Record<string, string>; body: string }[] = [];
    const receiver = createHttpsServer({ key: certificate.key, cert: certificate.cert }, (request, response) => {
      let body = '';
      request.setEncoding('utf8');
      request.on('data', (chunk: string) => (body += chunk));
      request.on('end', () => {
        bodies.push({ headers: request.headers as Record<string, string>, body });
        response.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    try {
      const hookUrl = `https://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
      const plain = await fetch(`${apiUrl}/webhooks`, { method: 'POST', headers, body: JSON.stringify({ url: hookUrl.replace('https:', 'http:') }) });
      expect(plain.status).toBe(400);
      const registered = await fetch(`${apiUrl}/webhooks`, { method: 'POST', headers, body: JSON.stringify({ url: hookUrl, events: ['deployment.succeeded'] }) });
      expect(registered.status, await registered.clone().text()).toBe(201);
      const { secret } = (await registered.json()) as { secret: string };

      arm.aci.scenario = { logLines: ['INFO[0000] Retrieving image manifest node:24-slim', 'INFO[0003] Pushing image'], linesPerPoll: 1 };
      const id = await deploy('streamed');
      const client = await SseClient.open(`${apiUrl}/deploy/${id}/events`, { authorization: `Bearer ${TOKEN}` });
      expect(client.status).toBe(200);
      const events = await client.until('end', 60_000).catch((error: unknown) => {
        throw new Error(`${String(error)}\noutput:\n${output.slice(-4000)}`);
      });
      expect(JSON.parse(events.at(-1)?.data ?? '{}')).toMatchObject({ status: 'completed', reason: 'terminal' });
      const lines = events.filter((e) => e.event === 'log').map((e) => JSON.parse(e.data) as { seq: number; message: string });
      expect(lines.map((line) => line.seq)).toEqual(lines.map((_, i) => i + 1));
      expect(lines.some((line) => line.message.includes('Pushing image'))).toBe(true);
      const logs = (await (await fetch(`${apiUrl}/deploy/${id}/logs`, { headers })).json()) as { logs: { message: string }[] };
      expect(lines.map((line) => line.message)).toEqual(logs.logs.map((line) => line.message));

      await waitFor('the webhook', () => bodies.length > 0, 30_000);
      const [first] = bodies;
      expect(new Webhook(secret).verify(first?.body ?? '', first?.headers ?? {})).toMatchObject({ type: 'deployment.succeeded', data: { deploymentId: id, status: 'completed' } });
    } finally {
      receiver.close();
    }
  });

  it('keeps traffic on the live revision when a new one never gets healthy, and fails with DEPLOY_UNHEALTHY', async () => {
    arm.aci.scenario = {};
    const first = await settle(await deploy('steady'));
    expect(first.status).toBe('completed');
    const appName = first.url?.match(/^https:\/\/([^.]+)\./)?.[1] ?? '';
    arm.apps.revisionOutcome = { kind: 'unhealthy' };
    try {
      // Another source: an identical one would keep the serving revision and start nothing.
      const second = await settle(await deploy('steady', { files: [{ path: 'index.html', content: '<h1>steady, v2</h1>' }] }));
      expect(second).toMatchObject({ status: 'failed', errorCode: 'DEPLOY_UNHEALTHY' });
      const traffic = arm.apps.app(appName)?.configuration.ingress?.traffic ?? [];
      expect(traffic).toEqual([expect.objectContaining({ revisionName: first.revision, weight: 100 })]);
    } finally {
      arm.apps.revisionOutcome = { kind: 'healthy', pollsUntilHealthy: 2 };
    }
  }, 90_000);

  it('reuses the image of an identical earlier deployment and keeps its revision: no build container group, no new revision', async () => {
    arm.aci.scenario = {};
    const env = { envVariables: { API_KEY: 'same-value-both-times' } };
    const firstId = await deploy('twice', env);
    const first = await settle(firstId);
    expect(first.status, first.logs.join('\n')).toBe('completed');
    expect(first.reuse).toEqual({ buildFrom: null, revisionKept: false });
    const mark = arm.requests.length;
    const id = await deploy('twice', env);
    const second = await settle(id);
    expect(second.status, second.logs.join('\n')).toBe('completed');
    expect(second.logs.join('\n')).toContain('reusing the image built by dep_');
    expect(second.reuse).toEqual({ buildFrom: firstId, revisionKept: true });
    expect(second.image).toBe(first.image);
    const digest = first.image?.split('@')[1] ?? '';
    expect(digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    // The registry was asked for that manifest by digest; no kaniko group was ever created.
    expect(arm.requests.some((request) => request.method === 'HEAD' && request.path.endsWith(`/manifests/${digest}`) && request.status === 200)).toBe(true);
    expect(arm.requests.filter((request) => request.path.includes(`build-${id.slice(4)}`) && request.method === 'PUT')).toEqual([]);
    const appName = second.url?.match(/^https:\/\/([^.]+)\./)?.[1] ?? '';
    const app = arm.apps.app(appName);
    expect(app?.template.containers?.[0]?.image).toBe(first.image?.replace(/:dep_[^@]+@/, '@'));
    // The revision serving, healthy, the same template: kept, as Container Apps keeps an unchanged template.
    expect(second.revision).toBe(first.revision);
    expect(second.logs.join('\n')).toContain(`revision ${first.revision ?? ''} already serves this image with the same settings and env values`);
    expect(arm.requests.slice(mark).filter((request) => request.path.includes(`/containerApps/${appName}`) && request.method !== 'GET')).toEqual([]);
    expect(arm.apps.traffic(appName)).toEqual({ [first.revision ?? '']: 100 });
    expect(arm.invalidRequests()).toEqual([]);
  }, 90_000);

  /**
   * Issue 12 over the fakes, through the API's endpoints: rollback (POST /deploy/:id/rollback), an env
   * change with restart (PUT /projects/:projectId/env/:name), GET /apps and DELETE /projects/:projectId,
   * with the API and worker processes on Cosmos DB, Service Bus, Key Vault, ACR and Container Apps.
   */
  it('rollback reactivates the earlier revision and moves traffic; an env change makes a new revision of the same digest; delete removes the app, its ACR manifests and its Key Vault secrets', async () => {
    arm.aci.scenario = {};
    const ids: string[] = [];
    const done: Status[] = [];
    for (const version of ['v1', 'v2', 'v3']) {
      const id = await deploy('ops', { envVariables: { GREETING: 'hello' }, environment: 'production', files: [{ path: 'index.html', content: `<h1>ops ${version}</h1>` }] });
      const finished = await settle(id);
      expect(finished.status, finished.logs.join('\n')).toBe('completed');
      ids.push(id);
      done.push(finished);
    }
    const [v1, v2, v3] = done as [Status, Status, Status];
    const app = v1.url?.match(/^https:\/\/([^.]+)\./)?.[1] ?? '';
    const repository = imageRepository(app);
    const digests = done.map((state) => state.image?.split('@')[1] ?? '');
    expect(new Set(digests).size).toBe(3);
    // Multiple mode keeps the live revision and the one before active: v1's is inactive by now.
    expect(arm.apps.revision(app, v1.revision ?? '')?.active).toBe(false);
    expect(arm.apps.traffic(app)).toEqual({ [v3.revision ?? '']: 100 });
    const listed = (await (await fetch(`${apiUrl}/apps?limit=100`, { headers })).json()) as { apps: { appName: string; status: string; liveDeploymentId: string }[] };
    expect(listed.apps.find((entry) => entry.appName === app)).toMatchObject({ status: 'live', liveDeploymentId: ids[2] });

    // Rollback to v1 with the app's current values (the same as v1 ran with): its revision comes back.
    const beforeRollback = arm.requests.length;
    const rollback = await fetch(`${apiUrl}/deploy/${ids[0] ?? ''}/rollback`, { method: 'POST', headers, body: '{}' });
    expect(rollback.status, await rollback.clone().text()).toBe(202);
    const rollbackId = ((await rollback.json()) as { deploymentId: string }).deploymentId;
    const rolledBack = await settle(rollbackId);
    expect(rolledBack.status, rolledBack.logs.join('\n')).toBe('completed');
    expect(rolledBack.revision).toBe(v1.revision);
    expect(rolledBack.image).toBe(v1.image);
    expect(rolledBack.steps.build?.status).toBe('skipped');
    expect(arm.apps.traffic(app)).toEqual({ [v1.revision ?? '']: 100 });
    const duringRollback = arm.requests.slice(beforeRollback);
    expect(duringRollback.filter((request) => request.method === 'POST' && request.path.endsWith(`/revisions/${v1.revision ?? ''}/activate`))).toHaveLength(1);
    expect(duringRollback.filter((request) => request.method === 'PUT' && (request.path.endsWith(`/containerApps/${app}`) || request.path.includes('/containerGroups/')))).toEqual([]);
    expect(rolledBack.logs.join('\n')).toContain(`Reactivating revision ${v1.revision ?? ''}`);

    // Env change with restart: a config deployment of the live image with the new value.
    const beforeConfig = arm.requests.length;
    const changed = await fetch(`${apiUrl}/projects/ops/env/GREETING`, { method: 'PUT', headers, body: JSON.stringify({ value: 'bonjour', environment: 'production' }) });
    expect(changed.status, await changed.clone().text()).toBeLessThan(300);
    const answer = (await changed.json()) as { deploymentId: string | null; kind: string | null };
    expect(answer.kind).toBe('config');
    const configured = await settle(answer.deploymentId ?? '');
    expect(configured.status, configured.logs.join('\n')).toBe('completed');
    expect(configured.revision).not.toBe(v1.revision);
    expect(configured.image?.split('@')[1]).toBe(digests[0]);
    const template = arm.apps.app(app)?.template.containers?.[0];
    expect(template?.image).toBe(`${arm.registry}/${repository}@${digests[0] ?? ''}`);
    const secretRef = template?.env?.find((variable) => variable.name === 'GREETING')?.secretRef;
    const reference = arm.apps.app(app)?.configuration.secrets?.find((secret) => secret.name === secretRef)?.keyVaultUrl ?? '';
    const secretName = new URL(reference).pathname.split('/')[2] ?? '';
    expect(keyVault.secret(secretName)?.value).toBe('bonjour');
    expect(arm.apps.traffic(app)).toEqual({ [configured.revision ?? '']: 100 });
    expect(arm.requests.slice(beforeConfig).filter((request) => request.path.includes('/containerGroups/') && request.method === 'PUT')).toEqual([]);
    expect(output).not.toContain('bonjour');

    // Delete: 202 at once, then the delete-app job removes everything the app owns.
    const sources = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient('sources');
    const objectsOfOps = async () => {
      const wanted = ['v1', 'v2', 'v3'].map((version) => `objects/${orgStorageKey('org_az')}/${sha256Hex(`<h1>ops ${version}</h1>`)}`);
      const found: string[] = [];
      for await (const blob of sources.listBlobsFlat({ prefix: `objects/${orgStorageKey('org_az')}/` })) if (wanted.includes(blob.name)) found.push(blob.name);
      return found;
    };
    expect(await objectsOfOps()).toHaveLength(3);
    const removed = await fetch(`${apiUrl}/projects/ops?environment=production`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}` } });
    expect(removed.status, await removed.clone().text()).toBe(202);
    expect(await removed.json()).toEqual({ projectId: 'ops', environment: 'production', apps: [app], status: 'deleting' });
    const all = [...ids, rollbackId, answer.deploymentId ?? ''];
    await waitFor('the app to be deleted', async () => (await fetch(`${apiUrl}/deploy/${rollbackId}/status`, { headers })).status === 404 && !arm.apps.exists(app), 60_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\noutput:\n${output.slice(-4000)}`);
    });
    await waitFor('the app to leave GET /apps', async () => {
      const page = (await (await fetch(`${apiUrl}/apps?limit=100`, { headers })).json()) as { apps: { appName: string }[] };
      return !page.apps.some((entry) => entry.appName === app);
    }, 60_000);
    // Its source objects (Blob Storage, Azurite) went with it: marked, then deleted with If-Match.
    expect(await objectsOfOps()).toEqual([]);
    for (const digest of digests) expect(arm.acr.hasDigest(repository, digest)).toBe(false);
    expect(arm.acr.tagsOf(repository)).toEqual([]);
    const appPrefix = appPrefixOf({ orgId: 'org_az', appName: app });
    const leftovers = [...keyVault.secretNames(), ...keyVault.deletedSecretNames()].filter(
      (name) => name.startsWith(appPrefix) || all.some((id) => name.startsWith(`${id.replace('_', '-')}-`)),
    );
    expect(leftovers).toEqual([]);
    for (const id of all) expect((await fetch(`${apiUrl}/deploy/${id}/status`, { headers })).status).toBe(404);
    expect(v2.status).toBe('completed');
    expect(arm.invalidRequests()).toEqual([]);
  }, 240_000);

  it('cancels a running build: cancelled, and its container group is deleted', async () => {
    arm.aci.scenario = { runForever: true };
    const id = await deploy('slow');
    await waitFor('the build to run', async () => (await status(id)).steps.build?.status === 'in_progress', 60_000);
    const cancel = await fetch(`${apiUrl}/deploy/${id}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
    expect(cancel.status).toBe(202);
    const done = await settle(id);
    expect(done.status).toBe('cancelled');
    expect(arm.aci.deleted).toContain(`build-${id.slice(4)}`);
    expect(arm.aci.names()).not.toContain(`build-${id.slice(4)}`);
  }, 90_000);

  it('fails a build that exits 1 with the exit code and the log tail, and deletes the group', async () => {
    arm.aci.scenario = { logLines: ['INFO[0000] Building', 'npm ERR! Missing script: "build"'], exitCode: 1 };
    const id = await deploy('broken');
    const done = await settle(id);
    expect(done.status).toBe('failed');
    expect(done.errorCode).toBe('BUILD_FAILED');
    expect(done.error).toContain('1');
    expect(done.error).toContain('Missing script');
    expect(arm.aci.names()).not.toContain(`build-${id.slice(4)}`);
  }, 90_000);
});
