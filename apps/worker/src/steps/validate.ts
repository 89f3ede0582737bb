import type { BuildPlan, DeploymentRecord, SourceFile } from '@zepid/core';
import { asDeployError, decodeSourceManifest, DeployError, isDeployError, kindOf, mapLimit, planBuild, sourceDigest, STATIC_OUTPUT_CANDIDATES, transientError } from '@zepid/core';
import { buildKey, findReusableBuild, reuseOutput } from './build-reuse.ts';
import type { Step, StepContext, StepOutput } from './step.ts';

/** Object reads in flight while loading a source. */
const OBJECT_READS = 8;

/** The deployment's files, from its manifest and the org's objects; anything missing or altered is SOURCE_INVALID. */
export async function loadSource(context: StepContext): Promise<SourceFile[]> {
  const { orgId, id: deploymentId } = context.record;
  const { artifacts } = context.adapters;
  const stored = await artifacts.getSource({ orgId, deploymentId });
  if (stored === null) throw new DeployError('SOURCE_INVALID', 'The source of this deployment is no longer stored');
  let manifest;
  try {
    manifest = decodeSourceManifest(stored);
  } catch (error) {
    throw new DeployError('SOURCE_INVALID', `The stored source manifest is unreadable: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (sourceDigest(manifest.files) !== context.record.source.digest) {
    throw new DeployError('SOURCE_INVALID', 'The stored source does not match the digest recorded at upload');
  }
  return mapLimit(manifest.files, OBJECT_READS, async (file) => {
    let data;
    try {
      data = await artifacts.getObject(orgId, file.sha256);
    } catch (error) {
      if (isDeployError(error) && error.code === 'SOURCE_INVALID') {
        throw new DeployError('SOURCE_INVALID', `The stored content of ${file.path} is corrupt (it no longer hashes to sha256 ${file.sha256})`, { cause: error });
      }
      throw error;
    }
    if (data === null) throw new DeployError('SOURCE_INVALID', `The content of ${file.path} (sha256 ${file.sha256}) is no longer stored`);
    return { path: file.path, data };
  });
}

/** One line a user reads to know what will run: what was detected and each command. */
export function describePlan(plan: BuildPlan): string {
  const parts = [`project kind: ${plan.kind}`, `framework: ${plan.framework}`];
  if (plan.packageManager !== null) parts.push(`package manager: ${plan.packageManager.tool ?? plan.packageManager.name}`);
  if (plan.install !== null) parts.push(`install: ${plan.install}`);
  if (plan.build !== null) parts.push(`build: ${plan.build}`);
  if (plan.start !== null) parts.push(`start: ${plan.start}`);
  if (plan.kind === 'static') parts.push(`output: ${plan.outputDir ?? `first of ${STATIC_OUTPUT_CANDIDATES.join(', ')} with an index.html`}`);
  return parts.join('; ');
}

/** Step 1: the source is there and intact, the project is something we can run, secrets are in place. */
export const validateStep: Step = {
  name: 'validate',
  async invoke(context) {
    const { record, adapters, log } = context;
    if (kindOf(record) !== 'build') return validateWithoutBuild(context);
    log(`validating ${record.source.fileCount} files (${record.source.bytes} bytes) of ${record.projectId} for ${record.environment}`);
    const files = await loadSource(context);
    const plan = planBuild(new Map(files.map((file) => [file.path, file.data])), record.spec);
    log(describePlan(plan));
    if (plan.packageManager !== null) log(`package manager: ${plan.packageManager.reason}`);
    await checkEnvValues(context);
    // Decided here, before sync and sandbox spend anything on a build that is not needed.
    const key = buildKey({ sourceDigest: record.source.digest, plan, envVariableNames: record.spec.envVariableNames, builder: adapters.builder.identity });
    // A redeploy (POST /deploy/:id/redeploy) is asked to build: what the user wants when an image of
    // the same source exists is a fresh build (package caches still make it faster), not that image.
    const redeployOf = record.redeployOf ?? null;
    if (redeployOf !== null) log(`redeploy of ${redeployOf}: building its source again (an earlier image of the same source is not reused; package caches are)`);
    const reused = redeployOf === null ? await findReusableBuild(context, key) : null;
    return { kind: plan.kind, plan: JSON.stringify(plan), ...reuseOutput(key, reused) };
  },
};

async function checkEnvValues(context: StepContext): Promise<void> {
  const { record, adapters, log } = context;
  if (record.spec.envVariableNames.length === 0) return;
  const stored = Object.keys(await adapters.secrets.get(record.id));
  const missing = record.spec.envVariableNames.filter((name) => !stored.includes(name));
  if (missing.length > 0) throw new DeployError('SOURCE_INVALID', `Env variables missing from the secret store: ${missing.join(', ')}`);
  log(`env variables: ${record.spec.envVariableNames.join(', ')} (values in the secret store)`);
}

/**
 * A rollback or config deployment builds nothing: it runs the image of `imageOf` (the deployment that
 * built it), with that deployment's recorded build plan. The source is not loaded or planned again.
 * The image must still be kept (retention marks the ones it removed with `imageRemovedAt`); the
 * output is build reuse's, so sync, sandbox and build skip and deploy finds the image where a reused
 * build puts it.
 */
async function validateWithoutBuild(context: StepContext): Promise<StepOutput> {
  const { record, adapters, log, signal } = context;
  const kind = kindOf(record);
  const imageOf = record.imageOf ?? null;
  if (imageOf === null) throw new DeployError('SOURCE_INVALID', `This ${kind} deployment names no deployment whose image it runs (imageOf)`);
  const source = (await adapters.store.get({ orgId: record.orgId, deploymentId: imageOf })) ?? (await recordRunningImageOf(context, imageOf));
  if (source === null) throw new DeployError('SOURCE_INVALID', `The image of ${imageOf} is no longer kept: that deployment is gone`);
  const built = source.steps.build.output;
  const plan = source.steps.validate.output.plan;
  if (typeof built.image !== 'string' || typeof plan !== 'string') {
    throw new DeployError('SOURCE_INVALID', `The image of ${imageOf} is no longer kept: that deployment recorded no image or build plan`);
  }
  if (typeof built.imageRemovedAt === 'string') {
    throw new DeployError('SOURCE_INVALID', `The image of ${imageOf} is no longer kept: retention removed it at ${built.imageRemovedAt} (KEEP_IMAGES_PER_APP)`);
  }
  const image = { image: built.image, digest: typeof built.digest === 'string' ? built.digest : null };
  let exists: boolean;
  try {
    exists = await adapters.builder.imageExists(image, signal);
  } catch (error) {
    if (signal.aborted) throw error;
    throw transientError(`Could not check that the image of ${imageOf} is still there: ${asDeployError(error).message}`, error);
  }
  if (!exists) throw new DeployError('SOURCE_INVALID', `The image of ${imageOf} is no longer kept: ${image.image}${image.digest === null ? '' : `@${image.digest}`} is gone`);
  const parsed = JSON.parse(plan) as BuildPlan;
  const what = kind === 'rollback' ? `rollback to ${record.rollbackOf ?? imageOf}` : 'env change (config)';
  log(`${what}: runs the image built by ${imageOf} (${image.image}${image.digest === null ? '' : `@${image.digest}`}); nothing is built`);
  log(describePlan(parsed));
  await checkEnvValues(context);
  // No build key: this deployment built nothing, and later builds find the one that did.
  return { kind: parsed.kind, plan, buildKey: null, reusedFrom: imageOf, reusedImage: image.image, reusedDigest: image.digest };
}

/**
 * When the deployment that built the image is gone (its environment was deleted while another one
 * kept running its image): the rolled-back deployment, or the app's live one, ran the same image and
 * recorded the same plan and image.
 */
async function recordRunningImageOf(context: StepContext, imageOf: string): Promise<DeploymentRecord | null> {
  const { record, adapters } = context;
  const candidates = [
    typeof record.rollbackOf === 'string' ? await adapters.store.get({ orgId: record.orgId, deploymentId: record.rollbackOf }) : null,
    await adapters.store.latestCompleted(record.orgId, record.appName),
  ];
  return candidates.find((candidate) => candidate !== null && (candidate.imageOf ?? candidate.steps.build.output.reusedFrom) === imageOf) ?? null;
}
