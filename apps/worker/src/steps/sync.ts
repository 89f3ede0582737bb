import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import * as tar from 'tar';
import { generateDockerfile } from '@zepid/core';
import { reusedBuildOf } from './build-reuse.ts';
import type { Step, StepContext } from './step.ts';
import { planOf } from './step.ts';
import { loadSource } from './validate.ts';

/**
 * Step 2: the source becomes the build context, a tar.gz with a generated Dockerfile when the
 * project has none, stored in the artifact store (Blob Storage in Azure, where kaniko reads it).
 * Compensation deletes the context: a failed or cancelled deployment leaves no blob behind, and a
 * retry packs the source again (cheap next to a build). A deployment that reuses an earlier build
 * (build-reuse.ts) needs no context.
 */
export const syncStep: Step = {
  name: 'sync',
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

/** Packs the source (and a generated Dockerfile) and stores it as the deployment's build context. */
export async function packContext(context: StepContext): Promise<{ contextUri: string; contextBytes: number }> {
  const { record, adapters, log } = context;
  const files = await loadSource(context);
  const plan = planOf(record);
  const dir = await mkdtemp(join(tmpdir(), 'zepid-context-'));
  try {
    for (const file of files) {
      const path = join(dir, file.path);
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, file.data);
    }
    const paths = files.map((file) => file.path);
    if (plan.kind !== 'dockerfile' && !paths.includes('Dockerfile')) {
      await writeFile(join(dir, 'Dockerfile'), generateDockerfile(plan));
      paths.push('Dockerfile');
      log('generated a Dockerfile for the build');
    }
    const chunks: Buffer[] = [];
    const stream = tar.c({ cwd: dir, gzip: true, portable: true, noDirRecurse: true }, paths.sort());
    for await (const chunk of stream) chunks.push(chunk);
    const archive = Buffer.concat(chunks);
    const { uri } = await adapters.artifacts.putContext(record.id, archive);
    log(`build context: ${paths.length} files, ${archive.length} bytes`);
    return { contextUri: uri, contextBytes: archive.length };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
