import type { ApiAdapters, DeploymentRecord, DeploymentRef } from '@zepid/core';

/**
 * Longest a watch sleeps without a change signal (SSE_RESYNC_MS): the slow safety resync. Locally a
 * ring from another process can be missed where watching a file is unreliable (network filesystems,
 * some bind mounts: see the doorbell), so a watch also looks this often; one read per watch (per
 * followed deployment or org), never per stream. In Azure the poll interval (AZURE_EVENTS_POLL_MS) is
 * shorter and wins.
 */
export const FALLBACK_POLL_MS = 5000;

/** A stream following a watch: woken (no data) when what it follows changed; it reads the watch's copy. */
export interface Follower {
  wake(): void;
}

type WatchAdapters = Pick<ApiAdapters, 'store' | 'artifacts' | 'changes'>;

/**
 * One reader loop per followed thing in this process, however many streams follow it: it sleeps on
 * the change signal (the doorbell locally, the shared poll in Azure), reads once per signal, and wakes
 * its followers only when what it read changed. An idle follower is an object in a set: no promise,
 * no timer, no closure of its own.
 */
export abstract class Watch {
  /** Counts the changes seen. */
  version = 0;
  protected readonly followers = new Set<Follower>();
  private readonly stopped = new AbortController();
  protected readonly adapters: WatchAdapters;
  private readonly resyncMs: number;
  private readonly onIdle: () => void;

  constructor(adapters: WatchAdapters, resyncMs: number, onIdle: () => void) {
    this.adapters = adapters;
    this.resyncMs = resyncMs;
    this.onIdle = onIdle;
  }

  get stopping(): boolean {
    return this.stopped.signal.aborted;
  }

  /** Adds a follower (the first starts the loop). */
  follow(follower: Follower): void {
    this.followers.add(follower);
    if (this.followers.size === 1 && !this.stopping) void this.loop();
  }

  /** Removes a follower (the last stops the loop). */
  unfollow(follower: Follower): void {
    if (this.followers.delete(follower) && this.followers.size === 0) this.stop();
  }

  stop(): void {
    if (this.stopping) return;
    this.stopped.abort();
    this.onIdle();
    for (const follower of [...this.followers]) follower.wake();
  }

  /** One look at the store (and log); true when what the followers see changed. */
  protected abstract read(): Promise<boolean>;

  protected wakeAll(): void {
    this.version += 1;
    for (const follower of [...this.followers]) follower.wake();
  }

  private async loop(): Promise<void> {
    const { changes } = this.adapters;
    while (!this.stopping) {
      const seen = changes.rung;
      try {
        if (await this.read()) this.wakeAll();
      } catch {
        // A failed look changes nothing; the next signal or the resync looks again.
      }
      await changes.wait(seen, this.resyncMs, this.stopped.signal);
    }
  }
}

/**
 * A followed deployment: one record read and one log read per change signal, whatever the number of
 * streams; they share the record it read last (`record`) instead of each holding its own.
 */
export class DeploymentWatch extends Watch {
  /** The record as last read (null: deleted or not visible to the org); undefined before any read. */
  record: DeploymentRecord | null | undefined = undefined;
  private etag: string | null | undefined = undefined;
  private size = 0;
  private readonly ref: DeploymentRef;

  constructor(adapters: WatchAdapters, ref: DeploymentRef, resyncMs: number, onIdle: () => void) {
    super(adapters, resyncMs, onIdle);
    this.ref = ref;
  }

  /** Gives the watch a record read elsewhere (the request's own read) if it has none yet. */
  seed(record: DeploymentRecord): void {
    if (this.record === undefined) this.record = record;
  }

  protected async read(): Promise<boolean> {
    const record = await this.adapters.store.get(this.ref);
    const log = await this.adapters.artifacts.readLogFrom(this.ref.deploymentId, this.size);
    const etag = record?.etag ?? null;
    if (etag === this.etag && log.next === this.size) return false;
    this.record = record;
    this.etag = etag;
    this.size = log.next;
    return true;
  }
}

/** Watches by key in this process: made on first follow, dropped when their last follower leaves. */
export class Watches<W extends Watch> {
  private readonly watches = new Map<string, W>();
  private readonly make: (key: string, onIdle: () => void) => W;

  constructor(make: (key: string, onIdle: () => void) => W) {
    this.make = make;
  }

  get(key: string): W {
    let watch = this.watches.get(key);
    if (watch === undefined) {
      const created: W = this.make(key, () => {
        if (this.watches.get(key) === created) this.watches.delete(key);
      });
      watch = created;
      this.watches.set(key, watch);
    }
    return watch;
  }

  /** Watches running now (tests, metrics). */
  get size(): number {
    return this.watches.size;
  }

  stopAll(): void {
    for (const watch of [...this.watches.values()]) watch.stop();
  }
}
