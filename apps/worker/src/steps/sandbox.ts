import type { Step } from './step.ts';
import { buildJobOf } from './step.ts';

/** Step 3: an isolated place to build (a work dir locally; an ACI container group running kaniko in Azure). */
export const sandboxStep: Step = {
  name: 'sandbox',
  async invoke(context) {
    return context.adapters.builder.createSandbox(buildJobOf(context));
  },
  async compensate(context) {
    await context.adapters.builder.deleteSandbox(context.record.id);
    context.log('sandbox removed');
  },
};
