import type { ApiAdapters, DeploymentRecord } from '@zepid/core';
import { sweepObjects } from '@zepid/core';

const BATCH = 500;

/** The newest completed deployment of an app, and the revision serving its traffic. */
interface LiveDeployment {
  id: string;
  revision: string | null;
}

/**
 * Retention: removes finished deployments of one org older than `cutoff` with their artifacts and
 * secrets, except the newest completed deployment of each app (its revision serves traffic) and every
 * completed deployment with that same revision: an identical redeploy keeps the serving revision, which
 * still runs with the env values (locally, the secrets; in Azure, the Key Vault references) of the
 * deployment that started it. Nor a completed deployment whose image is still kept (the worker's image
 * retention, KEEP_IMAGES_PER_APP, marks those it removed with `imageRemovedAt`): a rollback to it needs
 * its record (build plan, image, env values), and the record of the deployment that built the image.
 * Then sweeps the org's file objects that no remaining manifest names and
 * that nothing used for OBJECT_RETENTION.graceMs (core's source.ts).
 */
export async function cleanupFinished(adapters: ApiAdapters, orgId: string, cutoff: Date, dryRun: boolean, now: Date) {
  const candidates = await adapters.store.listFinishedBefore(orgId, cutoff, BATCH + 1);
  const batch = candidates.slice(0, BATCH);
  const removed = { deployments: 0, artifacts: 0, secrets: 0, objects: 0, objectBytes: 0 };
  const deploymentIds: string[] = [];
  const kept: { deploymentId: string; reason: string }[] = [];
  const live = new Map<string, LiveDeployment | null>();
  const imageKept = new Map<string, boolean>();
  /** Whether the image `record` ran is still kept (the worker's image retention marks what it removed): a rollback may need it. */
  const keptForRollback = async (record: DeploymentRecord): Promise<boolean> => {
    if (record.status !== 'completed' || typeof record.steps.build.output.image !== 'string') return false;
    const reused = record.steps.build.output.reusedFrom;
    const owner = record.imageOf ?? (typeof reused === 'string' ? reused : record.id);
    if (!imageKept.has(owner)) {
      const built = owner === record.id ? record : await adapters.store.get({ orgId, deploymentId: owner });
      imageKept.set(owner, built !== null && typeof built.steps.build.output.image === 'string' && typeof built.steps.build.output.imageRemovedAt !== 'string');
    }
    return imageKept.get(owner) === true;
  };

  for (const record of batch) {
    if (!live.has(record.appName)) {
      const latest = await adapters.store.latestCompleted(orgId, record.appName);
      live.set(record.appName, latest === null ? null : { id: latest.id, revision: latest.result.revision });
    }
    const reason = keepReason(record, live.get(record.appName) ?? null) ?? ((await keptForRollback(record)) ? 'its image is kept for rollback (KEEP_IMAGES_PER_APP)' : null);
    if (reason !== null) {
      kept.push({ deploymentId: record.id, reason });
      continue;
    }
    deploymentIds.push(record.id);
    // A dry run counts what it would remove where the record says so (deployments, secrets); the
    // artifact files are counted only by deleting them.
    removed.deployments += 1;
    removed.secrets += record.spec.envVariableNames.length;
    if (dryRun) continue;
    removed.artifacts += await adapters.artifacts.deleteAll({ orgId, deploymentId: record.id });
    if (record.spec.envVariableNames.length > 0) await adapters.secrets.delete(record.id);
    await adapters.store.delete({ orgId, deploymentId: record.id });
  }
  if (!dryRun) {
    const swept = await sweepObjects(adapters.artifacts, orgId, now);
    removed.objects = swept.objects;
    removed.objectBytes = swept.bytes;
  }
  return { removed, deploymentIds, kept, more: candidates.length > BATCH };
}

/** Why retention keeps `record`, or null to remove it. */
function keepReason(record: DeploymentRecord, live: LiveDeployment | null): string | null {
  if (live === null) return null;
  if (live.id === record.id) return 'serves the app\'s traffic';
  if (live.revision !== null && record.status === 'completed' && record.result.revision === live.revision) {
    return `its revision ${live.revision} still serves the app's traffic (kept by ${live.id})`;
  }
  return null;
}
