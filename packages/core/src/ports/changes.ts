import type { Lifecycle } from './lifecycle.ts';

/**
 * Change signal: tells a reader (an API replica following a deployment for an SSE client) that a
 * deployment record or log may have changed, so it reads the store and the log again. A signal
 * carries no data: the store and the log are the truth, so any replica can serve any stream.
 *
 * Locally: a doorbell file beside the database, rung by every write of the store and every log
 * append, watched with fs.watch by each API process. In Azure: no cross-replica signal exists
 * cheaply, so `wait` ends on a short poll interval and the reader compares the record's etag and
 * the log's length (see the Azure adapter).
 *
 * Leaves out: what changed, which process wrote it, ordering. `rung` counts signals seen in this
 * process; pass it to `wait`, which returns at once if a signal came in between, so none is missed
 * between "read nothing new" and "going to sleep".
 */
export interface ChangeSignal extends Lifecycle {
  readonly rung: number;
  /** Called after a write has committed (store) or been appended (log). */
  ring(): void;
  /** Resolves on a signal after `seen`, after `ms`, or when `signal` aborts. */
  wait(seen: number, ms: number, signal?: AbortSignal): Promise<void>;
}
