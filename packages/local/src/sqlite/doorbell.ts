import type { FSWatcher } from 'node:fs';
import { closeSync, openSync, utimesSync, watch } from 'node:fs';

/** setTimeout's largest delay; longer waits are cut to it (the caller looks again and waits on). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Tells the embedded queue's receivers that a job may have become deliverable, so they look at once
 * instead of polling. The API and the worker are separate processes sharing one SQLite file, so the
 * signal crosses processes through a file beside the database (`<database>-doorbell`): a publisher
 * touches it after its transaction commits, and receivers watch it with fs.watch (inotify, kqueue…).
 * Publishers in the same process as the receiver also wake it directly, without the file round trip.
 *
 * A ring carries no data: it only says "look again". Where watching a file is unreliable (network
 * filesystems, some container bind mounts) a ring from another process can be missed, so receivers
 * also look on a slow fallback poll (the queue's `fallbackPollMs`).
 *
 * `rung` counts the rings (own and observed) in this process. A receiver reads it before looking at
 * the table and passes it to `wait`, which returns at once if a ring came in between: a ring is
 * never lost between "nothing there" and "going to sleep".
 */
export class Doorbell {
  /** The file rung across processes; null for an in-memory database (one process only). */
  readonly path: string | null;
  private count = 0;
  private readonly waiters = new Set<() => void>();
  private watcher: FSWatcher | null = null;

  constructor(path: string | null) {
    this.path = path;
  }

  /** The doorbell of a database file: `<database>-doorbell` beside it (none for `:memory:`). */
  static beside(databasePath: string): Doorbell {
    return new Doorbell(databasePath === ':memory:' || databasePath === '' ? null : `${databasePath}-doorbell`);
  }

  get rung(): number {
    return this.count;
  }

  /** Whether this process currently holds a file watcher (closed by `close`). */
  get watching(): boolean {
    return this.watcher !== null;
  }

  /** Call after the transaction that made a job deliverable (or scheduled it) has committed. */
  ring(): void {
    this.wake();
    if (this.path === null) return;
    try {
      const now = new Date();
      utimesSync(this.path, now, now);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') return;
      // Not there yet (or removed): creating it is the ring; watchers attach to the new file on their next wait.
      try {
        closeSync(openSync(this.path, 'a', 0o600));
      } catch {
        // The job is committed whatever happens here; receivers in other processes find it on their fallback poll.
      }
    }
  }

  /**
   * Resolves when a ring comes after `seen` (see `rung`), after `ms`, or when `signal` aborts,
   * whichever is first. Starts watching the file on first use.
   */
  wait(seen: number, ms: number, signal?: AbortSignal): Promise<void> {
    if (this.count !== seen || signal?.aborted === true) return Promise.resolve();
    this.listen();
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.min(Math.max(0, ms), MAX_TIMER_MS));
      signal?.addEventListener('abort', done, { once: true });
      this.waiters.add(done);
    });
  }

  /** Stops watching the file (no handle is left to keep the process alive) and wakes every waiter. */
  close(): void {
    this.unwatch();
    this.wake();
  }

  private wake(): void {
    this.count += 1;
    for (const waiter of [...this.waiters]) waiter();
  }

  private listen(): void {
    if (this.watcher !== null || this.path === null) return;
    try {
      closeSync(openSync(this.path, 'a', 0o600));
      // Not persistent: a waiting receiver's own timer keeps the process alive, not the watcher.
      const watcher = watch(this.path, { persistent: false }, (event) => {
        // 'rename': the file was removed or replaced, so this watch sees no more rings; the next wait watches the new file.
        if (event === 'rename') this.unwatch();
        this.wake();
      });
      // Dropped, not retried here (a failing watch must not spin): the next wait watches again.
      watcher.on('error', () => this.unwatch());
      this.watcher = watcher;
    } catch {
      // Cannot watch here (no inotify instances left, unsupported filesystem): the fallback poll still finds jobs.
    }
  }

  private unwatch(): void {
    this.watcher?.close();
    this.watcher = null;
  }
}
