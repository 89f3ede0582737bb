import { createServer } from 'node:http';
import { hostname } from 'node:os';
import type { Logger, WorkerAdapters } from '@zepid/core';
import { systemClock, webhookPolicyOf } from '@zepid/core';
import { AppDeletion } from './app-deletion.ts';
import { Consumer } from './consumer.ts';
import type { WorkerEnv } from './env.ts';
import { Maintenance } from './maintenance.ts';
import { ImageRetention } from './retention.ts';
import { steps as defaultSteps } from './steps/index.ts';
import type { Step } from './steps/step.ts';
import { closeAll, createWorkerAdapters, startAll } from './wiring.ts';
import { WebhookDispatcher } from './webhooks/dispatcher.ts';
import { Workflow } from './workflow.ts';

export interface RunningWorker {
  /** Takes no new jobs; finishes or releases running deployments; closes everything. */
  stop(): Promise<void>;
}

/**
 * Starts a worker from validated config: reaps what a killed predecessor left running, starts the
 * adapters, consumes jobs and keeps up maintenance. main.ts calls it with the six steps; tests may
 * pass wrapped steps (to slow them down, for instance) and the bench may wrap the adapters (an
 * instant builder, a store that counts writes), and get the very same worker otherwise.
 */
export async function startWorker(
  env: WorkerEnv,
  logger: Logger,
  options: { steps?: readonly Step[]; adapters?: (created: WorkerAdapters) => WorkerAdapters } = {},
): Promise<RunningWorker> {
  const workerId = `${hostname()}-${process.pid}`;
  const wiring = await createWorkerAdapters(env, logger);
  const { processes, isolation, traversable } = wiring;
  const adapters = options.adapters?.(wiring.adapters) ?? wiring.adapters;
  const reaped = processes?.reapLeftovers() ?? [];
  if (reaped.length > 0) {
    logger.warn({ reaped: reaped.map((group) => ({ pid: group.pid, deploymentId: group.deploymentId, purpose: group.purpose })) }, 'killed processes a previous worker left running');
  }
  await startAll(adapters);
  if (isolation !== null) {
    await isolation.traversable(traversable);
    logger.info(
      { isolation: isolation.mode, privateProc: isolation.privateProc, limits: isolation.limits },
      isolation.mode === 'uid'
        ? `each app's build and start commands run as its own uid from ${env.LOCAL_UID_RANGE}${isolation.privateProc ? ', with a /proc showing only its own processes' : ''}`
        : "build and start commands run as the worker's own user: no isolation between tenants",
    );
  }

  const settings = { deploymentTimeoutMs: env.DEPLOYMENT_TIMEOUT_MS };
  const retention = new ImageRetention({ adapters, logger, keepPerApp: env.KEEP_IMAGES_PER_APP });
  const workflow = new Workflow({ adapters, steps: options.steps ?? defaultSteps, settings, logger, clock: systemClock, afterCompleted: (record) => retention.afterCompleted(record) });
  const appDeletion = new AppDeletion({ adapters, logger, clock: systemClock, releaseTenant: wiring.releaseTenant, objectUploadWindowMs: env.OBJECT_UPLOAD_WINDOW_MS });
  const consumer = new Consumer({
    queue: adapters.queue,
    store: adapters.store,
    workflow,
    appDeletion,
    telemetry: adapters.telemetry,
    logger,
    concurrency: env.MAX_CONCURRENT_DEPLOYMENTS,
    shutdownGraceMs: env.SHUTDOWN_GRACE_MS,
  });
  const maintenance = new Maintenance({
    store: adapters.store,
    queue: adapters.queue,
    workflow,
    retention,
    logger,
    workerId,
    capacity: env.MAX_CONCURRENT_DEPLOYMENTS,
    running: () => consumer.running,
    deploymentTimeoutMs: env.DEPLOYMENT_TIMEOUT_MS,
  });

  // Webhooks: fans status events out of deployment records' outboxes and sends them, signed.
  const dispatcher = new WebhookDispatcher({
    store: adapters.store,
    webhooks: adapters.webhooks,
    secrets: adapters.secrets,
    changes: adapters.changes,
    logger,
    policy: webhookPolicyOf(env),
    telemetry: adapters.telemetry,
  });

  const health =
    env.HEALTH_PORT === undefined
      ? null
      : createServer((request, response) => {
          const ok = request.url === '/health/live' || request.url === '/health/ready';
          response.writeHead(ok ? 200 : 404, { 'content-type': 'application/json' }).end(JSON.stringify(ok ? { status: 'ok', running: consumer.running } : { error: 'NOT_FOUND' }));
        });
  health?.listen(env.HEALTH_PORT, '0.0.0.0');

  consumer.start();
  maintenance.start();
  dispatcher.start();
  logger.info(
    { workerId, mode: env.DEPLOY_MODE, concurrency: env.MAX_CONCURRENT_DEPLOYMENTS, router: env.DEPLOY_MODE === 'local' ? `http://${env.LOCAL_ROUTER_HOST}:${env.LOCAL_ROUTER_PORT}` : undefined },
    'worker started',
  );

  return {
    async stop() {
      await consumer.stop();
      await maintenance.stop();
      await dispatcher.stop();
      health?.close();
      await closeAll(adapters);
      isolation?.close();
    },
  };
}
