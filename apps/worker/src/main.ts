/**
 * The worker process: parse config, start the worker (worker.ts), stop cleanly on SIGTERM
 * (no new jobs; running deployments finish within the grace or are released).
 */
import { pino } from 'pino';
import { ConfigError, LOG_REDACT_PATHS } from '@zepid/core';
import type { WorkerEnv } from './env.ts';
import { loadWorkerEnv } from './env.ts';
import { startWorker } from './worker.ts';

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
  // Everything the worker creates is owner-only: a build running as another user reads none of it.
  process.umask(0o077);
  const logger = pino({ level: env.LOG_LEVEL, base: { service: 'worker' }, redact: { paths: LOG_REDACT_PATHS, censor: '[redacted]' } });
  const worker = await startWorker(env, logger);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping: no new jobs; finishing or releasing running deployments');
    const force = setTimeout(() => process.exit(1), env.SHUTDOWN_GRACE_MS + 15_000);
    force.unref();
    void worker.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

await main();
