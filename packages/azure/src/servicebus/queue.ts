import type { TokenCredential } from '@azure/identity';
import type {
  ServiceBusClientOptions,
  ServiceBusMessage,
  ServiceBusReceivedMessage,
  ServiceBusSender,
  ServiceBusSessionReceiver,
} from '@azure/service-bus';
import { RetryMode, ServiceBusAdministrationClient, ServiceBusClient } from '@azure/service-bus';
import type { DeadLetteredJob, DependencyHealth, JobMessage, JobQueue, PublishOptions, QueueCounts, QueuedJob } from '@zepid/core';
import { DeployError, probe } from '@zepid/core';
import Long from 'long';
import { lockLost, serviceBusFailure } from './errors.ts';
import { SessionAcceptor } from './session-acceptor.ts';

/**
 * The job queue on Azure Service Bus (see the JobQueue port), through the real @azure/service-bus SDK.
 *
 * Sessions: the queue is session-enabled and a job's session id is its project. A job is received by
 * accepting the next available session and taking its first message; the session stays locked
 * until the job is settled, so the broker delivers no other job of that project meanwhile, to this
 * or any other worker replica. Settling (or giving the job back) closes the session receiver, which
 * releases the session for the project's next job.
 *
 * Locks: a message received in a session is locked by the session lock, so `renewLock` renews the
 * session lock. Renewal is the consumer's (the SDK's automatic renewal is off, as in the embedded
 * queue, so a worker that stops renewing loses the job) and is refused once a job has been held for
 * `maxLockRenewalMs` (the deployment timeout): nothing keeps a project locked past that.
 *
 * Back-off: Service Bus cannot abandon a message "until later". `abandon` with a delay schedules a
 * copy of the message in the same session at the back-off time, then completes the original. The copy
 * has its own message id (`<id>~<delivery>`: the broker's duplicate detection would drop a copy with
 * the original id) and carries in application properties the original message id (reported as
 * `messageId`), the deliveries so far and the first enqueue time. `deliveryCount` is the sum over
 * the copies, and the max delivery count is enforced over that sum here: abandoning the last allowed
 * delivery dead-letters the job (MaxDeliveryCountExceeded), and a copy whose lock expired on its last
 * allowed delivery is dead-lettered when it is received again. Without a delay, `abandon` is a plain
 * Service Bus abandon (the broker counts the delivery).
 * While a job waits for its back-off, its project's session is free: a later job of the same project
 * may run in the meantime (as with the embedded queue), and the retry then waits for that job's
 * session lock like any other; two jobs of one project are still never locked at once.
 *
 * Connections: one AMQP connection publishes, schedules and peeks; session receivers have their own,
 * because the SDK uses the client's operation timeout as the broker-side wait of acceptNextSession and
 * cannot cancel that wait: `sessionWaitMs` keeps each wait short, so `close()` returns within one.
 *
 * Counts come from ServiceBusAdministrationClient.getQueueRuntimeProperties (active includes locked
 * messages; scheduled are back-offs and delayed publishes): this needs the Manage right on the queue
 * (e.g. the 'Azure Service Bus Data Owner' role). Dead-lettered jobs are peeked from the
 * `$DeadLetterQueue` sub-queue.
 */

export type ServiceBusConnectionOptions =
  | {
      /** `<namespace>.servicebus.windows.net`, with the identity of the process (production). */
      fullyQualifiedNamespace: string;
      credential: TokenCredential;
    }
  | {
      /** A connection string (shared access key, or the emulator's `UseDevelopmentEmulator=true`). */
      connectionString: string;
    };

export type ServiceBusJobQueueOptions = ServiceBusConnectionOptions & {
  queueName: string;
  /** The queue's LockDuration (also the session lock duration), as configured on the queue. */
  lockDurationMs: number;
  /** The queue's MaxDeliveryCount, as configured on the queue. */
  maxDeliveryCount: number;
  /** Longest a received job's lock is renewed: the deployment timeout. Default 10 minutes. */
  maxLockRenewalMs?: number;
  /** Timeout of each publish, schedule, count and peek. Default 30 s. */
  operationTimeoutMs?: number;
  /**
   * How long the broker holds one wait for a session (a long poll) before the receiver asks again.
   * A job that arrives meanwhile answers the wait at once, so this is no pickup delay. The SDK cannot
   * cancel such a wait, so this also bounds how long `close()` waits for one. Default 5 s.
   */
  sessionWaitMs?: number;
};

/** Application properties this adapter puts on back-off copies and dead-letters. */
const ORIGINAL_MESSAGE_ID = 'zepid-original-message-id';
const PRIOR_DELIVERIES = 'zepid-prior-deliveries';
const FIRST_ENQUEUED_AT = 'zepid-first-enqueued-at';
const DEAD_LETTERED_AT = 'zepid-dead-lettered-at';

/** A session is handed out because it has a message, so the message follows at once; this only bounds anomalies. */
const FIRST_MESSAGE_WAIT_MS = 5000;
const DEAD_LETTER_PAGE = 100;
/** listDeadLettered reads at most this many dead-letters to find the newest ones. */
const DEAD_LETTER_SCAN_LIMIT = 5000;

interface ServiceBusJob extends QueuedJob {
  /** Identifies the held delivery; kept on the job so a copied job object still settles. */
  readonly lockToken: string;
}

interface HeldJob {
  receiver: ServiceBusSessionReceiver;
  message: ServiceBusReceivedMessage;
  receivedAt: number;
}

function receivedBody(message: ServiceBusReceivedMessage): unknown {
  // The SDK parses JSON bodies; anything else arrives as bytes.
  const body: unknown = message.body;
  return Buffer.isBuffer(body) ? body.toString('utf8') : body;
}

function numberProperty(message: ServiceBusReceivedMessage, name: string): number | undefined {
  const value = message.applicationProperties?.[name];
  return typeof value === 'number' ? value : undefined;
}

function messageIdOf(message: ServiceBusReceivedMessage): string {
  const original = message.applicationProperties?.[ORIGINAL_MESSAGE_ID];
  if (typeof original === 'string') return original;
  const id = message.messageId;
  if (typeof id === 'string') return id;
  if (typeof id === 'number') return String(id);
  return id === undefined ? '' : id.toString('hex');
}

export class ServiceBusJobQueue implements JobQueue {
  readonly lockDurationMs: number;
  readonly maxDeliveryCount: number;
  private readonly options: ServiceBusJobQueueOptions;
  private readonly queueName: string;
  private readonly maxLockRenewalMs: number;
  private readonly operationTimeoutMs: number;
  private readonly sessionWaitMs: number;
  private readonly held = new Map<string, HeldJob>();
  private readonly closing = new AbortController();
  private clients: {
    client: ServiceBusClient;
    /** Session receivers only: its operation timeout is the session long-poll (see sessionWaitMs). */
    receiveClient: ServiceBusClient;
    admin: ServiceBusAdministrationClient;
    sender: ServiceBusSender;
    sessions: SessionAcceptor;
  } | null = null;

  constructor(options: ServiceBusJobQueueOptions) {
    this.options = options;
    this.queueName = options.queueName;
    this.lockDurationMs = options.lockDurationMs;
    this.maxDeliveryCount = options.maxDeliveryCount;
    this.maxLockRenewalMs = options.maxLockRenewalMs ?? 600_000;
    this.operationTimeoutMs = options.operationTimeoutMs ?? 30_000;
    this.sessionWaitMs = options.sessionWaitMs ?? 5000;
  }

  /** Creates the clients; the SDK connects on first use, so a broker that is down fails calls, not start. */
  start(): Promise<void> {
    if (this.clients !== null) return Promise.resolve();
    // The worker backs off on its own: a couple of quick retries, then a clear error.
    const retry = { maxRetries: 2, retryDelayInMs: 250, maxRetryDelayInMs: 2000, mode: RetryMode.Exponential };
    const client = this.createClient({ retryOptions: { ...retry, timeoutInMs: this.operationTimeoutMs } });
    // The SDK sends its operation timeout as the broker-side wait of acceptNextSession, so session
    // receivers get a client of their own whose timeout is the long-poll length.
    const receiveClient = this.createClient({ retryOptions: { ...retry, timeoutInMs: this.sessionWaitMs } });
    const options = this.options;
    const admin =
      'connectionString' in options
        ? new ServiceBusAdministrationClient(options.connectionString, { retryOptions: { maxRetries: 2 } })
        : new ServiceBusAdministrationClient(options.fullyQualifiedNamespace, options.credential, { retryOptions: { maxRetries: 2 } });
    const sessions = new SessionAcceptor(
      // The SDK's own lock renewal is off (0): renewal is the consumer's, bounded by maxLockRenewalMs.
      () => receiveClient.acceptNextSession(this.queueName, { receiveMode: 'peekLock', maxAutoLockRenewalDurationInMs: 0 }),
      (receiver) => this.release(receiver),
    );
    this.clients = { client, receiveClient, admin, sender: client.createSender(this.queueName), sessions };
    return Promise.resolve();
  }

  private createClient(clientOptions: ServiceBusClientOptions): ServiceBusClient {
    const options = this.options;
    return 'connectionString' in options
      ? new ServiceBusClient(options.connectionString, clientOptions)
      : new ServiceBusClient(options.fullyQualifiedNamespace, options.credential, clientOptions);
  }

  private get open() {
    if (this.clients === null || this.closing.signal.aborted) {
      throw new DeployError('DEPENDENCY_UNAVAILABLE', `Service Bus queue '${this.queueName}' is not open`, { retryable: false });
    }
    return this.clients;
  }

  private failure(error: unknown, action: string, messageId?: string): DeployError {
    return serviceBusFailure(error, { queue: this.queueName, action, ...(messageId === undefined ? {} : { messageId }) });
  }

  /** Closes a session receiver, which releases the session lock; failures only mean it is gone already. */
  private async release(receiver: ServiceBusSessionReceiver): Promise<void> {
    try {
      await receiver.close();
    } catch {
      // The link or connection is already closed: the broker has released the session.
    }
  }

  async close(): Promise<void> {
    if (this.clients === null || this.closing.signal.aborted) return;
    this.closing.abort();
    const { client, receiveClient, sessions } = this.clients;
    // Jobs still held are not settled: closing their sessions gives them back, as a worker crash would.
    await Promise.all([...this.held.values()].map((held) => this.release(held.receiver)));
    this.held.clear();
    await Promise.all(
      [client, receiveClient].map((each) =>
        withTimeout(each.close(), this.operationTimeoutMs).catch(() => {
          // The connection is gone either way; nothing of ours stays open at the broker.
        }),
      ),
    );
    // A session wait still pending at the broker ends within one long poll (the SDK cannot cancel it).
    await sessions.drain(this.sessionWaitMs + 1000);
  }

  health(): Promise<DependencyHealth> {
    return probe(async () => {
      try {
        // Opening the sender link checks the connection, the credentials (Send) and that the queue exists.
        await this.open.sender.createMessageBatch({ abortSignal: AbortSignal.timeout(this.operationTimeoutMs) });
      } catch (error) {
        throw this.failure(error, 'open the queue');
      }
    });
  }

  async publish(body: JobMessage, options: PublishOptions): Promise<void> {
    const message: ServiceBusMessage = { body, messageId: options.messageId, sessionId: options.sessionId, contentType: 'application/json' };
    const { sender } = this.open;
    try {
      if (options.delayMs !== undefined && options.delayMs > 0) {
        await sender.scheduleMessages(message, new Date(Date.now() + options.delayMs));
      } else {
        await sender.sendMessages(message);
      }
    } catch (error) {
      throw this.failure(error, 'publish a job', options.messageId);
    }
  }

  async receive(options: { waitMs: number; signal?: AbortSignal }): Promise<QueuedJob | null> {
    if (this.clients === null || this.closing.signal.aborted) return null;
    const { sessions } = this.clients;
    const signal = options.signal === undefined ? this.closing.signal : AbortSignal.any([this.closing.signal, options.signal]);
    const deadline = Date.now() + options.waitMs;
    while (!signal.aborted && Date.now() < deadline) {
      let receiver: ServiceBusSessionReceiver | null;
      try {
        receiver = await sessions.next(deadline - Date.now(), signal);
      } catch (error) {
        if (this.closing.signal.aborted) return null;
        throw this.failure(error, 'receive a job');
      }
      if (receiver === null) return null;
      const job = await this.takeFirstMessage(receiver);
      if (job !== null) return job;
    }
    return null;
  }

  /** The session's first message as a held job; null (session released) when there is none to run. */
  private async takeFirstMessage(receiver: ServiceBusSessionReceiver): Promise<QueuedJob | null> {
    let message: ServiceBusReceivedMessage | undefined;
    try {
      [message] = await receiver.receiveMessages(1, { maxWaitTimeInMs: FIRST_MESSAGE_WAIT_MS });
    } catch {
      // The session lock was lost or the connection closed before a message came: look again.
    }
    if (message === undefined || this.closing.signal.aborted) {
      await this.release(receiver);
      return null;
    }
    // Service Bus sends the AMQP delivery count (deliveries before this one) and the SDK passes it on.
    const deliveryCount = (numberProperty(message, PRIOR_DELIVERIES) ?? 0) + (message.deliveryCount ?? 0) + 1;
    const firstEnqueuedAt = numberProperty(message, FIRST_ENQUEUED_AT);
    const job: ServiceBusJob = {
      lockToken: message.lockToken ?? `${receiver.sessionId}:${String(message.sequenceNumber)}`,
      messageId: messageIdOf(message),
      sessionId: receiver.sessionId,
      body: receivedBody(message),
      deliveryCount,
      enqueuedAt: firstEnqueuedAt === undefined ? (message.enqueuedTimeUtc ?? new Date()) : new Date(firstEnqueuedAt),
      lockedUntil: receiver.sessionLockedUntilUtc ?? message.lockedUntilUtc ?? new Date(Date.now() + this.lockDurationMs),
    };
    const held: HeldJob = { receiver, message, receivedAt: Date.now() };
    if (deliveryCount > this.maxDeliveryCount) {
      // Its lock expired on the last allowed delivery of a back-off copy (the broker counts only the copy).
      try {
        await this.deadLetterHeld(held, 'MaxDeliveryCountExceeded', `Lock expired after ${deliveryCount - 1} deliveries`);
      } catch {
        // Lost the lock meanwhile: whoever gets the job next dead-letters it.
      }
      await this.release(receiver);
      return null;
    }
    this.held.set(job.lockToken, held);
    return job;
  }

  /** The held delivery of a job; it stays held until settled. */
  private heldOf(job: QueuedJob): HeldJob {
    const token = (job as Partial<ServiceBusJob>).lockToken;
    const held = token === undefined ? undefined : this.held.get(token);
    if (held === undefined) throw lockLost(job.messageId);
    return held;
  }

  /** Runs a settlement of a held job, then releases its session whatever happened. */
  private async settle(job: QueuedJob, action: string, settlement: (held: HeldJob) => Promise<void>): Promise<void> {
    const held = this.heldOf(job);
    this.held.delete((job as ServiceBusJob).lockToken);
    try {
      await settlement(held);
    } catch (error) {
      throw this.failure(error, action, job.messageId);
    } finally {
      await this.release(held.receiver);
    }
  }

  async renewLock(job: QueuedJob): Promise<void> {
    const held = this.heldOf(job);
    if (Date.now() - held.receivedAt >= this.maxLockRenewalMs) {
      throw new DeployError(
        'TIMEOUT',
        `Job ${job.messageId} has been held for longer than ${this.maxLockRenewalMs} ms (the deployment timeout); its lock is not renewed any more`,
      );
    }
    try {
      job.lockedUntil = await held.receiver.renewSessionLock({ abortSignal: AbortSignal.timeout(this.operationTimeoutMs) });
    } catch (error) {
      const failure = this.failure(error, 'renew a job lock', job.messageId);
      if (failure.code === 'CONCURRENT_UPDATE') {
        this.held.delete((job as ServiceBusJob).lockToken);
        await this.release(held.receiver);
      }
      throw failure;
    }
  }

  complete(job: QueuedJob): Promise<void> {
    return this.settle(job, 'complete a job', (held) => held.receiver.completeMessage(held.message));
  }

  abandon(job: QueuedJob, options: { delayMs?: number } = {}): Promise<void> {
    const delayMs = options.delayMs ?? 0;
    return this.settle(job, 'give a job back', async (held) => {
      if (job.deliveryCount >= this.maxDeliveryCount) {
        await this.deadLetterHeld(held, 'MaxDeliveryCountExceeded', `Abandoned on delivery ${job.deliveryCount} of ${this.maxDeliveryCount}`);
      } else if (delayMs > 0) {
        await this.scheduleRetry(job, held, delayMs);
      } else {
        await held.receiver.abandonMessage(held.message);
      }
    });
  }

  /** Back-off: a copy in the same session at the retry time, then the original completed (see the class comment). */
  private async scheduleRetry(job: QueuedJob, held: HeldJob, delayMs: number): Promise<void> {
    // Renewing first proves the session is still ours just before the copy exists, so a job whose
    // lock is already lost is not duplicated.
    await held.receiver.renewSessionLock({ abortSignal: AbortSignal.timeout(this.operationTimeoutMs) });
    const body: unknown = held.message.body;
    const copy: ServiceBusMessage = {
      body,
      messageId: `${job.messageId}~${job.deliveryCount + 1}`,
      sessionId: job.sessionId,
      contentType: held.message.contentType ?? 'application/json',
      applicationProperties: {
        ...held.message.applicationProperties,
        [ORIGINAL_MESSAGE_ID]: job.messageId,
        [PRIOR_DELIVERIES]: job.deliveryCount,
        [FIRST_ENQUEUED_AT]: job.enqueuedAt.getTime(),
      },
    };
    await this.open.sender.scheduleMessages(copy, new Date(Date.now() + delayMs));
    await held.receiver.completeMessage(held.message);
  }

  private async deadLetterHeld(held: HeldJob, reason: string, description: string): Promise<void> {
    await held.receiver.deadLetterMessage(held.message, {
      deadLetterReason: reason.slice(0, 128),
      deadLetterErrorDescription: description.slice(0, 1024),
      [DEAD_LETTERED_AT]: Date.now(),
    });
  }

  deadLetter(job: QueuedJob, reason: { reason: string; description: string }): Promise<void> {
    return this.settle(job, 'dead-letter a job', (held) => this.deadLetterHeld(held, reason.reason, reason.description));
  }

  async counts(): Promise<QueueCounts> {
    try {
      const runtime = await this.open.admin.getQueueRuntimeProperties(this.queueName, { abortSignal: AbortSignal.timeout(this.operationTimeoutMs) });
      return { active: runtime.activeMessageCount, scheduled: runtime.scheduledMessageCount, deadLettered: runtime.deadLetterMessageCount };
    } catch (error) {
      throw this.failure(error, 'read queue counts');
    }
  }

  /** The newest dead-lettered jobs first (the sub-queue is read oldest first, so up to a bounded scan). */
  async listDeadLettered(limit: number): Promise<DeadLetteredJob[]> {
    if (limit <= 0) return [];
    const receiver = this.open.client.createReceiver(this.queueName, { subQueueType: 'deadLetter' });
    try {
      const newest: ServiceBusReceivedMessage[] = [];
      // The SDK keeps one peek cursor per connection and entity: always say where to start.
      let from = Long.fromNumber(0);
      for (let scanned = 0; scanned < DEAD_LETTER_SCAN_LIMIT; ) {
        const page = await receiver.peekMessages(DEAD_LETTER_PAGE, { fromSequenceNumber: from, abortSignal: AbortSignal.timeout(this.operationTimeoutMs) });
        newest.push(...page);
        newest.splice(0, Math.max(0, newest.length - limit));
        scanned += page.length;
        const last = page.at(-1)?.sequenceNumber;
        if (page.length < DEAD_LETTER_PAGE || last === undefined) break;
        from = last.add(1);
      }
      return newest.reverse().map((message) => {
        const deadLetteredAt = numberProperty(message, DEAD_LETTERED_AT);
        return {
          messageId: messageIdOf(message),
          reason: message.deadLetterReason ?? '',
          description: message.deadLetterErrorDescription ?? '',
          // Dead-letters made by the broker itself carry no time of their own; the enqueue time is the closest.
          deadLetteredAt: new Date(deadLetteredAt ?? message.enqueuedTimeUtc?.getTime() ?? Date.now()).toISOString(),
        };
      });
    } catch (error) {
      throw this.failure(error, 'list dead-lettered jobs');
    } finally {
      await receiver.close().catch(() => undefined);
    }
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
