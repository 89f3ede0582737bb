import type { ApiAdapters, DeploymentRecord, DeploymentRef } from '@zepid/core';

/** Longest a watch sleeps without a change signal: a missed signal (unreliable file watch) costs at most this. */
export const FALLBACK_POLL_MS = 5000;

/**
 * One watcher per followed deployment in this process, however many streams follow it. A change
 * signal wakes the watchers only (one record read and one log read each); a watcher wakes its
 * followers only when its deployment's record or log changed. So 1,000 idle streams cost nothing
 * when other deployments change, and one read when theirs does. The watch keeps the record it read
 * last (`record`): its followers share that one copy instead of each holding (and re-reading) its own,
 * and they have no timer of their own: the watch's loop is the only poll.
 *
 * `version` counts the changes seen; a follower reads it before reading `record` and passes it to
 * `wait`, which returns at once if a change came in between (no change is missed going to sleep).
 */
export class DeploymentWatch {
  version = 0;
  /** The record as last read (null: deleted or not visible to the org); undefined before any read. */
  record: DeploymentRecord | null | undefined = undefined;
  private followers = 0;
  private etag: string | null | undefined = undefined;
  private size = 0;
  private readonly waiters = new Set<() => void>();
  private readonly stopped = new AbortController();
  private readonly adapters: Pick<ApiAdapters, 'store' | 'artifacts' | 'changes'>;
  private readonly ref: DeploymentRef;
  private readonly onIdle: () => void;

  constructor(adapters: Pick<ApiAdapters, 'store' | 'artifacts' | 'changes'>, ref: DeploymentRef, onIdle: () => void) {
    this.adapters = adapters;
    this.ref = ref;
    this.onIdle = onIdle;
  }

  /** Gives the watch a record read elsewhere (the request's own read) if it has none yet. */
  seed(record: DeploymentRecord): void {
    if (this.record === undefined) this.record = record;
  }

  follow(): () => void {
    this.followers += 1;
    if (this.followers === 1) void this.loop();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.followers -= 1;
      if (this.followers === 0) this.stop();
    };
  }

  stop(): void {
    this.stopped.abort();
    this.wake();
    this.onIdle();
  }

  /** Until the next change after `seen`, `signal` aborts, or `ms` passed (null: no timer at all). */
  wait(seen: number, ms: number | null, signal: AbortSignal): Promise<void> {
    if (this.version !== seen || signal.aborted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        if (timer !== null) clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.waiters.delete(done);
        resolve();
      };
      const timer = ms === null ? null : setTimeout(done, Math.max(0, ms));
      signal.addEventListener('abort', done, { once: true });
      this.waiters.add(done);
    });
  }

  private wake(): void {
    this.version += 1;
    for (const waiter of [...this.waiters]) waiter();
  }

  private async loop(): Promise<void> {
    const { store, artifacts, changes } = this.adapters;
    while (!this.stopped.signal.aborted) {
      const seen = changes.rung;
      try {
        const record = await store.get(this.ref);
        const log = await artifacts.readLogFrom(this.ref.deploymentId, this.size);
        const etag = record?.etag ?? null;
        if (etag !== this.etag || log.next !== this.size) {
          this.record = record;
          this.etag = etag;
          this.size = log.next;
          this.wake();
        }
      } catch {
        // A failed look changes nothing; the next signal or the fallback poll looks again.
      }
      await changes.wait(seen, FALLBACK_POLL_MS, this.stopped.signal);
    }
  }
}

/** The watches of this process, by deployment. */
export class DeploymentWatches {
  private readonly watches = new Map<string, DeploymentWatch>();
  private readonly adapters: Pick<ApiAdapters, 'store' | 'artifacts' | 'changes'>;

  constructor(adapters: Pick<ApiAdapters, 'store' | 'artifacts' | 'changes'>) {
    this.adapters = adapters;
  }

  /** The deployment's watch (seeded with `record` when new), and the function that ends this follower's interest in it. */
  follow(ref: DeploymentRef, record: DeploymentRecord): { watch: DeploymentWatch; release: () => void } {
    const key = `${ref.orgId}:${ref.deploymentId}`;
    let watch = this.watches.get(key);
    if (watch === undefined) {
      const created: DeploymentWatch = new DeploymentWatch(this.adapters, ref, () => {
        if (this.watches.get(key) === created) this.watches.delete(key);
      });
      watch = created;
      this.watches.set(key, watch);
    }
    watch.seed(record);
    return { watch, release: watch.follow() };
  }

  stopAll(): void {
    for (const watch of [...this.watches.values()]) watch.stop();
  }
}
