import { DeployError, generateDockerfile, kindOf } from '@zepid/core';
import { reusedBuildOf } from './build-reuse.ts';
import { packArchive } from './context-archive.ts';
import type { Step, StepContext, StepOutput } from './step.ts';
import { planOf } from './step.ts';
import { loadSource } from './validate.ts';

/**
 * Step 2: the source becomes the build context, a tar.gz (plain tar locally: the artifact store's
 * `contextFormat`) with a generated Dockerfile when the project has none, stored in the artifact
 * store (Blob Storage in Azure, where kaniko reads it).
 * Compensation deletes the context: a failed or cancelled deployment leaves no blob behind, and a
 * retry packs the source again (cheap next to a build). A deployment that reuses an earlier build
 * (build-reuse.ts) needs no context.
 */
export const syncStep: Step = {
  name: 'sync',
  skip: (context) => skippedWithoutBuild(context, 'no build context needed'),
  async invoke(context) {
    const reused = reusedBuildOf(context.record);
    if (reused === null) return packContext(context);
    context.log(`reusing the image built by ${reused.builtBy}: no build context needed`);
    return { reusedFrom: reused.builtBy };
  },
  async compensate(context, output) {
    // Unconditional: a build that found its reused image gone packed a context after all.
    await context.adapters.artifacts.deleteContext(context.record.id);
    if (typeof output.reusedFrom !== 'string') context.log('build context removed');
  },
};

/**
 * A rollback or config deployment runs the image of an earlier deployment (validate chose it): the
 * build's steps are skipped. Their output names the deployment that built the image.
 */
export function skippedWithoutBuild(context: StepContext, why: string): StepOutput | null {
  const { record } = context;
  if (kindOf(record) === 'build') return null;
  const reused = reusedBuildOf(record);
  if (reused === null) throw new DeployError('INTERNAL_ERROR', `The validate step of this ${kindOf(record)} deployment recorded no image to run`);
  context.log(`${kindOf(record)} deployment: runs the image built by ${reused.builtBy}; ${why}`);
  return { reusedFrom: reused.builtBy };
}

/** Packs the source (and a generated Dockerfile) and stores it as the deployment's build context. */
export async function packContext(context: StepContext): Promise<{ contextUri: string; contextBytes: number }> {
  const { record, adapters, log } = context;
  const files = await loadSource(context);
  const plan = planOf(record);
  const entries: { path: string; data: Buffer }[] = [...files];
  if (plan.kind !== 'dockerfile' && !files.some((file) => file.path === 'Dockerfile')) {
    entries.push({ path: 'Dockerfile', data: Buffer.from(generateDockerfile(plan, files.map((file) => file.path))) });
    log('generated a Dockerfile for the build');
  }
  const archive = packArchive(entries, adapters.artifacts.contextFormat);
  const { uri } = await adapters.artifacts.putContext(record.id, archive);
  log(`build context: ${entries.length} files, ${archive.length} bytes`);
  return { contextUri: uri, contextBytes: archive.length };
}
