import type { DeploymentRecord, DeploymentRef, DeploymentStore, LeaseCheck, Logger } from '@zepid/core';
import { isTerminal } from '@zepid/core';

export interface LeaseOptions {
  store: DeploymentStore;
  ref: DeploymentRef;
  attempt: number;
  logger: Logger;
  /** Stops the run (reason `lost`): called once, when the lease is found lost. */
  onLost: (why: string) => void;
}

/**
 * One run's hold on its deployment (packages/core/src/lease.ts). The run takes it with its first
 * write (`attempt_started` bumps the record's epoch under the etag) and holds it while the record
 * still carries that epoch, for the same attempt, unfinished. `check` reads the record every time
 * rather than trusting the last look: a stall (SIGSTOP, GC) can last any time, and a cached "held"
 * is exactly what a woken worker must not believe. Once lost, it stays lost, and every side effect
 * asked for afterwards is logged as skipped.
 */
export class Lease {
  private readonly options: LeaseOptions;
  private epoch: number | null = null;
  private lostWhy: string | null = null;
  /** The run ended the deployment itself: the record moving on is its own doing, not a takeover. */
  private released = false;

  constructor(options: LeaseOptions) {
    this.options = options;
  }

  /** Remembers the epoch this run's takeover wrote. */
  take(record: DeploymentRecord): void {
    this.epoch = record.lease;
  }

  /** The run wrote the deployment's end; from now on nothing it sees in the record means it lost the lease. */
  release(): void {
    this.released = true;
  }

  get held(): boolean {
    return this.lostWhy === null;
  }

  /** Whether `current` still belongs to this run: the same attempt, not finished, and this run's epoch. */
  owns(current: DeploymentRecord | null): boolean {
    if (current === null || current.attempt !== this.options.attempt || isTerminal(current.status)) return false;
    return this.epoch === null || current.lease === this.epoch;
  }

  /** Marks the lease lost (a takeover seen in the store, or the job's lock lost) and stops the run. */
  lose(why: string): void {
    if (this.lostWhy !== null || this.released) return;
    this.lostWhy = why;
    this.options.logger.warn(
      { deploymentId: this.options.ref.deploymentId, attempt: this.options.attempt, lease: this.epoch, why },
      'lease lost: another delivery owns this deployment now; this run makes no further side effect and leaves compensation to the owner',
    );
    this.options.onLost(why);
  }

  readonly check: LeaseCheck = async (action) => {
    if (this.lostWhy === null) {
      const current = await this.options.store.get(this.options.ref);
      if (this.owns(current)) return true;
      this.lose(describeTakeover(current, this.epoch));
    }
    this.options.logger.warn(
      { deploymentId: this.options.ref.deploymentId, lease: this.epoch, skipped: action },
      `lease lost: skipped ${action} (the owning delivery takes care of it)`,
    );
    return false;
  };
}

function describeTakeover(current: DeploymentRecord | null, epoch: number | null): string {
  if (current === null) return 'the deployment is gone';
  if (isTerminal(current.status)) return `the deployment ended (${current.status})`;
  if (current.lease !== epoch) return `another delivery took the deployment over (lease ${String(epoch)} → ${current.lease})`;
  return `the deployment moved on to attempt ${current.attempt}`;
}
