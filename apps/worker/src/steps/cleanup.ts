import { DeployError } from '@zepid/core';
import type { Step } from './step.ts';

/**
 * Step 6: remove what only the build needed (sandbox, build context). Keeps the image and the
 * revision: rollback needs them. A failure here is logged, not fatal: the app is already live.
 */
export const cleanupStep: Step = {
  name: 'cleanup',
  async invoke(context) {
    const { adapters, record, log } = context;
    // A reused build made no sandbox and no context (in Azure, that spares an ARM DELETE).
    if (typeof record.steps.build.output.reusedFrom === 'string') {
      log('nothing to remove: the build was reused');
      return { leftovers: 0 };
    }
    // The sandbox and the context are named after the deployment: a run fenced off must not remove
    // them under the delivery that owns the deployment now (it cleans up itself).
    if (!(await context.fence('removing the sandbox and the build context'))) throw new DeployError('CANCELLED', 'This run lost its lease');
    const problems: string[] = [];
    await adapters.builder.deleteSandbox(record.id).catch((error: unknown) => problems.push(`sandbox: ${String(error)}`));
    await adapters.artifacts.deleteContext(record.id).catch((error: unknown) => problems.push(`build context: ${String(error)}`));
    for (const problem of problems) log(`could not remove ${problem}`, 'warn');
    log('sandbox and build context removed');
    return { leftovers: problems.length };
  },
};
