import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { revisionSuffix } from '@zepid/core';
import type { AzuriteBlob } from '@zepid/testkit/emulators/azurite.ts';
import { startAzuriteBlob } from '@zepid/testkit/emulators/azurite.ts';
import type { CosmosEmulator } from '@zepid/testkit/emulators/cosmos.ts';
import { startCosmosEmulator } from '@zepid/testkit/emulators/cosmos.ts';
import type { ArmSimulator } from '@zepid/testkit/fakes/arm/index.ts';
import { startArmSimulator } from '@zepid/testkit/fakes/arm/index.ts';
import type { FakeKeyVault } from '@zepid/testkit/fakes/keyvault.ts';
import { startFakeKeyVault } from '@zepid/testkit/fakes/keyvault.ts';
import type { ManagedIdentityEndpoint } from '@zepid/testkit/fakes/managed-identity.ts';
import { startManagedIdentityEndpoint } from '@zepid/testkit/fakes/managed-identity.ts';
import type { FakeServiceBus } from '@zepid/testkit/fakes/servicebus/index.ts';
import { startFakeServiceBus } from '@zepid/testkit/fakes/servicebus/index.ts';
import { trustTestCertificate } from '@zepid/testkit';
import { freePort, waitFor } from './support.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const TOKEN = 'scale-out-e2e-token-0123456789';
const KEY_VAULT_TOKEN = 'scale-out-key-vault-token';
/** Short, so a stall past it stays a few seconds; the workers renew at a third of it. */
const LOCK_MS = 5000;
/** Client ids (GUIDs, as Entra's are) of the processes, and the name each one's requests are recorded under. */
const CLIENTS: Record<string, string> = {
  '11111111-2222-3333-4444-000000000001': 'api',
  '11111111-2222-3333-4444-00000000000a': 'worker-a',
  '11111111-2222-3333-4444-00000000000b': 'worker-b',
};
const clientIdOf = (name: string) => Object.keys(CLIENTS).find((id) => CLIENTS[id] === name) ?? '';

interface Status {
  status: string;
  currentStep: string | null;
  url: string | null;
  revision: string | null;
  errorCode: string | null;
  error: string | null;
  logs: string[];
  steps: Record<string, { status: string; error: string | null }>;
}

interface Worker {
  name: string;
  child: ChildProcess;
  output: string;
}

/**
 * Scale-out safety, with the fakes: the API and two workers in Azure mode share one queue. A worker
 * is stopped (SIGSTOP) past its lock while it runs a deployment, another worker takes the deployment
 * over, and the stopped one is resumed (SIGCONT): it must make no ARM call once its lease is taken
 * (every ARM request is recorded with the worker that sent it: each worker has its own client id,
 * and the identity endpoint hands each its own token), undo nothing, and log what it skipped.
 */
describe('Azure mode, scaled out: a worker that stalls past its lock and wakes up', () => {
  let cosmos: CosmosEmulator;
  let azurite: AzuriteBlob;
  let serviceBus: FakeServiceBus;
  let keyVault: FakeKeyVault;
  let arm: ArmSimulator;
  let identity: ManagedIdentityEndpoint;
  let api: ChildProcess;
  const workers: Worker[] = [];
  let apiUrl: string;
  let apiOutput = '';

  const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
  const status = async (id: string) => (await (await fetch(`${apiUrl}/deploy/${id}/status`, { headers })).json()) as Status;
  const deploy = async (projectId: string, content: string) => {
    const body = { projectId, organizationId: 'org_scale', userId: 'u', files: [{ path: 'index.html', content }] };
    const response = await fetch(`${apiUrl}/deploy`, { method: 'POST', headers, body: JSON.stringify(body) });
    expect(response.status, await response.clone().text()).toBe(202);
    return ((await response.json()) as { deploymentId: string }).deploymentId;
  };
  const diagnostics = () => workers.map((worker) => `--- ${worker.name}:\n${worker.output.slice(-3000)}`).join('\n') + `\n--- api:\n${apiOutput.slice(-1500)}`;
  const settle = async (id: string): Promise<Status> => {
    let last: Status | null = null;
    await waitFor(`${id} to finish`, async () => {
      last = await status(id);
      return ['completed', 'failed', 'cancelled', 'superseded'].includes(last.status);
    }, 90_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\nlast status: ${JSON.stringify(last)}\n${diagnostics()}`);
    });
    return last as unknown as Status;
  };
  const byName = (name: string | undefined) => workers.find((worker) => worker.name === name);
  /** The worker that sent the first request matching `path` (and method). */
  const senderOf = async (method: string, path: RegExp): Promise<Worker> => {
    await waitFor(`a ${method} ${String(path)}`, () => arm.requests.some((request) => request.method === method && path.test(request.path) && request.caller !== undefined), 60_000);
    const first = arm.requests.find((request) => request.method === method && path.test(request.path) && request.caller !== undefined);
    const worker = byName(first?.caller);
    if (worker === undefined) throw new Error(`no worker sent ${method} ${String(path)}`);
    return worker;
  };
  const resume = (worker: Worker) => {
    if (worker.child.exitCode === null && worker.child.signalCode === null) worker.child.kill('SIGCONT');
  };

  beforeAll(async () => {
    const certificate = trustTestCertificate();
    [cosmos, azurite, serviceBus, keyVault, arm] = await Promise.all([
      startCosmosEmulator(),
      startAzuriteBlob(),
      startFakeServiceBus({ queues: [{ name: 'deployment-queue', lockDurationMs: LOCK_MS, maxDeliveryCount: 5 }] }),
      startFakeKeyVault({ token: KEY_VAULT_TOKEN }),
      startArmSimulator({ lroPolls: 1, lifetimeMs: 10 * 60_000 }),
    ]);
    // Each process asks for tokens with its own AZURE_CLIENT_ID; its ARM tokens carry that name.
    identity = await startManagedIdentityEndpoint(async (resource, clientId) => {
      if (resource.startsWith('https://vault.azure.net')) return KEY_VAULT_TOKEN;
      const token = (await arm.credential.getToken(`${resource}/.default`))?.token ?? '';
      const name = clientId === null ? undefined : CLIENTS[clientId];
      if (name !== undefined) arm.credential.label(token, name);
      return token;
    });
    const port = await freePort();
    apiUrl = `http://127.0.0.1:${port}`;
    const env: Record<string, string> = {
      ...(process.env as Record<string, string>),
      NODE_EXTRA_CA_CERTS: certificate.certPath,
      LOG_LEVEL: 'warn',
      DEPLOY_MODE: 'azure',
      PORT: String(port),
      DEPLOY_API_TOKENS: `org_scale:${TOKEN}`,
      DEPLOYMENT_TIMEOUT_MS: '90000',
      RATE_LIMIT_PER_MINUTE: '100000',
      IDENTITY_ENDPOINT: identity.endpoint,
      IDENTITY_HEADER: identity.header,
      AZURE_COSMOS_CONNECTION_STRING: cosmos.connectionString,
      AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString,
      AZURE_SERVICE_BUS_CONNECTION_STRING: serviceBus.connectionString(),
      AZURE_SERVICE_BUS_LOCK_DURATION_MS: String(LOCK_MS),
      AZURE_SERVICE_BUS_MAX_DELIVERY_COUNT: '5',
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
      REVISION_READY_TIMEOUT_MS: '30000',
      APPLICATION_INSIGHTS_NO_STATSBEAT: 'true',
    };
    const start = (entry: string, name: string, collect: (chunk: string) => void) => {
      const child = spawn(process.execPath, [entry], { cwd: root, env: { ...env, AZURE_CLIENT_ID: clientIdOf(name) }, stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout.on('data', (chunk: Buffer) => collect(chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => collect(chunk.toString()));
      return child;
    };
    api = start('apps/api/src/server.ts', 'api', (chunk) => (apiOutput += chunk));
    for (const name of ['worker-a', 'worker-b']) {
      const worker: Worker = { name, child: undefined as unknown as ChildProcess, output: '' };
      worker.child = start('apps/worker/src/main.ts', name, (chunk) => (worker.output += chunk));
      workers.push(worker);
    }
    let readiness = '';
    await waitFor('the API', async () => {
      const response = await fetch(`${apiUrl}/health/ready`).catch(() => null);
      readiness = response === null ? 'no answer' : `${response.status} ${await response.text()}`;
      return response?.status === 200;
    }, 100_000).catch((error: unknown) => {
      throw new Error(`${String(error)} (last: ${readiness})\n${diagnostics()}`);
    });
  }, 150_000);

  afterAll(async () => {
    const children = [...workers.map((worker) => worker.child), api].filter((child) => child !== undefined);
    // A stopped process ignores SIGTERM until it is continued.
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGCONT');
        child.kill('SIGTERM');
      }
    }
    await waitFor('the processes to stop', () => children.every((child) => child.exitCode !== null || child.signalCode !== null), 40_000).catch(() => {
      for (const child of children) child.kill('SIGKILL');
    });
    await Promise.allSettled([identity?.stop(), arm?.close(), keyVault?.stop(), serviceBus?.stop(), azurite?.stop(), cosmos?.stop()]);
  }, 60_000);

  it('stopped during the build: the successor follows the same build container group to the end; the woken worker deletes nothing', async () => {
    // A build that only advances when someone polls it: 40 log lines, one per poll.
    arm.aci.scenario = { logLines: Array.from({ length: 40 }, (_, i) => `INFO[00${String(i).padStart(2, '0')}] step ${i}`), linesPerPoll: 1 };
    const id = await deploy('stall-build', '<h1>stall during the build</h1>');
    const group = new RegExp(`/containerGroups/build-${id.slice(4)}$`);
    const owner = await senderOf('PUT', group);
    // Stop it while it follows the running build.
    await waitFor('the build to run', () => arm.requests.filter((request) => request.method === 'GET' && group.test(request.path) && request.caller === owner.name).length >= 5, 30_000);
    owner.child.kill('SIGSTOP');
    try {
      const stoppedAt = arm.requests.length;
      // Its locks expire; the other worker takes the deployment over and follows the same group.
      await waitFor('another worker to take the deployment over', () => arm.requests.slice(stoppedAt).some((request) => group.test(request.path) && request.caller !== undefined && request.caller !== owner.name), 45_000).catch(
        (error: unknown) => {
          throw new Error(`${String(error)}\n${diagnostics()}`);
        },
      );
      const takenOver = arm.requests.findIndex((request, index) => index >= stoppedAt && group.test(request.path) && request.caller !== owner.name);
      await sleep(500);
      resume(owner);
      const done = await settle(id);
      expect(done.status, done.logs.join('\n')).toBe('completed');
      // The woken worker finds out (its renewals fail; its lease check reads the record) and stops.
      await waitFor('the woken worker to notice', () => owner.output.includes('lease lost'), 20_000).catch((error: unknown) => {
        throw new Error(`${String(error)}\n${diagnostics()}`);
      });
      // Whatever it would still do, it does within a moment of waking: give it that moment.
      await sleep(1500);
      const created = arm.requests.filter((request) => request.method === 'PUT' && group.test(request.path) && request.status < 300);
      expect(created, 'build container groups created').toHaveLength(1);
      expect(arm.requests.filter((request) => request.method === 'DELETE' && group.test(request.path) && request.caller === owner.name)).toEqual([]);
      const late = arm.requests.slice(takenOver).filter((request) => request.caller === owner.name);
      expect(late, 'ARM requests of the woken worker after the takeover').toEqual([]);
      expect(owner.output).toMatch(/lease lost: skipped deleting build container group build-/);
      const log = await (await fetch(`${apiUrl}/deploy/${id}/logs`, { headers: { ...headers, accept: 'text/plain' } })).text();
      expect(log).toContain('attempt 1 resumes at build');
    } finally {
      resume(owner);
    }
  }, 150_000);

  it("stopped during the deploy step: the successor's revision stays active with all the traffic", async () => {
    arm.aci.scenario = {};
    // Slow to get healthy, so the deploy step waits long enough to be stopped in.
    arm.apps.revisionOutcome = { kind: 'healthy', pollsUntilHealthy: 9 };
    try {
      const id = await deploy('stall-deploy', '<h1>stall during the deploy step</h1>');
      const revisionName = new RegExp(`/revisions/[^/]+--${revisionSuffix(id)}$`);
      const owner = await senderOf('GET', revisionName);
      owner.child.kill('SIGSTOP');
      try {
        const stoppedAt = arm.requests.length;
        await waitFor('another worker to take the deployment over', () => arm.requests.slice(stoppedAt).some((request) => request.caller !== undefined && request.caller !== owner.name && /containerApps\/stall-deploy/.test(request.path)), 45_000).catch(
          (error: unknown) => {
            throw new Error(`${String(error)}\n${diagnostics()}`);
          },
        );
        const takenOver = arm.requests.findIndex((request, index) => index >= stoppedAt && request.caller !== undefined && request.caller !== owner.name);
        const done = await settle(id);
        expect(done.status, done.logs.join('\n')).toBe('completed');
        resume(owner);
        await waitFor('the woken worker to notice', () => owner.output.includes('lease lost'), 20_000).catch((error: unknown) => {
          throw new Error(`${String(error)}\n${diagnostics()}`);
        });
        await sleep(1500);
        const appName = done.url?.match(/^https:\/\/([^.]+)\./)?.[1] ?? '';
        const revision = done.revision ?? '';
        expect(arm.apps.traffic(appName)).toEqual({ [revision]: 100 });
        expect(arm.apps.revision(appName, revision)?.active).toBe(true);
        const late = arm.requests.slice(takenOver).filter((request) => request.caller === owner.name);
        expect(late, 'ARM requests of the woken worker after the takeover').toEqual([]);
        expect(owner.output).toMatch(/lease lost/);
      } finally {
        resume(owner);
      }
    } finally {
      arm.apps.revisionOutcome = { kind: 'healthy', pollsUntilHealthy: 2 };
    }
  }, 150_000);

  it("an older deployment's retry that comes after a newer deployment went live ends superseded; the newer revision keeps the traffic", async () => {
    arm.aci.scenario = {};
    const olderId = await deploy('ordered', '<h1>older</h1>');
    // The older deployment's revision cannot be created twice (a quota answer: retryable, not retried by the SDK).
    arm.injectFault({ method: 'PUT', path: /\/containerApps\/ordered-/, body: new RegExp(`"revisionSuffix":"${revisionSuffix(olderId)}"`), status: 409, code: 'MaxRevisionsQuotaExceeded', message: 'quota exceeded', times: 2 });
    await waitFor('the older deployment to wait for its retry', async () => {
      const current = await status(olderId);
      return current.steps.deploy?.status === 'pending' && (current.steps.deploy.error ?? '') !== '';
    }, 60_000).catch((error: unknown) => {
      throw new Error(`${String(error)}\n${diagnostics()}`);
    });
    // While it waits, the project's session is free: a newer deployment of the same app goes live.
    const newerId = await deploy('ordered', '<h1>newer</h1>');
    const newer = await settle(newerId);
    expect(newer.status, newer.logs.join('\n')).toBe('completed');
    const older = await settle(olderId);
    expect(older.status, older.logs.join('\n')).toBe('superseded');
    expect(older.errorCode).toBe('SUPERSEDED');
    expect(older.error).toContain(newerId);
    const appName = newer.url?.match(/^https:\/\/([^.]+)\./)?.[1] ?? '';
    expect(arm.apps.traffic(appName)).toEqual({ [newer.revision ?? '']: 100 });
    expect(arm.invalidRequests()).toEqual([]);
  }, 150_000);
});
