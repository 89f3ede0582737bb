import type { DeploymentRecord } from '@zepid/core';
import { asDeployError, DeployError, kindOf, supersededBy } from '@zepid/core';
import { differentEnvValues, reusedBuildOf } from './build-reuse.ts';
import type { Step, StepContext, StepOutput } from './step.ts';
import { planOf } from './step.ts';

/**
 * Step 5: a new revision, started and healthy before it gets the traffic; or, for an identical
 * redeploy, the revision that already serves it, kept as it is.
 */
export const deployStep: Step = {
  name: 'deploy',
  async invoke(context) {
    await refuseOlderThanLive(context);
    const kept = await keepServingRevision(context);
    if (kept !== null) return kept;
    const { record, adapters, log, signal, fence } = context;
    const built = record.steps.build.output;
    const info = await adapters.runtime.deploy({
      deploymentId: record.id,
      orgId: record.orgId,
      projectId: record.projectId,
      appName: record.appName,
      environment: record.environment,
      image: String(built.image),
      imageDigest: typeof built.digest === 'string' ? built.digest : null,
      plan: planOf(record),
      containerSize: record.spec.containerSize,
      customDomain: record.spec.customDomain,
      envVariableNames: record.spec.envVariableNames,
      attempt: record.attempt,
      deadline: stepDeadline(record, context.settings.deploymentTimeoutMs),
      signal,
      log,
      fence,
      reactivateRevision: await rolledBackRevision(context),
    });
    log(`revision ${info.revision} is live at ${info.url}`);
    for (const dns of info.dnsRecords) log(`add DNS record ${dns.type} ${dns.name} → ${dns.value} to serve ${record.spec.customDomain ?? ''}`, 'warn');
    return {
      revision: info.revision,
      url: info.url,
      previousRevision: info.previousRevision,
      kept: false,
      dnsRecords: info.dnsRecords.length === 0 ? null : JSON.stringify(info.dnsRecords),
    };
  },
  async compensate(context, output) {
    if (typeof output.revision !== 'string') return;
    // A kept revision served before this deployment and belongs to the one that started it.
    if (output.kept === true) {
      context.log(`revision ${output.revision} stays live: it served before this deployment, which started nothing`);
      return;
    }
    await context.adapters.runtime.rollback(
      {
        deploymentId: context.record.id,
        appName: context.record.appName,
        revision: output.revision,
        previousRevision: typeof output.previousRevision === 'string' ? output.previousRevision : null,
        fence: context.fence,
      },
      context.log,
    );
  },
};

/**
 * The live deployment only moves forward: traffic never goes to a deployment submitted before the
 * app's live one (an older deployment's retry that finishes late), which ends SUPERSEDED instead.
 * Checked here, right before traffic would move; the queue's sessions run one deployment of a project
 * at a time, so the live one cannot change between this read and the switch (short of a takeover,
 * which the lease fences off). A rollback is the one exception (`explicitRollback`): putting an earlier
 * image back live is what it was asked for.
 */
async function refuseOlderThanLive(context: StepContext): Promise<void> {
  const { record, adapters } = context;
  const live = supersededBy(record, await adapters.store.latestCompleted(record.orgId, record.appName), { explicitRollback: kindOf(record) === 'rollback' });
  if (live === null) return;
  throw new DeployError(
    'SUPERSEDED',
    `${live.id}, submitted after this deployment, is already live on ${record.appName}; an app's live deployment only moves forward, so traffic stays on ${live.result.revision ?? 'it'}`,
    { details: { liveDeploymentId: live.id } },
  );
}

/**
 * Keeping the serving revision, as Container Apps creates no revision for an unchanged template. Only
 * when build reuse was decided (so the image is an earlier one) and the app's live deployment runs
 * that very image, with the same revision settings and env values, and the runtime confirms the
 * revision serves right now: a dead or unhealthy one is replaced, so a redeploy still restarts.
 * Returns the step output when kept; null to start a new revision, having logged why.
 */
async function keepServingRevision(context: StepContext): Promise<StepOutput | null> {
  const { record, adapters, log, signal } = context;
  if (reusedBuildOf(record) === null) return null;
  // A config deployment exists to restart the app with its new env values.
  if (kindOf(record) === 'config') {
    log('env change: a new revision starts with the new values; the old one stops once it serves');
    return null;
  }
  const live = await adapters.store.latestCompleted(record.orgId, record.appName);
  const revision = live?.result.revision ?? null;
  const url = live?.result.url ?? null;
  const notKeeping = (why: string) => {
    log(`cannot keep the live revision${revision === null ? '' : ` ${revision}`}: ${why}; starting a new revision`);
    return null;
  };
  if (live === null || live.id === record.id || revision === null || url === null) return notKeeping(`${record.appName} has none`);
  const image = recordedImage(record.steps.build.output);
  if (live.result.image !== image) return notKeeping(`it runs another image (${live.result.image ?? 'none'})`);
  const setting = differentRevisionSetting(record, live);
  if (setting !== null) return notKeeping(`it was started with another ${setting}`);
  // Compared through the secret store, never logged or stored: the revision runs with the live deployment's values.
  const values = await differentEnvValues(context, live);
  if (values !== null) return notKeeping(values);
  let serving: boolean;
  try {
    serving = await adapters.runtime.isServing({ appName: record.appName, revision, customDomain: record.spec.customDomain }, signal);
  } catch (error) {
    if (signal.aborted) throw error;
    return notKeeping(`could not check that it serves (${asDeployError(error).message})`);
  }
  if (!serving) {
    const domain = record.spec.customDomain === null ? '' : `, or ${record.spec.customDomain} is not bound yet`;
    return notKeeping(`it does not serve right now (stopped, unhealthy or without the traffic${domain})`);
  }
  log(`revision ${revision} already serves this image with the same settings and env values: traffic stays on it; nothing restarted`);
  return { revision, url, previousRevision: null, kept: true, dnsRecords: null };
}

/**
 * Rollback: the revision the rolled-back deployment ran, for the runtime to reactivate when it still
 * exists and matches (Azure); null otherwise.
 */
async function rolledBackRevision(context: StepContext): Promise<string | null> {
  const { record, adapters } = context;
  if (kindOf(record) !== 'rollback' || typeof record.rollbackOf !== 'string') return null;
  const target = await adapters.store.get({ orgId: record.orgId, deploymentId: record.rollbackOf });
  return target?.result.revision ?? null;
}

/**
 * When the deploy step must be done: the attempt's timeout, less a reserve (a tenth, at most 15 s) for
 * the step to record its output and for compensation to find it, so waits for health or for a
 * certificate end before the timeout stops the step with nothing recorded.
 */
export function stepDeadline(record: DeploymentRecord, deploymentTimeoutMs: number): number | undefined {
  const started = Date.parse(record.attemptStartedAt ?? '');
  if (Number.isNaN(started)) return undefined;
  return started + deploymentTimeoutMs - Math.min(15_000, Math.floor(deploymentTimeoutMs / 10));
}

/** The image as a completed record names it (`result.image`): pinned by digest when there is one. */
export function recordedImage(built: StepOutput): string | null {
  if (typeof built.image !== 'string') return null;
  return typeof built.digest === 'string' ? `${built.image}@${built.digest}` : built.image;
}

/** What the runtime puts into a revision besides the image and env values, by name in the log. */
function revisionSettings(record: DeploymentRecord): Record<string, unknown> {
  const plan = planOf(record);
  const size = record.spec.containerSize;
  return {
    'project kind': plan.kind,
    'start command': plan.start,
    port: plan.port,
    'container size': size === null ? null : { cpu: size.cpu, memory: size.memory },
    'custom domain': record.spec.customDomain?.toLowerCase() ?? null,
    'set of env variable names': [...record.spec.envVariableNames].sort(),
  };
}

/** The first revision setting of `record` that the live deployment's revision was not started with; null when all match. */
function differentRevisionSetting(record: DeploymentRecord, live: DeploymentRecord): string | null {
  const ours = revisionSettings(record);
  let theirs: Record<string, unknown>;
  try {
    theirs = revisionSettings(live);
  } catch {
    return 'build plan (none is recorded)';
  }
  return Object.keys(ours).find((name) => JSON.stringify(ours[name]) !== JSON.stringify(theirs[name])) ?? null;
}
