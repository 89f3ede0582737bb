import type { DeploymentRecord } from './deployment.ts';
import { DeployError, isDeployError } from './errors.ts';
import type { DeploymentStore, DeploymentRef } from './ports/store.ts';
import type { DeploymentEvent } from './state-machine.ts';
import { apply } from './state-machine.ts';

export type Clock = () => Date;
export const systemClock: Clock = () => new Date();

/**
 * Read, decide, write conditionally on the etag; on a concurrent write, read again and decide again.
 * `decide` sees the current record and returns the events to apply, or null to leave it as it is.
 * Every status change of a deployment goes through here and the state machine.
 *
 * `known`: a record the caller wrote itself a moment ago (the worker, step after step). The first try
 * decides on it without reading; a stale etag makes the write fail, and the loop reads and decides again.
 */
export async function updateDeployment(
  store: DeploymentStore,
  ref: DeploymentRef,
  decide: (current: DeploymentRecord) => DeploymentEvent[] | null,
  clock: Clock = systemClock,
  known?: DeploymentRecord,
): Promise<DeploymentRecord> {
  for (let attempt = 1; ; attempt += 1) {
    const current = attempt === 1 && known !== undefined ? known : await store.get(ref);
    if (current === null) throw new DeployError('NOT_FOUND', `Deployment ${ref.deploymentId} not found`);
    const events = decide(current);
    if (events === null || events.length === 0) return current;
    const now = clock();
    const next = events.reduce((record, event) => apply(record, event, now), current);
    try {
      return await store.replace(next);
    } catch (error) {
      if (!isDeployError(error) || error.code !== 'CONCURRENT_UPDATE' || attempt >= 10) throw error;
    }
  }
}

/** Exponential back-off with full jitter: 1 s, 2 s, 4 s … capped, randomised to spread retries. */
export function backoffMs(retry: number, baseMs = 1000, capMs = 60_000, random: () => number = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, retry - 1));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
