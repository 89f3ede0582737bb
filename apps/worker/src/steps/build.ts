import type { Step } from './step.ts';
import { buildJobOf } from './step.ts';

/** Step 4: the build runs to its end in the sandbox and yields an image. */
export const buildStep: Step = {
  name: 'build',
  async invoke(context) {
    const image = await context.adapters.builder.build(buildJobOf(context));
    context.log(`built ${image.image}${image.digest === null ? '' : ` (${image.digest})`}`);
    return { image: image.image, digest: image.digest };
  },
  async compensate(context, output) {
    if (typeof output.image !== 'string') return;
    await context.adapters.builder.deleteImage(context.record.id, output.image);
    context.log('image removed');
  },
};
