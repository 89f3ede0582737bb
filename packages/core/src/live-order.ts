import type { DeploymentRecord } from './deployment.ts';

/**
 * An app's live deployment only moves forward: a deployment older than the live one never takes the
 * traffic. "Older" is the order of submission (`createdAt`), not of completion, so a retry that
 * finishes late still counts as what it is: the earlier request. Two deployments submitted in the
 * same millisecond are not ordered: neither supersedes the other. (Their ids cannot break the tie:
 * after the time prefix they are random, and would contradict the queue's order half the time —
 * the later of two back-to-back submissions was superseded by the earlier.)
 */
export function isOlderDeployment(a: Pick<DeploymentRecord, 'createdAt' | 'id'>, b: Pick<DeploymentRecord, 'createdAt' | 'id'>): boolean {
  return a.createdAt < b.createdAt;
}

export interface LiveOrderOptions {
  /**
   * Hook for rollback (not built yet): an explicit request to put an older deployment live again is
   * the one exception to the forward-only rule. The deploy step passes false today.
   */
  explicitRollback?: boolean;
}

/**
 * The live deployment that supersedes `record` (it is newer, so `record` must not take the traffic),
 * or null when `record` may go live.
 */
export function supersededBy(record: DeploymentRecord, live: DeploymentRecord | null, options: LiveOrderOptions = {}): DeploymentRecord | null {
  if (live === null || live.id === record.id || options.explicitRollback === true) return null;
  return isOlderDeployment(record, live) ? live : null;
}
