/**
 * Fencing. Several workers compete for the queue; a worker that stalls past its lock (a long GC pause,
 * a frozen container, a network cut the broker does not see) can wake up after another delivery took
 * its deployment over. Every run therefore holds a lease — the epoch in the record (`lease`) that its
 * first write bumped — and confirms it still holds it before any side effect another owner could be
 * relying on. A run that lost it makes no further side effect at all, compensation included: the
 * owner compensates.
 *
 * The remaining window: a check and the call it guards are two steps. A run that stalls between them
 * (after the check, before the ARM request leaves) still sends that one request late. Owners tolerate
 * such a late action (the builder recreates a build container group deleted under a running build).
 */

/**
 * Resolves true while the run holds its deployment's lease (read from the store, not remembered);
 * false once another delivery took the deployment over or the run lost its job lock. On false the
 * caller makes no side effect and stops; the run has already been told to stop, and the worker logs
 * `action` as skipped. A store that cannot be read rejects: the caller treats that as any failure.
 */
export type LeaseCheck = (action: string) => Promise<boolean>;

/** `name` of the abort reason of a run that lost its lease (or its lock). */
export const LEASE_LOST = 'LeaseLost';

/** Whether a run's signal was aborted because the run lost its deployment to another delivery. */
export function isLeaseLost(reason: unknown): boolean {
  return reason instanceof Error && reason.name === LEASE_LOST;
}

/** For tests and tools that run a step outside the workflow: a lease that is always held. */
export const alwaysHeld: LeaseCheck = () => Promise.resolve(true);
