import { setTimeout as sleep } from 'node:timers/promises';
import type { JobMessage, JobQueue, QueuedJob } from '@zepid/core';
import { DeployError, newDeploymentId } from '@zepid/core';
import { afterEach, describe, expect, it } from 'vitest';

export interface QueueHarness {
  queue: JobQueue;
  /**
   * Another client of the same queue, started, on a connection of its own (as the API's publisher is
   * to the worker's receiver); `dispose` closes it.
   */
  openPeer(): Promise<JobQueue>;
  /** Closes everything the harness opened. */
  dispose(): Promise<void>;
}

/**
 * A harness from a way to open (and start) one more client of the same queue: the first is `queue`,
 * the others peers; `dispose` closes peers, then the queue, then runs `afterClose` (stop the broker,
 * remove files).
 */
export async function queueHarnessOf(open: () => Promise<JobQueue>, afterClose: () => Promise<void>): Promise<QueueHarness> {
  const queue = await open();
  const peers: JobQueue[] = [];
  return {
    queue,
    openPeer: async () => {
      const peer = await open();
      peers.push(peer);
      return peer;
    },
    dispose: async () => {
      for (const peer of peers) await peer.close();
      await queue.close();
      await afterClose();
    },
  };
}

/** How long the wake-up tests give a waiting receiver to be woken (far longer than it should take, far shorter than its own wait). */
export const WAKE_WAIT_MS = 30_000;

export interface QueueHarnessOptions {
  lockDurationMs: number;
  maxDeliveryCount: number;
  /**
   * The test needs a waiting receiver to be woken by notification alone: anything else the adapter does
   * that would find a job (a fallback poll, a long poll it asks again) must take longer than WAKE_WAIT_MS.
   */
  notificationOnly: boolean;
}

const job = (attempt = 1): JobMessage => ({ deploymentId: newDeploymentId(), orgId: 'org_q', attempt, traceparent: null });
const session = () => `s${Math.random().toString(36).slice(2, 12)}`;
const idOf = (body: JobMessage) => `${body.deploymentId}:${body.attempt}`;

/**
 * Starts a receive that would wait 10 minutes, does `act` while it waits, and returns what the receive
 * got, or 'not woken' when WAKE_WAIT_MS passed first (then the receive is aborted). A receiver that
 * only looks again at the end of its wait, or on a poll slower than WAKE_WAIT_MS, is 'not woken'.
 */
export async function receiveWoken(queue: JobQueue, act: () => Promise<void>): Promise<QueuedJob | null | 'not woken'> {
  const stop = new AbortController();
  const waiting = queue.receive({ waitMs: 600_000, signal: stop.signal });
  // Long enough for the receive to be waiting (at the broker, for a remote queue) before `act`.
  await sleep(200);
  await act();
  const timer = new AbortController();
  const outcome = await Promise.race([waiting, sleep(WAKE_WAIT_MS, 'not woken' as const, { signal: timer.signal }).catch(() => null)]);
  timer.abort();
  if (outcome !== 'not woken') return outcome;
  stop.abort();
  const late = await waiting;
  if (late !== null) await queue.abandon(late);
  return outcome;
}

/** A job that only time makes deliverable (a schedule, a back-off, a lock expiry): the receiver must wake for it by itself. */
async function receiveWhenDue(queue: JobQueue): Promise<QueuedJob> {
  const received = await receiveWoken(queue, () => Promise.resolve());
  if (received === null || received === 'not woken') throw new Error(`no job within ${WAKE_WAIT_MS} ms of its due time`);
  return received;
}

async function receiveOne(queue: JobQueue, waitMs = 5000): Promise<QueuedJob> {
  const received = await queue.receive({ waitMs });
  if (received === null) throw new Error(`no job within ${waitMs} ms`);
  return received;
}

/**
 * The behaviour every JobQueue adapter must have (Service Bus semantics). Each test gets a fresh
 * queue from the harness so counts start at zero.
 */
export function queueContract(name: string, createHarness: (options: QueueHarnessOptions) => Promise<QueueHarness>): void {
  describe(`JobQueue contract: ${name}`, () => {
    let harness: QueueHarness | null = null;
    const open = async (options: Partial<QueueHarnessOptions> = {}) => {
      harness = await createHarness({ lockDurationMs: 30_000, maxDeliveryCount: 3, notificationOnly: false, ...options });
      return harness.queue;
    };
    afterEach(async () => {
      await harness?.dispose();
      harness = null;
    });

    it('delivers a published job once, locked, and forgets it when completed', async () => {
      const queue = await open();
      const body = job();
      await queue.publish(body, { messageId: idOf(body), sessionId: session() });
      expect(await queue.counts()).toEqual({ active: 1, scheduled: 0, deadLettered: 0 });
      const received = await receiveOne(queue);
      expect(received.body).toEqual(body);
      expect(received.messageId).toBe(idOf(body));
      expect(received.deliveryCount).toBe(1);
      expect(received.lockedUntil.getTime()).toBeGreaterThan(Date.now());
      expect(await queue.receive({ waitMs: 200 })).toBeNull();
      await queue.complete(received);
      expect(await queue.counts()).toEqual({ active: 0, scheduled: 0, deadLettered: 0 });
    });

    it('drops a second publish with the same message id', async () => {
      const queue = await open();
      const body = job();
      const sessionId = session();
      await queue.publish(body, { messageId: idOf(body), sessionId });
      await queue.publish(body, { messageId: idOf(body), sessionId });
      const first = await receiveOne(queue);
      await queue.complete(first);
      // also after completion, within the duplicate-detection window
      await queue.publish(body, { messageId: idOf(body), sessionId });
      expect(await queue.receive({ waitMs: 300 })).toBeNull();
    });

    it('never delivers two jobs of one session at once, and keeps their order', async () => {
      const queue = await open();
      const project = session();
      const [a, b] = [job(), job()];
      const other = job();
      await queue.publish(a, { messageId: idOf(a), sessionId: project });
      await queue.publish(b, { messageId: idOf(b), sessionId: project });
      await queue.publish(other, { messageId: idOf(other), sessionId: session() });
      const first = await receiveOne(queue);
      const second = await receiveOne(queue);
      expect([first.body, second.body]).toEqual([a, other]);
      expect(await queue.receive({ waitMs: 300 })).toBeNull();
      await queue.complete(first);
      const third = await receiveOne(queue);
      expect(third.body).toEqual(b);
      await queue.complete(second);
      await queue.complete(third);
    });

    it('wakes a waiting receiver when a job arrives', async () => {
      const queue = await open({ notificationOnly: true });
      const body = job();
      const received = await receiveWoken(queue, () => queue.publish(body, { messageId: idOf(body), sessionId: session() }));
      expect(received).toMatchObject({ body });
      if (typeof received === 'object' && received !== null) await queue.complete(received);
    });

    // The API publishes and settles nothing in the worker's process: every change another client makes
    // that lets a job be delivered must reach a receiver that is already waiting.
    it('wakes a waiting receiver when another client publishes', async () => {
      const queue = await open({ notificationOnly: true });
      const peer = await harness!.openPeer();
      const body = job();
      const received = await receiveWoken(queue, () => peer.publish(body, { messageId: idOf(body), sessionId: session() }));
      expect(received).toMatchObject({ body });
      if (typeof received === 'object' && received !== null) await queue.complete(received);
    });

    for (const settlement of ['complete', 'deadLetter'] as const) {
      it(`wakes a receiver waiting for a busy project when another client settles its job (${settlement})`, async () => {
        // The lock outlasts the wake-up wait: its expiry must not be what wakes the receiver.
        const queue = await open({ notificationOnly: true, lockDurationMs: 4 * WAKE_WAIT_MS });
        const peer = await harness!.openPeer();
        const project = session();
        const [a, b] = [job(), job()];
        await peer.publish(a, { messageId: idOf(a), sessionId: project });
        await peer.publish(b, { messageId: idOf(b), sessionId: project });
        const first = await receiveOne(peer);
        expect(first.body).toEqual(a);
        const next = await receiveWoken(queue, () =>
          settlement === 'complete' ? peer.complete(first) : peer.deadLetter(first, { reason: 'MALFORMED_MESSAGE', description: 'test' }),
        );
        expect(next).toMatchObject({ body: b });
        if (typeof next === 'object' && next !== null) await queue.complete(next);
      });
    }

    it('wakes a waiting receiver when another client gives a job back', async () => {
      const queue = await open({ notificationOnly: true, lockDurationMs: 4 * WAKE_WAIT_MS });
      const peer = await harness!.openPeer();
      const body = job();
      await peer.publish(body, { messageId: idOf(body), sessionId: session() });
      const first = await receiveOne(peer);
      const again = await receiveWoken(queue, () => peer.abandon(first));
      expect(again).toMatchObject({ body, deliveryCount: 2 });
      if (typeof again === 'object' && again !== null) await queue.complete(again);
    });

    it('delivers a job another client schedules while a receiver waits, once it is due', async () => {
      const queue = await open({ notificationOnly: true });
      const peer = await harness!.openPeer();
      const body = job();
      const received = await receiveWoken(queue, async () => {
        await peer.publish(body, { messageId: idOf(body), sessionId: session(), delayMs: 1000 });
        expect(await peer.counts()).toMatchObject({ scheduled: 1 });
      });
      expect(received).toMatchObject({ body });
      if (typeof received === 'object' && received !== null) await queue.complete(received);
    });

    it('stops waiting when its signal is aborted', async () => {
      const queue = await open();
      const controller = new AbortController();
      const waiting = queue.receive({ waitMs: 20_000, signal: controller.signal });
      setTimeout(() => controller.abort(), 100);
      expect(await waiting).toBeNull();
    });

    it('redelivers an abandoned job with a higher delivery count, after its delay', async () => {
      const queue = await open({ notificationOnly: true });
      const body = job();
      await queue.publish(body, { messageId: idOf(body), sessionId: session() });
      const first = await receiveOne(queue);
      await queue.abandon(first, { delayMs: 1500 });
      expect(await queue.counts()).toMatchObject({ active: 0, scheduled: 1 });
      expect(await queue.receive({ waitMs: 300 })).toBeNull();
      const second = await receiveWhenDue(queue);
      expect(second.deliveryCount).toBe(2);
      expect(second.body).toEqual(body);
      await queue.complete(second);
    });

    it('holds a scheduled job until its time', async () => {
      const queue = await open({ notificationOnly: true });
      const body = job();
      await queue.publish(body, { messageId: idOf(body), sessionId: session(), delayMs: 1500 });
      expect(await queue.counts()).toMatchObject({ active: 0, scheduled: 1 });
      expect(await queue.receive({ waitMs: 300 })).toBeNull();
      const received = await receiveWhenDue(queue);
      expect(received.body).toEqual(body);
      await queue.complete(received);
    });

    it('dead-letters a job past the max delivery count, with the reason', async () => {
      const queue = await open({ maxDeliveryCount: 2 });
      const body = job();
      await queue.publish(body, { messageId: idOf(body), sessionId: session() });
      await queue.abandon(await receiveOne(queue));
      await queue.abandon(await receiveOne(queue));
      expect(await queue.receive({ waitMs: 300 })).toBeNull();
      expect(await queue.counts()).toEqual({ active: 0, scheduled: 0, deadLettered: 1 });
      const [dead] = await queue.listDeadLettered(10);
      expect(dead).toMatchObject({ messageId: idOf(body), reason: 'MaxDeliveryCountExceeded' });
    });

    it('dead-letters on request, keeping the reason and description', async () => {
      const queue = await open();
      const malformed = { nonsense: true } as unknown as JobMessage;
      await queue.publish(malformed, { messageId: 'poison-1', sessionId: session() });
      const received = await receiveOne(queue);
      expect(received.body).toEqual({ nonsense: true });
      await queue.deadLetter(received, { reason: 'MALFORMED_MESSAGE', description: 'body has no deploymentId' });
      expect(await queue.counts()).toMatchObject({ active: 0, deadLettered: 1 });
      expect((await queue.listDeadLettered(10))[0]).toMatchObject({
        messageId: 'poison-1',
        reason: 'MALFORMED_MESSAGE',
        description: 'body has no deploymentId',
      });
    });

    it('redelivers a job whose lock expired, and refuses settlement with the lost lock', async () => {
      const queue = await open({ notificationOnly: true, lockDurationMs: 1000 });
      const body = job();
      await queue.publish(body, { messageId: idOf(body), sessionId: session() });
      const first = await receiveOne(queue);
      const second = await receiveWhenDue(queue);
      expect(second.deliveryCount).toBe(2);
      await expect(queue.complete(first)).rejects.toBeInstanceOf(DeployError);
      await queue.complete(second);
      expect(await queue.counts()).toMatchObject({ active: 0, deadLettered: 0 });
    });

    it('keeps a job locked for as long as the lock is renewed', async () => {
      const queue = await open({ lockDurationMs: 1000 });
      const body = job();
      await queue.publish(body, { messageId: idOf(body), sessionId: session() });
      const received = await receiveOne(queue);
      for (let i = 0; i < 4; i += 1) {
        await sleep(400);
        await queue.renewLock(received);
      }
      expect(await queue.receive({ waitMs: 300 })).toBeNull();
      await queue.complete(received);
    });

    it('reports itself healthy', async () => {
      const queue = await open();
      expect((await queue.health()).status).toBe('healthy');
    });
  });
}
