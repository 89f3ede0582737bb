import { createHash } from 'node:crypto';
import type { BuildPlan, BuiltImage, DeploymentRecord } from '@zepid/core';
import { asDeployError } from '@zepid/core';
import type { StepContext, StepOutput } from './step.ts';

/**
 * Build reuse. When a project's source and build settings match an earlier successful build, the
 * image that build produced is deployed again instead of building: validate decides (before sync
 * packs a context and, in Azure, sandbox starts a kaniko container group), sync and sandbox then
 * skip, and build hands over the earlier image.
 *
 * The build key is a sha256 over what decides the image, except env variable values: the source
 * digest, the build plan, the env variable names and the builder's identity. Values reach builds
 * too (npm scripts read them), but no hash of a secret is stored anywhere: they are compared with
 * the candidate deployment's through the secret store at decision time, and a candidate whose values
 * are gone (retention) is not reused.
 *
 * The reused image belongs to the deployment that built it: compensating a deployment that reused it
 * never removes it (build.ts), and the runtimes keep an image while any revision runs from it.
 */

/** What validate recorded: the image to deploy instead of building, and who built it. */
export interface ReusedBuild {
  /** The deployment whose build produced the image. */
  builtBy: string;
  image: BuiltImage;
}

export function buildKey(input: { sourceDigest: string; plan: BuildPlan; envVariableNames: readonly string[]; builder: string }): string {
  const plan = JSON.stringify(input.plan, Object.keys(input.plan).sort());
  const canonical = JSON.stringify({ source: input.sourceDigest, plan, env: [...input.envVariableNames].sort(), builder: input.builder });
  return `sha256:${createHash('sha256').update(canonical).digest('hex')}`;
}

/** The reuse validate decided on, or null when this deployment builds. */
export function reusedBuildOf(record: DeploymentRecord): ReusedBuild | null {
  const { reusedFrom, reusedImage, reusedDigest } = record.steps.validate.output;
  if (typeof reusedFrom !== 'string' || typeof reusedImage !== 'string') return null;
  return { builtBy: reusedFrom, image: { image: reusedImage, digest: typeof reusedDigest === 'string' ? reusedDigest : null } };
}

/** Validate's output fields for the decision; step outputs carry names and digests only, never values. */
export function reuseOutput(key: string, reused: ReusedBuild | null): StepOutput {
  return { buildKey: key, reusedFrom: reused?.builtBy ?? null, reusedImage: reused?.image.image ?? null, reusedDigest: reused?.image.digest ?? null };
}

/**
 * Looks for the newest completed deployment of the project with the same build key, same env values
 * and an image still in place. Logs why an earlier build is not reused; null means: build.
 */
export async function findReusableBuild(context: StepContext, key: string): Promise<ReusedBuild | null> {
  const { record, adapters, log, signal } = context;
  const candidate = await adapters.store.latestCompletedWithBuildKey(record.orgId, record.projectId, key);
  if (candidate === null || candidate.id === record.id) return null;
  const built = candidate.steps.build.output;
  if (typeof built.image !== 'string') return null;
  // A candidate that itself reused names the deployment that built the image.
  const builtBy = typeof built.reusedFrom === 'string' ? built.reusedFrom : candidate.id;
  const image: BuiltImage = { image: built.image, digest: typeof built.digest === 'string' ? built.digest : null };
  const notReusing = (why: string) => {
    log(`not reusing the image built by ${builtBy}: ${why}; building`);
    return null;
  };

  const envDifference = await differentEnvValues(context, candidate);
  if (envDifference !== null) return notReusing(envDifference);
  let exists: boolean;
  try {
    exists = await adapters.builder.imageExists(image, signal);
  } catch (error) {
    if (signal.aborted) throw error;
    return notReusing(`could not check that its image is still there (${asDeployError(error).message})`);
  }
  if (!exists) return notReusing(`its image ${image.image}${image.digest === null ? '' : `@${image.digest}`} is gone`);
  log(`reusing the image built by ${builtBy} (same source ${record.source.digest} and build settings); not building`);
  return { builtBy, image };
}

/**
 * Null when every env variable has the candidate's value; else why not (names only). The deploy
 * step asks it too, of the deployment whose revision it would keep.
 */
export async function differentEnvValues(context: StepContext, candidate: DeploymentRecord): Promise<string | null> {
  const names = context.record.spec.envVariableNames;
  if (names.length === 0) return null;
  const { secrets } = context.adapters;
  const [ours, theirs] = await Promise.all([secrets.get(context.record.id), secrets.get(candidate.id)]);
  if (names.some((name) => theirs[name] === undefined)) return `the env variable values of ${candidate.id} are no longer stored`;
  const changed = names.filter((name) => ours[name] !== theirs[name]);
  return changed.length === 0 ? null : `env variable ${changed.join(', ')} has another value`;
}
