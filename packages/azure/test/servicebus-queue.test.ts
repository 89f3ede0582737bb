import { setTimeout as sleep } from 'node:timers/promises';
import type { TokenCredential } from '@azure/identity';
import type { JobMessage, JobQueue, QueuedJob } from '@zepid/core';
import { DeployError, newDeploymentId } from '@zepid/core';
import { queueContract, queueHarnessOf, trustTestCertificate } from '@zepid/testkit';
import type { FakeServiceBus } from '@zepid/testkit/fakes/servicebus/index.ts';
import { startFakeServiceBus } from '@zepid/testkit/fakes/servicebus/index.ts';
import { afterEach, describe, expect, it } from 'vitest';
import type { ServiceBusJobQueueOptions } from '../src/servicebus/queue.ts';
import { ServiceBusJobQueue } from '../src/servicebus/queue.ts';

// The administration client (queue counts) and AMQPS talk TLS to the fake's self-signed certificate.
trustTestCertificate();

const QUEUE = 'deployment-queue';

/** Waits (bounded) until the broker holds nothing for any client: no connection, session or waiting accept. */
async function expectNothingOpenAt(fake: FakeServiceBus): Promise<void> {
  const idle = { connections: 0, sessionReceivers: 0, waitingAccepts: 0 };
  for (let i = 0; i < 100 && JSON.stringify(fake.stats()) !== JSON.stringify(idle); i += 1) await sleep(50);
  expect(fake.stats()).toEqual(idle);
}

queueContract('Service Bus (AMQP fake)', async (options) => {
  const { notificationOnly, ...settings } = options;
  const fake = await startFakeServiceBus({ queues: [{ name: QUEUE, ...settings }] });
  // Notification only: each accept waits at the broker for a minute (about the service's most), so a
  // receiver learns of a job when the broker answers its waiting accept, not by asking again. Otherwise
  // a short long-poll keeps the suite quick: close() waits for at most one accept in flight.
  const sessionWaitMs = notificationOnly ? 60_000 : 1000;
  const open = async () => {
    const queue = new ServiceBusJobQueue({ connectionString: fake.connectionString(), queueName: QUEUE, sessionWaitMs, ...settings });
    await queue.start();
    return queue;
  };
  return queueHarnessOf(open, async () => {
    // close() ends every link and session it opened, including accepts still waiting at the broker.
    await expectNothingOpenAt(fake);
    await fake.stop();
  });
});

const job = (attempt = 1): JobMessage => ({ deploymentId: newDeploymentId(), orgId: 'org_sb', attempt, traceparent: null });
const idOf = (body: JobMessage) => `${body.deploymentId}:${body.attempt}`;
const project = () => `prj_${Math.random().toString(36).slice(2, 10)}`;

async function receiveOne(queue: JobQueue, waitMs = 10_000): Promise<QueuedJob> {
  const received = await queue.receive({ waitMs });
  if (received === null) throw new Error(`no job within ${waitMs} ms`);
  return received;
}

describe('ServiceBusJobQueue beyond the contract', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function broker(options: Parameters<typeof startFakeServiceBus>[0] = {}): Promise<FakeServiceBus> {
    const fake = await startFakeServiceBus({ queues: [{ name: QUEUE, lockDurationMs: 30_000, maxDeliveryCount: 3 }], ...options });
    cleanups.push(() => fake.stop());
    return fake;
  }

  async function openQueue(options: ServiceBusJobQueueOptions): Promise<ServiceBusJobQueue> {
    const queue = new ServiceBusJobQueue(options);
    await queue.start();
    cleanups.push(() => queue.close());
    return queue;
  }

  const connected = (fake: FakeServiceBus, extra: Partial<ServiceBusJobQueueOptions> = {}) =>
    openQueue({ connectionString: fake.connectionString(), queueName: QUEUE, lockDurationMs: 30_000, maxDeliveryCount: 3, sessionWaitMs: 1000, ...extra });

  it('shows dead-lettered poison messages in the counts and lists them newest first, with their reasons', async () => {
    const queue = await connected(await broker());
    const sessionId = project();
    await queue.publish({ nonsense: 1 } as unknown as JobMessage, { messageId: 'poison-1', sessionId });
    await queue.publish({ nonsense: 2 } as unknown as JobMessage, { messageId: 'poison-2', sessionId });
    await queue.deadLetter(await receiveOne(queue), { reason: 'MALFORMED_MESSAGE', description: 'body has no deploymentId' });
    await queue.deadLetter(await receiveOne(queue), { reason: 'UNKNOWN_DEPLOYMENT', description: 'no deployment with this id' });
    expect(await queue.counts()).toEqual({ active: 0, scheduled: 0, deadLettered: 2 });
    const listed = await queue.listDeadLettered(10);
    expect(listed).toMatchObject([
      { messageId: 'poison-2', reason: 'UNKNOWN_DEPLOYMENT', description: 'no deployment with this id' },
      { messageId: 'poison-1', reason: 'MALFORMED_MESSAGE', description: 'body has no deploymentId' },
    ]);
    expect(Number.isNaN(Date.parse(listed[0]!.deadLetteredAt))).toBe(false);
    expect((await queue.listDeadLettered(1)).map((dead) => dead.messageId)).toEqual(['poison-2']);
    // listing twice reads from the start again (the SDK's peek cursor is per connection)
    expect(await queue.listDeadLettered(10)).toHaveLength(2);
  });

  it('lets a later job of the project run while one backs off, and holds the retry until that job is settled', async () => {
    const queue = await connected(await broker());
    const sessionId = project();
    const [first, second] = [job(), job()];
    await queue.publish(first, { messageId: idOf(first), sessionId });
    await queue.publish(second, { messageId: idOf(second), sessionId });
    const firstDelivery = await receiveOne(queue);
    expect(firstDelivery.body).toEqual(first);
    await queue.abandon(firstDelivery, { delayMs: 1000 });
    // The session is free during the back-off: the project's next job runs.
    const secondDelivery = await receiveOne(queue);
    expect(secondDelivery.body).toEqual(second);
    // Once the back-off is over the retry is due (active), but the project is locked by the second job.
    for (let i = 0; i < 100 && (await queue.counts()).scheduled > 0; i += 1) await sleep(50);
    expect(await queue.counts()).toEqual({ active: 2, scheduled: 0, deadLettered: 0 });
    expect(await queue.receive({ waitMs: 500 })).toBeNull();
    await queue.complete(secondDelivery);
    const retry = await receiveOne(queue);
    expect(retry).toMatchObject({ body: first, messageId: idOf(first), sessionId, deliveryCount: 2 });
    expect(retry.enqueuedAt).toEqual(firstDelivery.enqueuedAt);
    await queue.complete(retry);
    expect(await queue.counts()).toEqual({ active: 0, scheduled: 0, deadLettered: 0 });
  });

  it('counts deliveries across back-off copies and dead-letters at the max delivery count', async () => {
    const fake = await broker({ queues: [{ name: QUEUE, lockDurationMs: 30_000, maxDeliveryCount: 2 }] });
    const queue = await connected(fake, { maxDeliveryCount: 2 });
    const body = job();
    await queue.publish(body, { messageId: idOf(body), sessionId: project() });
    await queue.abandon(await receiveOne(queue), { delayMs: 200 });
    const second = await receiveOne(queue);
    expect(second.deliveryCount).toBe(2);
    await queue.abandon(second, { delayMs: 200 });
    expect(await queue.receive({ waitMs: 600 })).toBeNull();
    expect(await queue.counts()).toEqual({ active: 0, scheduled: 0, deadLettered: 1 });
    expect(await queue.listDeadLettered(5)).toMatchObject([{ messageId: idOf(body), reason: 'MaxDeliveryCountExceeded' }]);
  });

  it('dead-letters a back-off copy whose lock expired on its last allowed delivery', async () => {
    const fake = await broker({ queues: [{ name: QUEUE, lockDurationMs: 1000, maxDeliveryCount: 2 }] });
    const queue = await connected(fake, { lockDurationMs: 1000, maxDeliveryCount: 2 });
    const body = job();
    await queue.publish(body, { messageId: idOf(body), sessionId: project() });
    await queue.abandon(await receiveOne(queue), { delayMs: 100 });
    const last = await receiveOne(queue);
    expect(last.deliveryCount).toBe(2);
    // The worker holding it stops renewing (a crash): after the lock expires it is not run a third time.
    expect(await queue.receive({ waitMs: 3000 })).toBeNull();
    expect(await queue.counts()).toEqual({ active: 0, scheduled: 0, deadLettered: 1 });
    expect(await queue.listDeadLettered(5)).toMatchObject([{ messageId: idOf(body), reason: 'MaxDeliveryCountExceeded' }]);
    await expect(queue.complete(last)).rejects.toMatchObject({ code: 'CONCURRENT_UPDATE' });
  });

  it('stops renewing a lock once the job was held for the deployment timeout', async () => {
    const queue = await connected(await broker(), { maxLockRenewalMs: 300 });
    const body = job();
    await queue.publish(body, { messageId: idOf(body), sessionId: project() });
    const received = await receiveOne(queue);
    await queue.renewLock(received);
    await sleep(400);
    await expect(queue.renewLock(received)).rejects.toMatchObject({ code: 'TIMEOUT' });
    await queue.complete(received);
  });

  it('ends a waiting receive when closed, and leaves nothing open at the broker', async () => {
    const fake = await broker();
    const queue = new ServiceBusJobQueue({ connectionString: fake.connectionString(), queueName: QUEUE, lockDurationMs: 30_000, maxDeliveryCount: 3 });
    await queue.start();
    // Far longer than this test may take (see its timeout): only close() can end this wait.
    const waiting = queue.receive({ waitMs: 600_000 });
    for (let i = 0; i < 100 && fake.stats().waitingAccepts === 0; i += 1) await sleep(20);
    expect(fake.stats().waitingAccepts).toBe(1);
    // The receive ends as soon as close() starts; close() itself waits for the session poll in flight.
    const closing = queue.close();
    expect(await waiting).toBeNull();
    await closing;
    expect(await queue.receive({ waitMs: 1000 })).toBeNull();
    await expectNothingOpenAt(fake);
  }, 20_000);

  it('releases a session it locked after its receive gave up, so another worker gets the job', async () => {
    const fake = await broker();
    const idle = await connected(fake);
    const busy = await connected(fake);
    // This receive gives up while its accept still waits (or is about to wait) at the broker.
    expect(await idle.receive({ waitMs: 100 })).toBeNull();
    for (let i = 0; i < 100 && fake.stats().waitingAccepts === 0; i += 1) await sleep(20);
    expect(fake.stats().waitingAccepts).toBe(1);
    const other = busy.receive({ waitMs: 10_000 });
    await sleep(100);
    const body = job();
    await busy.publish(body, { messageId: idOf(body), sessionId: project() });
    const received = await other;
    expect(received?.body).toEqual(body);
    // Only the worker that asked holds the project.
    expect(fake.stats().sessionReceivers).toBe(1);
    if (received) await busy.complete(received);
  });

  it('never lets two workers hold jobs of one project at once', async () => {
    const fake = await broker();
    const [one, two] = [await connected(fake), await connected(fake)];
    const sessionId = project();
    const [a, b] = [job(), job()];
    await one.publish(a, { messageId: idOf(a), sessionId });
    await one.publish(b, { messageId: idOf(b), sessionId });
    const first = await receiveOne(one);
    expect(first.body).toEqual(a);
    expect(await two.receive({ waitMs: 500 })).toBeNull();
    const waiting = two.receive({ waitMs: 10_000 });
    await one.complete(first);
    expect((await waiting)?.body).toEqual(b);
  });

  it('refuses a wrong shared access key with a clear error that does not contain the key', async () => {
    const fake = await broker();
    const wrongKey = 'not-the-key-0123456789';
    const queue = await openQueue({
      connectionString: fake.connectionString('RootManageSharedAccessKey', wrongKey),
      queueName: QUEUE,
      lockDurationMs: 30_000,
      maxDeliveryCount: 3,
    });
    const body = job();
    const failure = await queue.publish(body, { messageId: idOf(body), sessionId: project() }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(DeployError);
    expect(failure).toMatchObject({ code: 'DEPENDENCY_UNAVAILABLE', retryable: false });
    expect((failure as DeployError).message).toMatch(/refused the credentials/);
    expect((failure as DeployError).message).not.toContain(wrongKey);
    await expect(queue.receive({ waitMs: 2000 })).rejects.toMatchObject({ code: 'DEPENDENCY_UNAVAILABLE', retryable: false });
    await expect(queue.counts()).rejects.toMatchObject({ code: 'DEPENDENCY_UNAVAILABLE', retryable: false });
    const health = await queue.health();
    expect(health.status).toBe('unhealthy');
    expect(health.detail).toMatch(/refused the credentials/);
    expect(health.detail).not.toContain(wrongKey);
  });

  it('runs on a namespace with a token credential (AMQP over TLS, bearer-authorized counts) and refuses an unknown token', async () => {
    const fake = await broker({ acceptedTokens: ['token-of-the-worker-identity'] });
    const credentialFor = (token: string): TokenCredential => ({
      getToken: () => Promise.resolve({ token, expiresOnTimestamp: Date.now() + 3600_000 }),
    });
    const options = { fullyQualifiedNamespace: fake.fullyQualifiedNamespace, queueName: QUEUE, lockDurationMs: 30_000, maxDeliveryCount: 3 };
    const queue = await openQueue({ ...options, credential: credentialFor('token-of-the-worker-identity') });
    expect((await queue.health()).status).toBe('healthy');
    const body = job();
    await queue.publish(body, { messageId: idOf(body), sessionId: project() });
    expect(await queue.counts()).toEqual({ active: 1, scheduled: 0, deadLettered: 0 });
    const received = await receiveOne(queue);
    expect(received.body).toEqual(body);
    await queue.complete(received);

    const stranger = await openQueue({ ...options, credential: credentialFor('someone-else') });
    await expect(stranger.publish(body, { messageId: 'x', sessionId: project() })).rejects.toMatchObject({
      code: 'DEPENDENCY_UNAVAILABLE',
      retryable: false,
      message: expect.stringMatching(/refused the credentials/) as unknown,
    });
    await expect(stranger.counts()).rejects.toMatchObject({ code: 'DEPENDENCY_UNAVAILABLE', retryable: false });
  });
});
