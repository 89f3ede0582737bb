import type { ApiAdapters } from '@zepid/core';
import { sweepObjects } from '@zepid/core';

const BATCH = 500;

/**
 * Retention: removes finished deployments of one org older than `cutoff` with their artifacts and
 * secrets, except the newest completed deployment of each app (its revision serves traffic and its
 * secrets are referenced by the running app). Then sweeps the org's file objects that no remaining
 * manifest names and that nothing used for OBJECT_RETENTION.graceMs (core's source.ts).
 */
export async function cleanupFinished(adapters: ApiAdapters, orgId: string, cutoff: Date, dryRun: boolean, now: Date) {
  const candidates = await adapters.store.listFinishedBefore(orgId, cutoff, BATCH + 1);
  const batch = candidates.slice(0, BATCH);
  const removed = { deployments: 0, artifacts: 0, secrets: 0, objects: 0, objectBytes: 0 };
  const deploymentIds: string[] = [];
  const kept: { deploymentId: string; reason: string }[] = [];
  const live = new Map<string, string | null>();

  for (const record of batch) {
    if (!live.has(record.appName)) live.set(record.appName, (await adapters.store.latestCompleted(orgId, record.appName))?.id ?? null);
    if (live.get(record.appName) === record.id) {
      kept.push({ deploymentId: record.id, reason: 'serves the app\'s traffic' });
      continue;
    }
    deploymentIds.push(record.id);
    if (dryRun) continue;
    removed.artifacts += await adapters.artifacts.deleteAll({ orgId, deploymentId: record.id });
    if (record.spec.envVariableNames.length > 0) {
      await adapters.secrets.delete(record.id);
      removed.secrets += record.spec.envVariableNames.length;
    }
    await adapters.store.delete({ orgId, deploymentId: record.id });
    removed.deployments += 1;
  }
  if (!dryRun) {
    const swept = await sweepObjects(adapters.artifacts, orgId, now);
    removed.objects = swept.objects;
    removed.objectBytes = swept.bytes;
  }
  return { removed, deploymentIds, kept, more: candidates.length > BATCH };
}
