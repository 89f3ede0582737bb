import type { DeploymentRecord } from './deployment.ts';

/**
 * An app's live deployment only moves forward: a deployment older than the live one never takes the
 * traffic. "Older" is the order of submission (`createdAt`, then id for a tie), not of completion, so
 * a retry that finishes late still counts as what it is: the earlier request.
 */
export function isOlderDeployment(a: Pick<DeploymentRecord, 'createdAt' | 'id'>, b: Pick<DeploymentRecord, 'createdAt' | 'id'>): boolean {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt;
  return a.id < b.id;
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
