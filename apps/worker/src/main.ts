/**
 * The worker process: parse config, reap what a killed predecessor left running, start adapters,
 * consume jobs, keep up maintenance, stop cleanly on SIGTERM (no new jobs; finish or release).
 */
import { createServer } from 'node:http';
import { hostname } from 'node:os';
import { pino } from 'pino';
import { ConfigError, LOG_REDACT_PATHS, systemClock } from '@zepid/core';
import { Consumer } from './consumer.ts';
import type { WorkerEnv } from './env.ts';
import { loadWorkerEnv } from './env.ts';
import { Maintenance } from './maintenance.ts';
import { steps } from './steps/index.ts';
import { closeAll, createWorkerAdapters, startAll } from './wiring.ts';
import { Workflow } from './workflow.ts';

async function main(): Promise<void> {
  let env: WorkerEnv;
  try {
    env = loadWorkerEnv(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`worker: ${error.message}`);
      process.exit(78);
    }
    throw error;
  }
  const logger = pino({ level: env.LOG_LEVEL, base: { service: 'worker' }, redact: { paths: LOG_REDACT_PATHS, censor: '[redacted]' } });
  const workerId = `${hostname()}-${process.pid}`;
  // Everything the worker creates is owner-only: a build running as another user reads none of it.
  process.umask(0o077);
  const { adapters, processes, isolation, traversable } = createWorkerAdapters(env, logger);
  const reaped = processes?.reapLeftovers() ?? [];
  if (reaped.length > 0) logger.warn({ reaped: reaped.map((group) => ({ pid: group.pid, deploymentId: group.deploymentId, purpose: group.purpose })) }, 'killed processes a previous worker left running');
  await startAll(adapters);
  if (isolation !== null) {
    await isolation.traversable(traversable);
    logger.info({ isolation: isolation.mode }, isolation.mode === 'uid' ? `build and start commands run as ${env.LOCAL_BUILD_USER}` : 'build and start commands run as the worker\'s own user');
  }

  const settings = { deploymentTimeoutMs: env.DEPLOYMENT_TIMEOUT_MS };
  const workflow = new Workflow({ adapters, steps, settings, logger, clock: systemClock });
  const consumer = new Consumer({
    queue: adapters.queue,
    store: adapters.store,
    workflow,
    telemetry: adapters.telemetry,
    logger,
    concurrency: env.MAX_CONCURRENT_DEPLOYMENTS,
    shutdownGraceMs: env.SHUTDOWN_GRACE_MS,
  });
  const maintenance = new Maintenance({
    store: adapters.store,
    queue: adapters.queue,
    workflow,
    logger,
    workerId,
    capacity: env.MAX_CONCURRENT_DEPLOYMENTS,
    running: () => consumer.running,
    deploymentTimeoutMs: env.DEPLOYMENT_TIMEOUT_MS,
  });

  const health = env.HEALTH_PORT === undefined ? null : createServer((request, response) => {
    const ok = request.url === '/health/live' || request.url === '/health/ready';
    response.writeHead(ok ? 200 : 404, { 'content-type': 'application/json' }).end(JSON.stringify(ok ? { status: 'ok', running: consumer.running } : { error: 'NOT_FOUND' }));
  });
  health?.listen(env.HEALTH_PORT, '0.0.0.0');

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, running: consumer.running }, 'stopping: no new jobs; finishing or releasing running deployments');
    const force = setTimeout(() => process.exit(1), env.SHUTDOWN_GRACE_MS + 15_000);
    force.unref();
    void (async () => {
      await consumer.stop();
      await maintenance.stop();
      health?.close();
      await closeAll(adapters);
      process.exit(0);
    })();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  consumer.start();
  maintenance.start();
  logger.info({ workerId, mode: env.DEPLOY_MODE, concurrency: env.MAX_CONCURRENT_DEPLOYMENTS, router: env.DEPLOY_MODE === 'local' ? `http://${env.LOCAL_ROUTER_HOST}:${env.LOCAL_ROUTER_PORT}` : undefined }, 'worker started');
}

await main();
