import { reusedBuildOf } from './build-reuse.ts';
import type { Step } from './step.ts';
import { buildJobOf } from './step.ts';
import { skippedWithoutBuild } from './sync.ts';

/**
 * Step 3: an isolated place to build (a work dir locally; an ACI container group running kaniko in
 * Azure). A deployment that reuses an earlier build (build-reuse.ts) creates none.
 */
export const sandboxStep: Step = {
  name: 'sandbox',
  skip: (context) => skippedWithoutBuild(context, 'no sandbox needed'),
  async invoke(context) {
    const reused = reusedBuildOf(context.record);
    if (reused === null) return context.adapters.builder.createSandbox(buildJobOf(context));
    context.log(`reusing the image built by ${reused.builtBy}: no sandbox needed`);
    return { reusedFrom: reused.builtBy };
  },
  async compensate(context, output) {
    // Unconditional: a build that found its reused image gone made a sandbox after all.
    await context.adapters.builder.deleteSandbox(context.record.id);
    if (typeof output.reusedFrom !== 'string') context.log('sandbox removed');
  },
};
