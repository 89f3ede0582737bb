import { setTimeout as sleep } from 'node:timers/promises';
import { ServiceBusAdministrationClient, ServiceBusClient } from '@azure/service-bus';
import type { ServiceBusReceivedMessage, ServiceBusSessionReceiver } from '@azure/service-bus';
import { trustTestCertificate } from '@zepid/testkit';
import { startFakeServiceBus } from '@zepid/testkit/fakes/servicebus/index.ts';
import { afterEach, describe, expect, it } from 'vitest';

/**
 * The fake Service Bus itself, driven by the plain @azure/service-bus SDK: the behaviour the adapter
 * relies on must be the service's, not something only the adapter happens to expect.
 */

trustTestCertificate();

describe('fake Service Bus (driven by the real SDK)', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function start(queue: { lockDurationMs?: number; maxDeliveryCount?: number; duplicateDetectionWindowMs?: number } = {}) {
    const fake = await startFakeServiceBus({ queues: [{ name: 'jobs', lockDurationMs: 30_000, maxDeliveryCount: 3, ...queue }] });
    const client = new ServiceBusClient(fake.connectionString(), { retryOptions: { maxRetries: 0, timeoutInMs: 1000 } });
    cleanups.push(() => fake.stop(), () => client.close());
    return { fake, client, sender: client.createSender('jobs') };
  }

  /** One accept: the broker holds it up to the client's operation timeout (1 s here). */
  const nextSession = (client: ServiceBusClient) => client.acceptNextSession('jobs', { maxAutoLockRenewalDurationInMs: 0 });

  /** Accepts the next session, asking again after empty polls (bounded). */
  async function acceptWithin(client: ServiceBusClient, polls = 5): Promise<ServiceBusSessionReceiver> {
    for (let poll = 1; ; poll += 1) {
      try {
        return await nextSession(client);
      } catch (error) {
        if (poll >= polls || (error as { code?: string }).code !== 'ServiceTimeout') throw error;
      }
    }
  }

  async function receiveFrom(client: ServiceBusClient): Promise<{ message: ServiceBusReceivedMessage; settle: (how: 'complete' | 'abandon') => Promise<void> }> {
    const receiver = await acceptWithin(client);
    const [message] = await receiver.receiveMessages(1, { maxWaitTimeInMs: 2000 });
    if (message === undefined) throw new Error('no message in the session');
    return {
      message,
      settle: async (how) => {
        await (how === 'complete' ? receiver.completeMessage(message) : receiver.abandonMessage(message));
        await receiver.close();
      },
    };
  }

  it('locks a session for one receiver, counts deliveries, and dead-letters past the max delivery count', async () => {
    const { client, sender } = await start({ maxDeliveryCount: 2 });
    await sender.sendMessages({ body: { n: 1 }, messageId: 'm-1', sessionId: 'project-a' });
    const first = await receiveFrom(client);
    // The SDK passes on the AMQP delivery count: deliveries before this one.
    expect(first.message).toMatchObject({ body: { n: 1 }, messageId: 'm-1', sessionId: 'project-a', deliveryCount: 0 });
    await expect(client.acceptSession('jobs', 'project-a')).rejects.toMatchObject({ code: 'SessionCannotBeLocked' });
    await first.settle('abandon');
    const second = await receiveFrom(client);
    expect(second.message.deliveryCount).toBe(1);
    await second.settle('abandon');
    await expect(nextSession(client)).rejects.toMatchObject({ code: 'ServiceTimeout' });
    const [dead] = await client.createReceiver('jobs', { subQueueType: 'deadLetter' }).peekMessages(10);
    expect(dead).toMatchObject({ messageId: 'm-1', deadLetterReason: 'MaxDeliveryCountExceeded', deadLetterSource: 'jobs' });
  });

  it('answers a waiting accept as soon as a session can be locked, not when the client asks again', async () => {
    // Each accept may wait 30 s and the fake's periodic sweep is off: only the change itself can answer it.
    const fake = await startFakeServiceBus({ queues: [{ name: 'jobs', lockDurationMs: 30_000, maxDeliveryCount: 3 }], sweepIntervalMs: 600_000 });
    const client = new ServiceBusClient(fake.connectionString(), { retryOptions: { maxRetries: 0, timeoutInMs: 30_000 } });
    cleanups.push(() => fake.stop(), () => client.close());
    const sender = client.createSender('jobs');
    /** An accept that is waiting at the broker (wrapped: awaiting this must not await the accept). */
    const waitingAccept = async () => {
      const accept = nextSession(client);
      for (let i = 0; i < 200 && fake.stats().waitingAccepts === 0; i += 1) await sleep(10);
      expect(fake.stats().waitingAccepts).toBe(1);
      return { accept };
    };
    const takeAndComplete = async (receiver: ServiceBusSessionReceiver) => {
      const [message] = await receiver.receiveMessages(1, { maxWaitTimeInMs: 2000 });
      await receiver.completeMessage(message!);
      await receiver.close();
      return message!.body as unknown;
    };

    // A message arrives.
    let { accept } = await waitingAccept();
    await sender.sendMessages({ body: 1, messageId: 'w-1', sessionId: 'project-w' });
    const first = await accept;
    expect(first.sessionId).toBe('project-w');
    // The session's next message waits for the session to be released.
    await sender.sendMessages({ body: 2, messageId: 'w-2', sessionId: 'project-w' });
    ({ accept } = await waitingAccept());
    expect(await takeAndComplete(first)).toBe(1);
    const second = await accept;
    expect(second.sessionId).toBe('project-w');
    expect(await takeAndComplete(second)).toBe(2);
    // A scheduled message is due.
    ({ accept } = await waitingAccept());
    await sender.scheduleMessages({ body: 3, messageId: 'w-3', sessionId: 'project-x' }, new Date(Date.now() + 500));
    const third = await accept;
    expect(third.sessionId).toBe('project-x');
    expect(await takeAndComplete(third)).toBe(3);
  });

  it('detaches a session receiver whose lock expired and redelivers its message', async () => {
    const { client, sender } = await start({ lockDurationMs: 500 });
    await sender.sendMessages({ body: 'x', messageId: 'm-2', sessionId: 'project-b' });
    const receiver = await nextSession(client);
    const [message] = await receiver.receiveMessages(1, { maxWaitTimeInMs: 2000 });
    expect(message).toBeDefined();
    const again = await receiveFrom(client);
    expect(again.message.deliveryCount).toBe(1);
    await expect(receiver.completeMessage(message!)).rejects.toMatchObject({ code: 'SessionLockLost' });
    await again.settle('complete');
  });

  it('keeps a scheduled message out of reach until its time, and drops a duplicate message id within the window', async () => {
    const { fake, client, sender } = await start({ duplicateDetectionWindowMs: 60_000 });
    await sender.scheduleMessages({ body: 1, messageId: 'm-3', sessionId: 'project-c' }, new Date(Date.now() + 1500));
    await sender.sendMessages({ body: 2, messageId: 'm-3', sessionId: 'project-c' });
    expect(fake.queue('jobs')?.counts()).toEqual({ active: 0, scheduled: 1, deadLettered: 0 });
    await expect(nextSession(client)).rejects.toMatchObject({ code: 'ServiceTimeout' });
    const scheduled = await receiveFrom(client);
    expect(scheduled.message.body).toBe(1);
    await scheduled.settle('complete');
  });

  it('forgets message ids after the duplicate detection window', async () => {
    const { client, sender } = await start({ duplicateDetectionWindowMs: 300 });
    await sender.sendMessages({ body: 1, messageId: 'm-4', sessionId: 'project-d' });
    await (await receiveFrom(client)).settle('complete');
    await sleep(400);
    await sender.sendMessages({ body: 2, messageId: 'm-4', sessionId: 'project-d' });
    const resent = await receiveFrom(client);
    expect(resent.message.body).toBe(2);
    await resent.settle('complete');
  });

  it('refuses messages without a session id and non-session receivers on a session queue', async () => {
    const { client, sender } = await start();
    await expect(sender.sendMessages({ body: 1, messageId: 'm-5' })).rejects.toThrow(/SessionId was not set/);
    await expect(client.createReceiver('jobs').receiveMessages(1, { maxWaitTimeInMs: 500 })).rejects.toThrow(/requires sessions/);
  });

  it('answers the administration client with the queue counts, and refuses a wrong key there too', async () => {
    const { fake, sender } = await start();
    await sender.sendMessages({ body: 1, messageId: 'm-6', sessionId: 'project-e' });
    await sender.scheduleMessages({ body: 2, messageId: 'm-7', sessionId: 'project-e' }, new Date(Date.now() + 60_000));
    const admin = new ServiceBusAdministrationClient(fake.connectionString());
    expect(await admin.getQueueRuntimeProperties('jobs')).toMatchObject({ name: 'jobs', activeMessageCount: 1, scheduledMessageCount: 1, deadLetterMessageCount: 0 });
    expect(await admin.getQueue('jobs')).toMatchObject({ requiresSession: true, maxDeliveryCount: 3, lockDuration: 'PT30S' });
    const stranger = new ServiceBusAdministrationClient(fake.connectionString('RootManageSharedAccessKey', 'wrong'));
    await expect(stranger.getQueueRuntimeProperties('jobs')).rejects.toMatchObject({ statusCode: 401 });
  });

  it('stops with clients connected, and frees what a closed client held', async () => {
    const { fake, client, sender } = await start();
    await sender.sendMessages({ body: 1, messageId: 'm-8', sessionId: 'project-f' });
    await nextSession(client);
    expect(fake.stats()).toMatchObject({ connections: 1, sessionReceivers: 1 });
    await client.close();
    for (let i = 0; i < 50 && fake.stats().connections > 0; i += 1) await sleep(20);
    expect(fake.stats()).toEqual({ connections: 0, sessionReceivers: 0, waitingAccepts: 0 });
    expect(fake.queue('jobs')?.lockedSessionCount).toBe(0);
  });
});
