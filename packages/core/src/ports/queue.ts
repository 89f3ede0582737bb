import type { QueueMessage } from '../deployment.ts';
import type { HealthReporting, Lifecycle } from './lifecycle.ts';

/**
 * Job queue with Service Bus semantics: peek-lock, lock renewal, complete, abandon, delivery count,
 * dead-letter with a reason past the max delivery count, scheduled delivery, duplicate detection by
 * message id, and sessions: while one job of a session is locked, no other job of that session is
 * delivered. The session is the project, so one project never deploys twice at once.
 *
 * Leaves out: SDK receivers and senders, AMQP links, SQL. A received body is `unknown`: a poison
 * message (malformed or unknown) is the consumer's to dead-letter.
 */
export interface QueuedJob {
  readonly messageId: string;
  readonly sessionId: string;
  readonly body: unknown;
  /** 1 on the first delivery. */
  readonly deliveryCount: number;
  readonly enqueuedAt: Date;
  lockedUntil: Date;
}

export interface PublishOptions {
  /** Duplicate detection key: `${deploymentId}:${attempt}`. A second publish with it is dropped. */
  messageId: string;
  /** Jobs of one session are delivered one at a time, in order. */
  sessionId: string;
  /** Deliver no earlier than this many milliseconds from now. */
  delayMs?: number;
}

export interface QueueCounts {
  /** Waiting or being processed. */
  active: number;
  /** Waiting for a scheduled time (back-off). */
  scheduled: number;
  deadLettered: number;
}

export interface DeadLetteredJob {
  messageId: string;
  reason: string;
  description: string;
  deadLetteredAt: string;
}

export interface JobQueue extends Lifecycle, HealthReporting {
  readonly lockDurationMs: number;
  readonly maxDeliveryCount: number;
  publish(body: QueueMessage, options: PublishOptions): Promise<void>;
  /** Waits up to `waitMs` for a deliverable job and locks it; null when none came. */
  receive(options: { waitMs: number; signal?: AbortSignal }): Promise<QueuedJob | null>;
  /** Extends the lock; LOCK_LOST (CONCURRENT_UPDATE) when another receiver has the job now. */
  renewLock(job: QueuedJob): Promise<void>;
  complete(job: QueuedJob): Promise<void>;
  /**
   * Gives the job back for another delivery, no sooner than `delayMs` from now. Past the max delivery
   * count the job is dead-lettered instead (reason MaxDeliveryCountExceeded).
   */
  abandon(job: QueuedJob, options?: { delayMs?: number }): Promise<void>;
  deadLetter(job: QueuedJob, reason: { reason: string; description: string }): Promise<void>;
  counts(): Promise<QueueCounts>;
  listDeadLettered(limit: number): Promise<DeadLetteredJob[]>;
}
