import type { ChangeSignal } from '@zepid/core';

/**
 * The change signal in Azure mode: a poll. Followers wait `pollMs` (or less, when a write in this
 * replica rings), then make one point read of the record (1 RU for a record this size, compared by
 * etag) and one listing of the log's append-blob segments (their committed lengths), and download
 * only what grew.
 *
 * Why a poll rather than the Cosmos DB change feed: the change feed would need a lease container
 * and a processor per replica that reads every org's writes to serve the few deployments someone
 * follows; at the poll interval a follower costs ~1 RU/s and one storage listing per second, paid
 * only while a stream is open, with no new resource to deploy. The latency is the interval
 * (SSE_POLL_MS, 1 s by default), which is below what a person watching a build notices.
 */
export class PollingChangeSignal implements ChangeSignal {
  private readonly pollMs: number;
  private count = 0;
  private readonly waiters = new Set<() => void>();

  constructor(pollMs: number) {
    this.pollMs = pollMs;
  }

  get rung(): number {
    return this.count;
  }

  start(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.ring();
    return Promise.resolve();
  }

  ring(): void {
    this.count += 1;
    for (const waiter of [...this.waiters]) waiter();
  }

  wait(seen: number, ms: number, signal?: AbortSignal): Promise<void> {
    if (this.count !== seen || signal?.aborted === true) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, Math.min(ms, this.pollMs)));
      signal?.addEventListener('abort', done, { once: true });
      this.waiters.add(done);
    });
  }
}
