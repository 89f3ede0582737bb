import type { BuiltImage } from '@zepid/core';
import { reusedBuildOf } from './build-reuse.ts';
import type { Step, StepContext, StepOutput } from './step.ts';
import { buildJobOf } from './step.ts';
import { packContext, skippedWithoutBuild } from './sync.ts';

/**
 * Step 4: the build runs to its end in the sandbox and yields an image, or, when validate chose to
 * reuse an earlier build (build-reuse.ts), hands over that build's image without building.
 */
export const buildStep: Step = {
  name: 'build',
  // Nothing is built; the output still names the image (image, digest, reusedFrom) for deploy and the result.
  skip(context) {
    if (skippedWithoutBuild(context, 'nothing built') === null) return null;
    const reused = reusedBuildOf(context.record);
    return reused === null ? null : { image: reused.image.image, digest: reused.image.digest, reusedFrom: reused.builtBy };
  },
  async invoke(context) {
    const { adapters, log, signal } = context;
    const reused = reusedBuildOf(context.record);
    if (reused === null) return built(context, await adapters.builder.build(buildJobOf(context)));
    // Checked again: a retry can run long after validate chose the image.
    if (await adapters.builder.imageExists(reused.image, signal)) {
      log(`reusing the image built by ${reused.builtBy}: ${describe(reused.image)}; not building`);
      return { image: reused.image.image, digest: reused.image.digest, reusedFrom: reused.builtBy };
    }
    log(`the image built by ${reused.builtBy} (${describe(reused.image)}) is gone since validate chose it; building after all`, 'warn');
    const job = { ...buildJobOf(context), contextUri: (await packContext(context)).contextUri };
    await adapters.builder.createSandbox(job);
    return built(context, await adapters.builder.build(job));
  },
  async compensate(context, output) {
    if (typeof output.image !== 'string') return;
    // The image of an earlier build stays: its own deployment (and maybe others) still runs it.
    if (typeof output.reusedFrom === 'string') {
      context.log(`image kept: it was built by ${output.reusedFrom}`);
      return;
    }
    await context.adapters.builder.deleteImage(context.record.id, output.image);
    context.log('image removed');
  },
};

function built(context: StepContext, image: BuiltImage): StepOutput {
  context.log(`built ${describe(image)}`);
  return { image: image.image, digest: image.digest, reusedFrom: null, ...(typeof image.outputDir === 'string' ? { outputDir: image.outputDir } : {}) };
}

function describe(image: BuiltImage): string {
  return `${image.image}${image.digest === null ? '' : ` (${image.digest})`}`;
}
