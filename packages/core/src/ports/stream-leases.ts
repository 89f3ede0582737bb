import type { Lifecycle } from './lifecycle.ts';

/**
 * Stream leases: the open event streams (SSE) of each token, counted across every API replica, so
 * the per-token cap (SSE_MAX_STREAMS_PER_TOKEN, 429 beyond) holds however many replicas serve the
 * token. One lease per open stream, held by the replica serving it: renewed by that replica's
 * heartbeat, deleted when the stream ends, and counted only until it expires, so the streams of a
 * replica that crashed stop counting after one lease lifetime.
 *
 * `key` is the token's hash (never the token); `orgId` is the token's organization (the partition).
 * Leaves out: which replica holds a lease, listing them.
 */
export interface StreamLeaseStore extends Lifecycle {
  /**
   * Opens a lease expiring at `now + ttlMs` unless `limit` unexpired leases of `key` are held,
   * atomically across replicas: the lease id, or null at the cap.
   */
  acquire(orgId: string, key: string, limit: number, ttlMs: number, now: Date): Promise<string | null>;
  /** Moves the expiry of these leases of `key` (still held) to `now + ttlMs`: the holder's heartbeat. */
  renew(orgId: string, key: string, ids: readonly string[], ttlMs: number, now: Date): Promise<void>;
  /** Ends a lease (its stream closed); one already gone is fine. */
  release(orgId: string, key: string, id: string): Promise<void>;
}
