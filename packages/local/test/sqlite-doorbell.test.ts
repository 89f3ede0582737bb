import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JobMessage, JobQueue } from '@zepid/core';
import { newDeploymentId, publishOptionsFor } from '@zepid/core';
import { makeRecord, receiveWoken } from '@zepid/testkit';
import { afterEach, describe, expect, it } from 'vitest';
import { Doorbell, SqliteDatabase, SqliteIntake, SqliteJobQueue } from '../src/index.ts';

/**
 * The embedded queue's notification across connections and processes (the contract suite covers the
 * settlements): the API and the worker are separate processes on one SQLite file, and a waiting
 * worker must learn of a job without polling. Every queue here polls only every 10 minutes, so a
 * receive that is not notified is reported 'not woken' (see receiveWoken).
 */

const NO_POLL = 600_000;
const fixture = join(import.meta.dirname, 'fixtures', 'publish-job.ts');

const job = (): JobMessage => ({ deploymentId: newDeploymentId(), orgId: 'org_bell', attempt: 1, traceparent: null });
const idOf = (body: JobMessage) => `${body.deploymentId}:${body.attempt}`;

/** fs.watch handles keeping this process alive. */
const persistentWatchers = () => process.getActiveResourcesInfo().filter((resource) => resource === 'FSEventWrap').length;

function runToExit(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fixture, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`publisher exited ${String(code)}: ${stderr}`))));
  });
}

describe('SQLite queue notification', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function databasePath(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'zepid-doorbell-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    return join(dir, 'zepid.db');
  }

  async function openQueue(path: string, options: { doorbell?: Doorbell; fallbackPollMs?: number } = {}): Promise<SqliteJobQueue> {
    const queue = new SqliteJobQueue(new SqliteDatabase(path), { fallbackPollMs: NO_POLL, ...options });
    await queue.start();
    cleanups.push(() => queue.close());
    return queue;
  }

  async function completed(queue: JobQueue, received: Awaited<ReturnType<typeof receiveWoken>>): Promise<void> {
    if (typeof received === 'object' && received !== null) await queue.complete(received);
  }

  it('wakes a waiting receiver when another process publishes', async () => {
    const path = await databasePath();
    const queue = await openQueue(path);
    const body = job();
    const received = await receiveWoken(queue, () => runToExit([path, idOf(body), 'prj_child', JSON.stringify(body)]));
    expect(received).toMatchObject({ body, messageId: idOf(body), sessionId: 'prj_child' });
    await completed(queue, received);
  });

  it('wakes a waiting receiver when the intake of another connection submits a deployment', async () => {
    const path = await databasePath();
    const queue = await openQueue(path);
    const db = new SqliteDatabase(path);
    db.open();
    cleanups.push(() => Promise.resolve(db.close()));
    // As in the API process: the intake's own doorbell, i.e. the file beside the database.
    const intake = new SqliteIntake(db);
    const record = makeRecord({ orgId: 'org_bell', projectId: 'prj_intake' });
    const message: JobMessage = { deploymentId: record.id, orgId: record.orgId, attempt: 1, traceparent: null };
    const received = await receiveWoken(queue, async () => {
      await intake.submit(record, message, { maxActivePerOrg: 10 });
    });
    expect(received).toMatchObject({ body: message, messageId: publishOptionsFor(message, record.projectId).messageId });
    await completed(queue, received);
  });

  it('wakes a waiting receiver through a doorbell shared in the process, without a file', async () => {
    const path = await databasePath();
    const doorbell = new Doorbell(null);
    const [receiver, publisher] = [await openQueue(path, { doorbell }), await openQueue(path, { doorbell })];
    const body = job();
    const received = await receiveWoken(receiver, () => publisher.publish(body, { messageId: idOf(body), sessionId: 'prj_shared' }));
    expect(received).toMatchObject({ body });
    await completed(receiver, received);
  });

  it('finds a job on the fallback poll when no ring reaches the receiver', async () => {
    const path = await databasePath();
    // Two doorbells without a file: the publisher's ring reaches nobody, as on a filesystem that drops watch events.
    const receiver = await openQueue(path, { doorbell: new Doorbell(null), fallbackPollMs: 200 });
    const publisher = await openQueue(path, { doorbell: new Doorbell(null) });
    const body = job();
    const received = await receiveWoken(receiver, () => publisher.publish(body, { messageId: idOf(body), sessionId: 'prj_poll' }));
    expect(received).toMatchObject({ body });
    await completed(receiver, received);
  });

  it('ends a waiting receive on close() and leaves no file watcher behind', async () => {
    const path = await databasePath();
    const doorbell = Doorbell.beside(path);
    const queue = new SqliteJobQueue(new SqliteDatabase(path), { doorbell, fallbackPollMs: NO_POLL });
    await queue.start();
    const before = persistentWatchers();
    // Only close() can end this wait within the test's timeout.
    const waiting = queue.receive({ waitMs: NO_POLL });
    await new Promise((resolve) => setImmediate(resolve));
    expect(doorbell.watching).toBe(true);
    // The watcher never keeps a process alive by itself (a waiting receive's timer does, until close).
    expect(persistentWatchers()).toBe(before);
    await queue.close();
    expect(await waiting).toBeNull();
    expect(doorbell.watching).toBe(false);
  });
});
