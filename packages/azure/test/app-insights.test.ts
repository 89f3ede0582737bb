import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AccessToken, TokenCredential } from '@azure/identity';
import { BlobServiceClient } from '@azure/storage-blob';
import Fastify from 'fastify';
import { silentLogger } from '@zepid/core';
import { testCertificate, trustTestCertificate } from '@zepid/testkit';
import type { AppInsightsEnvelope, FakeAppInsights } from '@zepid/testkit/fakes/appinsights.ts';
import { startFakeAppInsights } from '@zepid/testkit/fakes/appinsights.ts';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { AppInsightsTelemetryOptions } from '../src/telemetry/app-insights.ts';
import { AppInsightsTelemetry } from '../src/telemetry/app-insights.ts';
import { formatTraceparent, parseTraceparent } from '../src/telemetry/traceparent.ts';

trustTestCertificate();
// The SDK's own usage reports (statsbeat) go to a Microsoft endpoint; these tests stay on loopback.
process.env.APPLICATION_INSIGHTS_NO_STATSBEAT = 'true';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT_SPAN_ID = '00f067aa0ba902b7';

const tag = (envelope: AppInsightsEnvelope | undefined, key: string) => envelope?.tags[key];

function recordingCredential(token: string): TokenCredential & { scopes: string[][] } {
  const scopes: string[][] = [];
  return {
    scopes,
    getToken: (requested: string | string[]): Promise<AccessToken> => {
      scopes.push(Array.isArray(requested) ? requested : [requested]);
      return Promise.resolve({ token, expiresOnTimestamp: Date.now() + 3_600_000 });
    },
  };
}

describe('traceparent', () => {
  it('reads a W3C traceparent and writes it back', () => {
    const value = `00-${TRACE_ID}-${PARENT_SPAN_ID}-01`;
    expect(parseTraceparent(value)).toEqual({ traceId: TRACE_ID, spanId: PARENT_SPAN_ID, sampled: true });
    expect(formatTraceparent({ traceId: TRACE_ID, spanId: PARENT_SPAN_ID, sampled: false })).toBe(`00-${TRACE_ID}-${PARENT_SPAN_ID}-00`);
    // A later version may append fields.
    expect(parseTraceparent(`01-${TRACE_ID}-${PARENT_SPAN_ID}-01-extra`)?.traceId).toBe(TRACE_ID);
  });

  it('refuses what the specification forbids', () => {
    for (const bad of [
      '',
      'garbage',
      `ff-${TRACE_ID}-${PARENT_SPAN_ID}-01`,
      `00-${'0'.repeat(32)}-${PARENT_SPAN_ID}-01`,
      `00-${TRACE_ID}-${'0'.repeat(16)}-01`,
      `00-${TRACE_ID.toUpperCase()}-${PARENT_SPAN_ID}-01`,
      `00-${TRACE_ID}-${PARENT_SPAN_ID}-01-extra`,
    ]) {
      expect(parseTraceparent(bad), bad).toBeNull();
    }
  });
});

describe('AppInsightsTelemetry (in process, against the TLS ingestion fake)', () => {
  let fake: FakeAppInsights | null = null;
  let telemetry: AppInsightsTelemetry | null = null;

  afterEach(async () => {
    await telemetry?.close();
    telemetry = null;
    await fake?.stop();
    fake = null;
  });

  const start = async (overrides: Partial<AppInsightsTelemetryOptions> = {}) => {
    fake ??= await startFakeAppInsights();
    telemetry = new AppInsightsTelemetry({
      connectionString: fake.connectionString,
      cloudRoleName: 'zepid-test',
      logger: silentLogger,
      liveMetrics: false,
      offlineStorage: false,
      // The fake runs in this process: its own incoming track requests must not become telemetry.
      ignoreIncomingPaths: ['/v2.1/track', '/health/live'],
      ...overrides,
    });
    await telemetry.start();
    return { fake, telemetry };
  };

  it('sends deployment events and metrics with their properties in the operation of a traceparent, with an Entra token; close() flushes them', async () => {
    fake = await startFakeAppInsights({ token: 'ingestion-token' });
    const credential = recordingCredential('ingestion-token');
    const { telemetry: adapter } = await start({ credential });
    const properties = { deploymentId: 'dep_aaaaaaaaaaaaaaaaaaaaaaaaaa', orgId: 'org_1', projectId: 'site', environment: 'production' };

    expect(adapter.currentTraceparent()).toBeNull();
    let inside: string | null = null;
    const result = await adapter.withOperation('ProcessDeployment', `00-${TRACE_ID}-${PARENT_SPAN_ID}-01`, async () => {
      inside = adapter.currentTraceparent();
      adapter.metric('StepDuration', 1000, { ...properties, step: 'build' });
      adapter.metric('StepDuration', 3000, { ...properties, step: 'build' });
      adapter.metric('StepDuration', 250, { ...properties, step: 'sync' });
      adapter.metric('DeploymentDuration', 4250, properties);
      adapter.event('DeploymentCompleted', { ...properties, url: 'https://site.example' });
      return 'ran';
    });
    expect(result).toBe('ran');
    adapter.event('DeploymentFailed', { ...properties, errorCode: 'BUILD_FAILED', step: 'build' });
    await adapter.close();

    // Everything is there once close() resolves: no waiting.
    const consumer = fake.requestsTelemetry('ProcessDeployment');
    expect(consumer).toHaveLength(1);
    expect(tag(consumer[0], 'ai.operation.id')).toBe(TRACE_ID);
    expect(tag(consumer[0], 'ai.operation.parentId')).toBe(PARENT_SPAN_ID);
    expect(tag(consumer[0], 'ai.cloud.role')).toBe('zepid-test');
    expect(consumer[0]?.data.baseData.success).toBe(true);
    const consumerSpanId = String(consumer[0]?.data.baseData.id);
    expect(inside).toBe(`00-${TRACE_ID}-${consumerSpanId}-01`);

    const [completed] = fake.events('DeploymentCompleted');
    expect(completed?.name).toBe('Microsoft.ApplicationInsights.Event');
    expect(completed?.iKey).toBe(fake.instrumentationKey);
    expect(completed?.data.baseData.properties).toEqual({ ...properties, url: 'https://site.example' });
    expect(tag(completed, 'ai.operation.id')).toBe(TRACE_ID);
    expect(tag(completed, 'ai.operation.parentId')).toBe(consumerSpanId);
    expect(tag(completed, 'ai.operation.name')).toBe('ProcessDeployment');
    expect(tag(completed, 'ai.cloud.role')).toBe('zepid-test');

    // Outside any operation: an event of its own, with no operation.
    const [failed] = fake.events('DeploymentFailed');
    expect(failed?.data.baseData.properties).toEqual({ ...properties, errorCode: 'BUILD_FAILED', step: 'build' });
    expect(tag(failed, 'ai.operation.id')).toBeUndefined();

    // Metrics are aggregated per set of properties and interval: sum, count, min, max.
    const build = fake.metrics('StepDuration').filter((point) => point.properties.step === 'build');
    expect(build).toHaveLength(1);
    expect(build[0]).toMatchObject({ value: 4000, count: 2, min: 1000, max: 3000, properties: { ...properties, step: 'build' } });
    expect(fake.metrics('StepDuration').find((point) => point.properties.step === 'sync')).toMatchObject({ value: 250, count: 1 });
    expect(fake.metrics('DeploymentDuration')).toMatchObject([{ value: 4250, count: 1, properties }]);
    expect(fake.metrics('QueueWait')).toEqual([]);

    // Entra-authenticated ingestion: every request carried the token, asked for the Azure Monitor scope.
    expect(fake.requests.length).toBeGreaterThan(0);
    expect(fake.requests.every((request) => request.bearer)).toBe(true);
    expect(credential.scopes).toContainEqual(['https://monitor.azure.com/.default']);
    expect(fake.otherRequests).toEqual([]);
  });

  it('names requests by their Fastify route, keeps probes out, and gives the handler the request span as traceparent', async () => {
    const { fake: ingestion, telemetry: adapter } = await start();
    const app = Fastify();
    app.get('/deploy/:id/status', async () => {
      adapter.event('DeploymentQueued', { deploymentId: 'dep_bbbbbbbbbbbbbbbbbbbbbbbbbb', orgId: 'org_1', projectId: 'site', environment: 'development' });
      return { traceparent: adapter.currentTraceparent() };
    });
    app.get('/health/live', async () => ({ status: 'ok' }));
    const base = await app.listen({ host: '127.0.0.1', port: 0 });
    let traceparent: string | null;
    try {
      const response = await fetch(`${base}/deploy/dep_bbbbbbbbbbbbbbbbbbbbbbbbbb/status`);
      expect(response.status).toBe(200);
      ({ traceparent } = (await response.json()) as { traceparent: string | null });
      expect((await fetch(`${base}/health/live`)).status).toBe(200);
    } finally {
      await app.close();
    }
    await adapter.close();

    const requests = ingestion.requestsTelemetry().filter((request) => tag(request, 'ai.cloud.role') === 'zepid-test');
    expect(requests.map((request) => request.data.baseData.name)).toEqual(['GET /deploy/:id/status']);
    const [request] = requests;
    expect(request?.data.baseData.responseCode).toBe('200');
    const operationId = tag(request, 'ai.operation.id');
    expect(operationId).toMatch(/^[0-9a-f]{32}$/);
    expect(traceparent).toBe(`00-${operationId}-${String(request?.data.baseData.id)}-01`);

    const [queued] = ingestion.events('DeploymentQueued');
    expect(tag(queued, 'ai.operation.id')).toBe(operationId);
    expect(tag(queued, 'ai.operation.parentId')).toBe(request?.data.baseData.id);
    expect(tag(queued, 'ai.operation.name')).toBe('GET /deploy/:id/status');
  });

  it('reports Azure SDK calls and their HTTP requests as dependencies of the operation, SAS signature redacted', async () => {
    const { fake: ingestion, telemetry: adapter } = await start();
    const signature = `sig${randomBytes(8).toString('hex')}`;
    await adapter.withOperation('ProcessDeployment', `00-${TRACE_ID}-${PARENT_SPAN_ID}-01`, async () => {
      // Any HTTPS endpoint will do: the fake answers 404, which the SDK reports as a failed call.
      const blobs = new BlobServiceClient(`${ingestion.endpoint}?sv=2024-08-04&sig=${signature}`, undefined, { retryOptions: { maxTries: 1 } });
      await expect(blobs.getProperties()).rejects.toThrow();
    });
    await adapter.close();

    const dependencies = ingestion.dependencies();
    const sdkCall = dependencies.find((dependency) => dependency.data.baseData.name === 'BlobServiceClient-getProperties');
    const httpCall = dependencies.find((dependency) => dependency.data.baseData.type === 'Http');
    expect(sdkCall?.data.baseData.type).toBe('InProc | Microsoft.Storage');
    expect(httpCall?.data.baseData.resultCode).toBe('404');
    for (const dependency of [sdkCall, httpCall]) expect(tag(dependency, 'ai.operation.id')).toBe(TRACE_ID);
    expect(String(httpCall?.data.baseData.data)).toContain('sig=REDACTED');
    expect(ingestion.rawBodies()).not.toContain(signature);
  });

  it('start() rejects a connection string without a valid instrumentation key', async () => {
    for (const connectionString of ['InstrumentationKey=not-a-guid;IngestionEndpoint=https://127.0.0.1:9/', 'IngestionEndpoint=https://127.0.0.1:9/']) {
      const adapter = new AppInsightsTelemetry({ connectionString, cloudRoleName: 'zepid-test', logger: silentLogger, liveMetrics: false, offlineStorage: false });
      await expect(adapter.start(), connectionString).rejects.toThrow(/instrumentation key/i);
    }
  });

  it('refuses a second started instance in the same process', async () => {
    const { fake: ingestion } = await start();
    const second = new AppInsightsTelemetry({ connectionString: ingestion.connectionString, cloudRoleName: 'other', logger: silentLogger });
    await expect(second.start()).rejects.toThrow(/already started/);
  });

  it('close() returns even when the ingestion endpoint never answers', async () => {
    fake = await startFakeAppInsights();
    fake.stall(true);
    const { telemetry: adapter } = await start({ closeTimeoutMs: 300 });
    adapter.event('DeploymentCancelled', { deploymentId: 'dep_cccccccccccccccccccccccccc', orgId: 'org_1', projectId: 'site', environment: 'development', step: 'build' });
    await adapter.close();
    expect(fake.requests.length).toBeGreaterThan(0);
    expect(fake.envelopes).toEqual([]);
  });
});

describe('trace context from the API through the queue message to the worker', () => {
  const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));
  const children: ChildProcess[] = [];
  let fake: FakeAppInsights | null = null;
  let dataDir: string | null = null;

  afterAll(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await fake?.stop();
    if (dataDir !== null) await rm(dataDir, { recursive: true, force: true });
  });

  function run(script: string, env: Record<string, string>) {
    const child = spawn(process.execPath, [join(fixtures, script)], {
      env: {
        ...process.env,
        ...env,
        // The children trust the fake's self-signed certificate the way a deployment trusts a CA.
        NODE_EXTRA_CA_CERTS: testCertificate().certPath,
        APPLICATION_INSIGHTS_NO_STATSBEAT: 'true',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    // 'close', not 'exit': the output is complete by then.
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    return {
      child,
      exited,
      stdout: () => stdout,
      output: () => `stdout: ${stdout}\nstderr: ${stderr}`,
      /** The first JSON line on stdout. */
      firstLine: async (): Promise<unknown> => {
        const line = await new Promise<string>((resolve, reject) => {
          const check = () => {
            const end = stdout.indexOf('\n');
            if (end >= 0) resolve(stdout.slice(0, end));
          };
          child.stdout.on('data', check);
          void exited.then((code) => reject(new Error(`${script} exited with ${code} before printing\n${stderr}`)));
          check();
        });
        return JSON.parse(line) as unknown;
      },
    };
  }

  it('the API request, its events, the queued job and the worker run share one operation id; roles differ; no secret value is sent', async () => {
    fake = await startFakeAppInsights();
    dataDir = await mkdtemp(join(tmpdir(), 'zepid-appinsights-'));
    const token = `tok-${randomBytes(12).toString('hex')}`;
    const secret = `s3cr3t-${randomBytes(16).toString('hex')}`;
    const env = { APPLICATIONINSIGHTS_CONNECTION_STRING: fake.connectionString, DATA_DIR: dataDir };

    const api = run('telemetry-api.ts', { ...env, DEPLOY_API_TOKENS: `org_trace:${token}` });
    const { url } = (await api.firstLine()) as { url: string };
    const response = await fetch(`${url}/deploy`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        projectId: 'traced-site',
        organizationId: 'org_trace',
        userId: 'user_1',
        environment: 'staging',
        envVariables: { DATABASE_PASSWORD: secret },
        files: [{ path: 'index.html', content: '<h1>traced</h1>' }],
      }),
    });
    expect(response.status).toBe(202);
    const { deploymentId } = (await response.json()) as { deploymentId: string };
    api.child.kill('SIGTERM');
    expect(await api.exited, api.output()).toBe(0);

    const worker = run('telemetry-worker.ts', env);
    expect(await worker.exited, worker.output()).toBe(0);
    const message = JSON.parse(worker.stdout()) as { deploymentId: string; traceparent: string | null };
    expect(message.deploymentId).toBe(deploymentId);

    // Both processes flushed on close, so everything is already here.
    const [request] = fake.requestsTelemetry('POST /deploy');
    expect(request, 'request envelope of POST /deploy').toBeDefined();
    expect(request?.data.baseData.responseCode).toBe('202');
    const operationId = tag(request, 'ai.operation.id');
    expect(operationId).toMatch(/^[0-9a-f]{32}$/);
    const requestSpanId = String(request?.data.baseData.id);
    // The job message carries the request span itself.
    expect(message.traceparent).toBe(`00-${operationId}-${requestSpanId}-01`);

    const [queued] = fake.events('DeploymentQueued');
    const [processing] = fake.requestsTelemetry('ProcessDeployment');
    const [completed] = fake.events('DeploymentCompleted');
    const [step] = fake.metrics('StepDuration');
    expect(queued?.data.baseData.properties).toMatchObject({ deploymentId, orgId: 'org_trace', projectId: 'traced-site', environment: 'staging' });
    expect(completed?.data.baseData.properties).toMatchObject({ deploymentId, orgId: 'org_trace', projectId: 'traced-site' });

    // One operation: the API request, its event, the worker's run and the worker's event.
    for (const envelope of [request, queued, processing, completed]) expect(tag(envelope, 'ai.operation.id')).toBe(operationId);
    expect(tag(queued, 'ai.operation.parentId')).toBe(requestSpanId);
    expect(tag(queued, 'ai.operation.name')).toBe('POST /deploy');
    expect(tag(processing, 'ai.operation.parentId')).toBe(requestSpanId);
    expect(tag(completed, 'ai.operation.parentId')).toBe(processing?.data.baseData.id);

    // customMetrics are aggregates without an operation: they join the operation by deploymentId.
    expect(step).toMatchObject({ value: 1500, count: 1, properties: { deploymentId, step: 'build' } });
    expect(tag(step?.envelope, 'ai.cloud.role')).toBe('zepid-worker');

    expect(tag(request, 'ai.cloud.role')).toBe('zepid-api');
    expect(tag(queued, 'ai.cloud.role')).toBe('zepid-api');
    expect(tag(processing, 'ai.cloud.role')).toBe('zepid-worker');
    expect(tag(completed, 'ai.cloud.role')).toBe('zepid-worker');

    // The env value reached the API (the deployment was queued with it) but no telemetry.
    const sent = fake.rawBodies();
    expect(sent).toContain(deploymentId);
    expect(sent).not.toContain(secret);
    expect(sent).not.toContain(token);
    expect(fake.otherRequests).toEqual([]);
  });
});
