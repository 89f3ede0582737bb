import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import type { DeploymentRecord, DeploymentSpec, Environment, WorkerAdapters } from '@zepid/core';
import { appName, encodeSourceManifest, jobFor, newDeploymentId, newDeploymentRecord, sha256Hex, sourceDigest, systemClock } from '@zepid/core';
import { createLocalAdapters } from '@zepid/local';
import { AppDeletion } from '../src/app-deletion.ts';
import { Consumer } from '../src/consumer.ts';
import { ImageRetention } from '../src/retention.ts';
import { steps } from '../src/steps/index.ts';
import type { Step } from '../src/steps/step.ts';
import { Workflow } from '../src/workflow.ts';
import { FakeBuilder, FakeRuntime } from './fakes.ts';

export interface WorkerHarness {
  adapters: WorkerAdapters;
  builder: FakeBuilder;
  runtime: FakeRuntime;
  workflow: Workflow;
  appDeletion: AppDeletion;
  consumer: (concurrency?: number) => Consumer;
  /** Records a deployment with a static site source and queues its job, as the API would. */
  submit(options?: {
    projectId?: string;
    environment?: Environment;
    files?: Record<string, string>;
    env?: Record<string, string>;
    spec?: Partial<DeploymentSpec>;
    /** A rollback or config deployment, recorded as the API does (issue 12's contract): `of` is the target (rollback) or the live deployment (config). */
    kind?: { kind: 'rollback' | 'config'; of: DeploymentRecord };
    /** A redeploy (POST /deploy/:id/redeploy) of this deployment: a build that must not reuse an image. */
    redeployOf?: string;
  }): Promise<DeploymentRecord>;
  get(record: DeploymentRecord): Promise<DeploymentRecord>;
  /**
   * Waits until the workflow's after-completion work (image retention) for this completed deployment
   * has ended: the record shows `completed` before that work runs, so a test asserting on its result
   * must wait for it, not for the status.
   */
  afterCompleted(record: DeploymentRecord): Promise<void>;
  close(): Promise<void>;
}

/** Each step first waits `delayMs` (honouring its signal), so a test can act while any step runs. */
function slowed(delayMs: number): readonly Step[] {
  return steps.map((step) => ({
    ...step,
    name: step.name,
    async invoke(context) {
      await sleep(delayMs, undefined, { signal: context.signal });
      return step.invoke(context);
    },
  }));
}

export async function createWorkerHarness(
  options: { deploymentTimeoutMs?: number; maxDeliveryCount?: number; lockDurationMs?: number; stepDelayMs?: number; keepImagesPerApp?: number } = {},
): Promise<WorkerHarness> {
  const dataDir = await mkdtemp(join(tmpdir(), 'zepid-worker-'));
  const logger = pino({ level: 'silent' });
  const base = createLocalAdapters(dataDir, logger, { maxDeliveryCount: options.maxDeliveryCount ?? 5, lockDurationMs: options.lockDurationMs ?? 30_000 });
  const builder = new FakeBuilder();
  const runtime = new FakeRuntime();
  const adapters: WorkerAdapters = { ...base, builder, runtime };
  for (const adapter of [base.store, base.queue, base.artifacts, base.secrets]) await adapter.start();
  const retention = options.keepImagesPerApp === undefined ? null : new ImageRetention({ adapters, logger, keepPerApp: options.keepImagesPerApp });
  const afterCompletedDone = new Set<string>();
  const workflow = new Workflow({
    afterCompleted: async (record) => {
      try {
        await retention?.afterCompleted(record);
      } finally {
        afterCompletedDone.add(record.id);
      }
    },
    adapters,
    steps: options.stepDelayMs === undefined ? steps : slowed(options.stepDelayMs),
    settings: { deploymentTimeoutMs: options.deploymentTimeoutMs ?? 60_000 },
    logger,
    clock: systemClock,
    cancelPollMs: 20,
  });
  const consumers: Consumer[] = [];
  const appDeletion = new AppDeletion({ adapters, logger, clock: systemClock, busyRetryMs: 100, objectUploadWindowMs: 50 });
  return {
    adapters,
    builder,
    runtime,
    workflow,
    appDeletion,
    consumer: (concurrency = 5) => {
      const consumer = new Consumer({ queue: base.queue, store: base.store, workflow, appDeletion, telemetry: base.telemetry, logger, concurrency, shutdownGraceMs: 500 });
      consumers.push(consumer);
      return consumer;
    },
    async submit(submitOptions = {}) {
      const id = newDeploymentId();
      const projectId = submitOptions.projectId ?? submitOptions.kind?.of.projectId ?? 'site';
      const environment = submitOptions.environment ?? submitOptions.kind?.of.environment ?? 'development';
      const files = Object.entries(submitOptions.files ?? { 'index.html': '<h1>hi</h1>' }).map(([path, content]) => {
        const data = Buffer.from(content);
        return { path, data, sha256: sha256Hex(data), size: data.length };
      });
      const env = submitOptions.env ?? {};
      const operation = submitOptions.kind;
      // The API's rules: the image comes from the deployment that built it; the source summary and manifest are the target's.
      const imageOf = operation === undefined ? null : (operation.of.imageOf ?? (typeof operation.of.steps.build.output.reusedFrom === 'string' ? operation.of.steps.build.output.reusedFrom : operation.of.id));
      const created = newDeploymentRecord(
        {
          id,
          orgId: 'org_w',
          projectId,
          userId: 'u',
          projectName: null,
          environment,
          appName: appName('org_w', projectId, environment),
          spec: {
            customDomain: null,
            containerSize: null,
            envVariableNames: Object.keys(env),
            buildCommand: null,
            startCommand: null,
            port: null,
            historyMessageCount: 0,
            ...submitOptions.spec,
          },
          source: operation?.of.source ?? { digest: sourceDigest(files), fileCount: files.length, bytes: 1, storedFiles: files.length, storedBytes: 1 },
          idempotency: null,
        },
        new Date(),
      );
      const made: DeploymentRecord =
        operation === undefined ? created : { ...created, kind: operation.kind, rollbackOf: operation.kind === 'rollback' ? operation.of.id : null, imageOf };
      const record: DeploymentRecord = submitOptions.redeployOf === undefined ? made : { ...made, redeployOf: submitOptions.redeployOf };
      if (operation === undefined) {
        for (const file of files) await base.artifacts.putObject('org_w', file.sha256, file.data);
        const manifest = files.map(({ path, sha256, size }) => ({ path, sha256, size }));
        await base.artifacts.putSource({ orgId: 'org_w', deploymentId: id }, encodeSourceManifest({ files: manifest, historyMessages: [] }));
      } else {
        const manifest = await base.artifacts.getSource({ orgId: 'org_w', deploymentId: operation.of.id });
        if (manifest !== null) await base.artifacts.putSource({ orgId: 'org_w', deploymentId: id }, manifest);
      }
      await base.secrets.put(id, env);
      return base.intake.submit(record, jobFor(record, null), { maxActivePerOrg: 1000 });
    },
    async get(record) {
      const current = await base.store.get({ orgId: record.orgId, deploymentId: record.id });
      if (current === null) throw new Error('record vanished');
      return current;
    },
    async afterCompleted(record) {
      await eventually(async () => afterCompletedDone.has(record.id), (done) => done);
    },
    async close() {
      for (const consumer of consumers) await consumer.stop();
      for (const adapter of [base.secrets, base.artifacts, base.queue, base.store]) await adapter.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Polls until `check` passes or the time is up; for conditions the worker reaches asynchronously. */
export async function eventually<T>(check: () => Promise<T>, accept: (value: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const started = Date.now();
  for (;;) {
    const value = await check();
    if (accept(value)) return value;
    if (Date.now() - started > timeoutMs) throw new Error(`condition not reached within ${timeoutMs} ms; last value: ${JSON.stringify(value).slice(0, 500)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
