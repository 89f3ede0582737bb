/**
 * The real worker (same wiring, consumer, workflow, steps, SQLite store and queue) with an instant
 * builder and runtime, for figures about the worker itself rather than about npm or app start-up:
 * queue pickup, deployments completed per second, store writes and CPU per deployment, memory in flight.
 *
 * BENCH_BUILD_DELAY_MS keeps each build busy that long (to hold deployments in flight).
 * On SIGTERM it writes its counters, its CPU time and its event-loop delay as JSON to BENCH_STATS_FILE.
 */
import { writeFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pino } from 'pino';
import type { DeploymentStore, JobQueue, WorkerAdapters } from '@zepid/core';
import { loadWorkerEnv } from '../../apps/worker/src/env.ts';
import { startWorker } from '../../apps/worker/src/worker.ts';
import { FakeBuilder, FakeRuntime } from '../../apps/worker/test/fakes.ts';

// No user commands run here, so there is nothing to isolate (and no work dirs to hand over).
const env = loadWorkerEnv({ ...process.env, LOCAL_BUILD_ISOLATION: 'none' });
const delayMs = Number(process.env.BENCH_BUILD_DELAY_MS ?? 0);
const counts = { storeCreates: 0, storeReplaces: 0, storeReads: 0, queueReceives: 0, queueSettles: 0, queueRenewals: 0 };

/** Counts the writes and reads the worker makes, passing every call through unchanged. */
function counting(adapters: WorkerAdapters): WorkerAdapters {
  const store: DeploymentStore = Object.create(adapters.store) as DeploymentStore;
  store.create = (record, options) => ((counts.storeCreates += 1), adapters.store.create(record, options));
  store.replace = (record) => ((counts.storeReplaces += 1), adapters.store.replace(record));
  store.get = (ref) => ((counts.storeReads += 1), adapters.store.get(ref));
  const queue: JobQueue = Object.create(adapters.queue) as JobQueue;
  queue.receive = async (options) => {
    const job = await adapters.queue.receive(options);
    if (job !== null) counts.queueReceives += 1;
    return job;
  };
  queue.complete = (job) => ((counts.queueSettles += 1), adapters.queue.complete(job));
  queue.abandon = (job, options) => ((counts.queueSettles += 1), adapters.queue.abandon(job, options));
  queue.renewLock = (job) => ((counts.queueRenewals += 1), adapters.queue.renewLock(job));
  const builder = new FakeBuilder();
  builder.calls.push = () => 0; // the fake's call log would grow without bound over a bench run
  if (delayMs > 0) builder.behaviour = { sandbox: 'ok', build: { delayMs } };
  const runtime = new FakeRuntime();
  runtime.calls.push = () => 0;
  return { ...adapters, store, queue, builder, runtime };
}

const logger = pino({ level: env.LOG_LEVEL, base: { service: 'worker' } });
const worker = await startWorker(env, logger, { adapters: counting });
// CPU from here on (module loading and start-up left out): a figure that a busy machine inflates far
// less than it inflates wall-clock rates, since another process's time on the core is not counted.
const cpuAtStart = process.cpuUsage();
// How long callbacks waited for the event loop (1 ms resolution): a job received while the loop is
// blocked (a synchronous wait for SQLite's write lock, a long write) starts that much later.
const loopDelay = monitorEventLoopDelay({ resolution: 1 });
loopDelay.enable();
process.on('SIGTERM', () => {
  const cpu = process.cpuUsage(cpuAtStart);
  void worker.stop().then(() => {
    loopDelay.disable();
    const loop = { loopDelayP99Ms: loopDelay.percentile(99) / 1e6, loopDelayMaxMs: loopDelay.max / 1e6 };
    if (process.env.BENCH_STATS_FILE !== undefined) writeFileSync(process.env.BENCH_STATS_FILE, JSON.stringify({ ...counts, cpuUserMs: cpu.user / 1000, cpuSystemMs: cpu.system / 1000, ...loop }));
    process.exit(0);
  });
});
