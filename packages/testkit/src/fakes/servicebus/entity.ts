import { randomBytes } from 'node:crypto';

/**
 * The state of one fake Service Bus queue, without any I/O: messages with sequence numbers, peek-lock
 * with lock tokens and expiry, sessions (one session lock per session id at a time), delivery counts,
 * the dead-letter sub-queue, scheduled enqueue times and duplicate detection by message id.
 *
 * The AMQP side (amqp.ts) owns links and frames; it passes an opaque `owner` for every lock so that
 * a lock is only honoured for the link that took it, as on the real service.
 */

export interface QueueSettings {
  name: string;
  /** LockDuration: how long a session (and the messages received in it) stay locked without renewal. */
  lockDurationMs: number;
  /** MaxDeliveryCount: a message released after this many deliveries moves to the dead-letter sub-queue. */
  maxDeliveryCount: number;
  /** RequiresSession. Only session receivers are served; non-session receivers are refused like the service does. */
  requiresSession: boolean;
  /** DuplicateDetectionHistoryTimeWindow; 0 turns duplicate detection off. */
  duplicateDetectionWindowMs: number;
}

/** The fields of an AMQP message the broker keeps and re-sends (rhea's decoded form, minus broker annotations). */
export interface AmqpMessageFields {
  message_id?: unknown;
  group_id?: string;
  application_properties?: Record<string, unknown>;
  message_annotations?: Record<string, unknown>;
  [field: string]: unknown;
}

export interface StoredMessage {
  sequenceNumber: number;
  messageId: string | undefined;
  sessionId: string | undefined;
  fields: AmqpMessageFields;
  enqueuedAt: number;
  /** Scheduled enqueue time while the message waits for it; null once it is active. */
  scheduledFor: number | null;
  /** Deliveries so far; Service Bus counts the first delivery as 1 (it sends count - 1 in the AMQP header). */
  deliveryCount: number;
  lock: { token: Buffer; owner: object } | null;
  deadLetter: { reason: string; description: string; source: string; at: number } | null;
}

export interface SessionLock {
  sessionId: string;
  owner: object;
  lockedUntil: number;
}

export type SettleOutcome =
  | { kind: 'complete' }
  | { kind: 'abandon' }
  | { kind: 'dead-letter'; reason: string | undefined; description: string | undefined; properties: Record<string, unknown> };

/** An AMQP error condition the AMQP side sends back as it is. */
export interface BrokerError {
  condition: string;
  description: string;
}

export const SESSION_LOCK_LOST = 'com.microsoft:session-lock-lost';
export const MESSAGE_LOCK_LOST = 'com.microsoft:message-lock-lost';
export const SESSION_CANNOT_BE_LOCKED = 'com.microsoft:session-cannot-be-locked';

/** A message id as text: the SDK sends strings, but AMQP also allows numbers, UUIDs and binary. */
function idOf(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'bigint') return value.toString();
  if (Buffer.isBuffer(value)) return value.toString('hex');
  return undefined;
}

export class QueueEntity {
  readonly settings: QueueSettings;
  private readonly messages = new Map<number, StoredMessage>();
  private readonly deadLetters = new Map<number, StoredMessage>();
  private readonly sessionLocks = new Map<string, SessionLock>();
  /** message id → when it was first accepted; a message id seen within the window is dropped. */
  private readonly seenMessageIds = new Map<string, number>();
  private nextSequenceNumber = 1;
  private nextDeadLetterSequenceNumber = 1;

  constructor(settings: QueueSettings) {
    this.settings = settings;
  }

  /**
   * Accepts a sent or scheduled message. Returns null when duplicate detection drops it (the sender
   * still sees success, as with the real service).
   */
  enqueue(fields: AmqpMessageFields, now: number, scheduledFor: number | null): StoredMessage | null {
    const messageId = idOf(fields.message_id);
    if (messageId !== undefined && this.settings.duplicateDetectionWindowMs > 0) {
      const seenAt = this.seenMessageIds.get(messageId);
      if (seenAt !== undefined && now - seenAt < this.settings.duplicateDetectionWindowMs) return null;
      this.seenMessageIds.set(messageId, now);
    }
    const message: StoredMessage = {
      sequenceNumber: this.nextSequenceNumber++,
      messageId,
      sessionId: fields.group_id,
      fields,
      enqueuedAt: now,
      scheduledFor: scheduledFor !== null && scheduledFor > now ? scheduledFor : null,
      deliveryCount: 0,
      lock: null,
      deadLetter: null,
    };
    this.messages.set(message.sequenceNumber, message);
    return message;
  }

  private isAvailable(message: StoredMessage): boolean {
    return message.scheduledFor === null && message.lock === null;
  }

  /**
   * Locks a session for `owner`: the named one, or else the unlocked session whose oldest available
   * message is the oldest in the queue. Null when none can be locked now.
   */
  acceptSession(requested: string | null, owner: object, now: number): SessionLock | null {
    let sessionId: string | undefined;
    if (requested !== null) {
      if (this.sessionLocks.has(requested)) return null;
      sessionId = requested;
    } else {
      for (const message of this.messages.values()) {
        // Map iteration follows insertion, which is sequence-number order.
        if (message.sessionId === undefined || !this.isAvailable(message)) continue;
        if (this.sessionLocks.has(message.sessionId)) continue;
        sessionId = message.sessionId;
        break;
      }
    }
    if (sessionId === undefined) return null;
    const lock: SessionLock = { sessionId, owner, lockedUntil: now + this.settings.lockDurationMs };
    this.sessionLocks.set(sessionId, lock);
    return lock;
  }

  sessionLockOf(sessionId: string): SessionLock | undefined {
    return this.sessionLocks.get(sessionId);
  }

  /** Renews the session lock if `owner` still holds it. */
  renewSessionLock(sessionId: string, owner: object, now: number): SessionLock | BrokerError {
    const lock = this.sessionLocks.get(sessionId);
    if (lock === undefined || lock.owner !== owner || lock.lockedUntil <= now) {
      return { condition: SESSION_LOCK_LOST, description: `The session lock has expired on the MessageSession '${sessionId}'. Accept a new MessageSession.` };
    }
    lock.lockedUntil = now + this.settings.lockDurationMs;
    return lock;
  }

  /** The next available message of a session locked by `owner`, now locked and counted as a delivery. */
  deliverNext(sessionId: string, owner: object): StoredMessage | null {
    const lock = this.sessionLocks.get(sessionId);
    if (lock === undefined || lock.owner !== owner) return null;
    for (const message of this.messages.values()) {
      if (message.sessionId !== sessionId || !this.isAvailable(message)) continue;
      message.lock = { token: randomBytes(16), owner };
      message.deliveryCount += 1;
      return message;
    }
    return null;
  }

  /** Settles a delivered message; refused when the lock (message or session) is no longer this owner's. */
  settle(sequenceNumber: number, token: Buffer, owner: object, outcome: SettleOutcome, now: number): BrokerError | null {
    const message = this.messages.get(sequenceNumber);
    if (message === undefined || message.lock === null || !message.lock.token.equals(token) || message.lock.owner !== owner) {
      return { condition: MESSAGE_LOCK_LOST, description: 'The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.' };
    }
    if (message.sessionId !== undefined) {
      const lock = this.sessionLocks.get(message.sessionId);
      if (lock === undefined || lock.owner !== owner || lock.lockedUntil <= now) {
        return { condition: SESSION_LOCK_LOST, description: `The session lock has expired on the MessageSession '${message.sessionId}'. Accept a new MessageSession.` };
      }
    }
    if (outcome.kind === 'complete') {
      this.messages.delete(sequenceNumber);
    } else if (outcome.kind === 'abandon') {
      this.release(message, now);
    } else {
      message.fields = {
        ...message.fields,
        application_properties: {
          ...message.fields.application_properties,
          ...outcome.properties,
          ...(outcome.reason === undefined ? {} : { DeadLetterReason: outcome.reason }),
          ...(outcome.description === undefined ? {} : { DeadLetterErrorDescription: outcome.description }),
        },
      };
      this.moveToDeadLetter(message, outcome.reason ?? '', outcome.description ?? '', now);
    }
    return null;
  }

  /**
   * Gives a locked message back: past the max delivery count it is dead-lettered
   * (MaxDeliveryCountExceeded), as the service does on abandon or lock loss.
   */
  private release(message: StoredMessage, now: number): void {
    message.lock = null;
    if (message.deliveryCount >= this.settings.maxDeliveryCount) {
      const description = `Message could not be consumed after ${message.deliveryCount} delivery attempts.`;
      message.fields = {
        ...message.fields,
        application_properties: {
          ...message.fields.application_properties,
          DeadLetterReason: 'MaxDeliveryCountExceeded',
          DeadLetterErrorDescription: description,
        },
      };
      this.moveToDeadLetter(message, 'MaxDeliveryCountExceeded', description, now);
    }
  }

  private moveToDeadLetter(message: StoredMessage, reason: string, description: string, now: number): void {
    this.messages.delete(message.sequenceNumber);
    message.lock = null;
    message.deadLetter = { reason, description, source: this.settings.name, at: now };
    message.sequenceNumber = this.nextDeadLetterSequenceNumber++;
    this.deadLetters.set(message.sequenceNumber, message);
  }

  /** Ends `owner`'s lock on a session (link closed, connection lost or lock expired); its messages go back. */
  releaseSession(sessionId: string, owner: object, now: number): void {
    const lock = this.sessionLocks.get(sessionId);
    if (lock === undefined || lock.owner !== owner) return;
    this.sessionLocks.delete(sessionId);
    for (const message of [...this.messages.values()]) {
      if (message.sessionId === sessionId && message.lock?.owner === owner) this.release(message, now);
    }
  }

  /**
   * Time passes: scheduled messages become active, expired session locks end (their owners are
   * returned so the AMQP side can detach their links), old message ids leave the duplicate window.
   * Returns whether anything became deliverable.
   */
  sweep(now: number): { expired: SessionLock[]; activated: boolean } {
    let activated = false;
    for (const message of this.messages.values()) {
      if (message.scheduledFor !== null && message.scheduledFor <= now) {
        message.scheduledFor = null;
        activated = true;
      }
    }
    const expired = [...this.sessionLocks.values()].filter((lock) => lock.lockedUntil <= now);
    for (const lock of expired) this.releaseSession(lock.sessionId, lock.owner, now);
    for (const [messageId, seenAt] of this.seenMessageIds) {
      if (now - seenAt >= this.settings.duplicateDetectionWindowMs) this.seenMessageIds.delete(messageId);
    }
    return { expired, activated: activated || expired.length > 0 };
  }

  /** Messages from a sequence number on, without locking them (peek). */
  peek(subQueue: 'main' | 'dead-letter', fromSequenceNumber: number, count: number, sessionId?: string): StoredMessage[] {
    const source = subQueue === 'main' ? this.messages : this.deadLetters;
    return [...source.values()]
      .filter((message) => message.sequenceNumber >= fromSequenceNumber && (sessionId === undefined || message.sessionId === sessionId))
      .sort((a, b) => a.sequenceNumber - b.sequenceNumber)
      .slice(0, count);
  }

  /** CountDetails of the queue description: active includes locked messages, as on the service. */
  counts(): { active: number; scheduled: number; deadLettered: number } {
    let active = 0;
    let scheduled = 0;
    for (const message of this.messages.values()) {
      if (message.scheduledFor === null) active += 1;
      else scheduled += 1;
    }
    return { active, scheduled, deadLettered: this.deadLetters.size };
  }

  get lockedSessionCount(): number {
    return this.sessionLocks.size;
  }
}
