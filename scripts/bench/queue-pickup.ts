/**
 * Queue pickup latency: publish → a waiting receiver has the job, one job at a time (the receiver is
 * always already waiting, as an idle worker is). For `npm run bench`, or on its own:
 * `node scripts/bench/queue-pickup.ts [jobs]`.
 *   - measureEmbeddedQueuePickup: the SQLite queue across two processes (the publisher is a child
 *     process, as the API is to the worker), default options (doorbell + 1 s fallback poll).
 *   - measureServiceBusQueuePickup: the Service Bus adapter against the testkit's AMQP fake on
 *     loopback, publisher and receiver on connections of their own, default options (5 s broker wait).
 *     Broker, publisher and receiver share this process's event loop.
 * Times are performance.timeOrigin + performance.now() (sub-millisecond, comparable across processes).
 */
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { ServiceBusJobQueue } from '@zepid/azure';
import type { JobQueue, QueuedJob } from '@zepid/core';
import { SqliteDatabase, SqliteJobQueue } from '@zepid/local';
import { startFakeServiceBus } from '@zepid/testkit/fakes/servicebus/index.ts';

export interface PickupFigures {
  jobs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

const clock = () => performance.timeOrigin + performance.now();
/** Longest one receive may wait in the bench; a job not picked up by then fails the run. */
const RECEIVE_WAIT_MS = 10_000;

function figures(samples: number[]): PickupFigures {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
  return { jobs: samples.length, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: sorted.at(-1) ?? Number.NaN };
}

function sentAtOf(job: QueuedJob): number {
  const sentAt = (job.body as { sentAt?: unknown }).sentAt;
  if (typeof sentAt !== 'number') throw new Error(`job ${job.messageId} carries no sentAt`);
  return sentAt;
}

async function received(waiting: Promise<QueuedJob | null>, n: number): Promise<QueuedJob> {
  const job = await waiting;
  if (job === null) throw new Error(`job ${n} was not picked up within ${RECEIVE_WAIT_MS} ms`);
  return job;
}

function nextMessage<T>(child: ChildProcess, accept: (message: unknown) => T | undefined): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: unknown) => {
      if (typeof message === 'object' && message !== null && 'failed' in message) {
        cleanup();
        reject(new Error(`publisher failed: ${String(message.failed)}`));
        return;
      }
      const value = accept(message);
      if (value !== undefined) {
        cleanup();
        resolve(value);
      }
    };
    const onExit = (code: number | null) => {
      cleanup();
      reject(new Error(`publisher exited (${String(code)})`));
    };
    const cleanup = () => {
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

/** The SQLite queue, publisher in a child process, receiver here. */
export async function measureEmbeddedQueuePickup(options: { jobs?: number } = {}): Promise<PickupFigures> {
  const jobs = options.jobs ?? 1000;
  const dir = await mkdtemp(join(tmpdir(), 'zepid-bench-queue-'));
  const path = join(dir, 'zepid.db');
  const receiver = new SqliteJobQueue(new SqliteDatabase(path));
  await receiver.start();
  const publisher = fork(fileURLToPath(new URL('queue-publisher.ts', import.meta.url)), [path], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  try {
    await nextMessage(publisher, (message) => ((message as { ready?: boolean }).ready === true ? true : undefined));
    const samples: number[] = [];
    for (let n = 0; n < jobs; n += 1) {
      const waiting = receiver.receive({ waitMs: RECEIVE_WAIT_MS });
      // Let the receive reach its wait before the job exists.
      await new Promise((resolve) => setImmediate(resolve));
      publisher.send({ publish: n });
      const job = await received(waiting, n);
      samples.push(clock() - sentAtOf(job));
      await receiver.complete(job);
    }
    return figures(samples);
  } finally {
    publisher.disconnect();
    await receiver.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** The Service Bus adapter over the AMQP fake: separate publisher and receiver connections. */
export async function measureServiceBusQueuePickup(options: { jobs?: number } = {}): Promise<PickupFigures> {
  const jobs = options.jobs ?? 1000;
  const queueName = 'deployment-queue';
  const settings = { lockDurationMs: 30_000, maxDeliveryCount: 3 };
  const fake = await startFakeServiceBus({ queues: [{ name: queueName, ...settings }] });
  const open = async () => {
    const queue = new ServiceBusJobQueue({ connectionString: fake.connectionString(), queueName, ...settings });
    await queue.start();
    return queue;
  };
  const receiver: JobQueue = await open();
  const publisher: JobQueue = await open();
  try {
    const samples: number[] = [];
    for (let n = 0; n < jobs; n += 1) {
      const waiting = receiver.receive({ waitMs: RECEIVE_WAIT_MS });
      // Publish once the receiver's accept is waiting at the broker (an idle worker's state).
      for (let i = 0; i < 1000 && fake.stats().waitingAccepts === 0; i += 1) await sleep(1);
      const sentAt = clock();
      const body = { deploymentId: `dep_bench${String(n).padStart(20, '0')}`, orgId: 'org_bench', attempt: 1, traceparent: null, sentAt };
      await publisher.publish(body, { messageId: `bench-${n}`, sessionId: `prj_bench_${n % 16}` });
      const job = await received(waiting, n);
      samples.push(clock() - sentAtOf(job));
      await receiver.complete(job);
    }
    return figures(samples);
  } finally {
    await publisher.close();
    await receiver.close();
    await fake.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const jobs = Number(process.argv[2] ?? 1000);
  const show = (name: string, result: PickupFigures) =>
    console.log(`${name}: ${result.jobs} jobs, publish → received p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms, max ${result.maxMs.toFixed(2)} ms`);
  show('embedded (SQLite, two processes)', await measureEmbeddedQueuePickup({ jobs }));
  show('Service Bus (AMQP fake)', await measureServiceBusQueuePickup({ jobs }));
}
