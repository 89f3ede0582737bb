import type { StepName } from '@zepid/core';
import { STEPS } from '@zepid/core';
import { buildStep } from './build.ts';
import { cleanupStep } from './cleanup.ts';
import { deployStep } from './deploy.ts';
import { sandboxStep } from './sandbox.ts';
import type { Step } from './step.ts';
import { syncStep } from './sync.ts';
import { validateStep } from './validate.ts';

const byName: Record<StepName, Step> = {
  validate: validateStep,
  sync: syncStep,
  sandbox: sandboxStep,
  build: buildStep,
  deploy: deployStep,
  cleanup: cleanupStep,
};

/** The six steps, in order. */
export const steps: readonly Step[] = STEPS.map((name) => byName[name]);
