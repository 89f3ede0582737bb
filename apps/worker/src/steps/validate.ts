import type { SourceFile } from '@zepid/core';
import { decodeSourceBundle, DeployError, planBuild, sourceDigest } from '@zepid/core';
import { buildKey, findReusableBuild, reuseOutput } from './build-reuse.ts';
import type { Step, StepContext } from './step.ts';

export async function loadSource(context: StepContext): Promise<SourceFile[]> {
  const stored = await context.adapters.artifacts.getSource(context.record.id);
  if (stored === null) throw new DeployError('SOURCE_INVALID', 'The source of this deployment is no longer stored');
  const files = decodeSourceBundle(stored).files;
  if (sourceDigest(files) !== context.record.source.digest) {
    throw new DeployError('SOURCE_INVALID', 'The stored source does not match the digest recorded at upload');
  }
  return files;
}

/** Step 1: the source is there and intact, the project is something we can run, secrets are in place. */
export const validateStep: Step = {
  name: 'validate',
  async invoke(context) {
    const { record, adapters, log } = context;
    log(`validating ${record.source.fileCount} files (${record.source.bytes} bytes) of ${record.projectId} for ${record.environment}`);
    const files = await loadSource(context);
    const plan = planBuild(new Map(files.map((file) => [file.path, file.data])), record.spec);
    log(`project kind: ${plan.kind}${plan.install === null ? '' : `; install: ${plan.install}`}${plan.build === null ? '' : `; build: ${plan.build}`}`);
    if (record.spec.envVariableNames.length > 0) {
      const stored = Object.keys(await adapters.secrets.get(record.id));
      const missing = record.spec.envVariableNames.filter((name) => !stored.includes(name));
      if (missing.length > 0) throw new DeployError('SOURCE_INVALID', `Env variables missing from the secret store: ${missing.join(', ')}`);
      log(`env variables: ${record.spec.envVariableNames.join(', ')} (values in the secret store)`);
    }
    // Decided here, before sync and sandbox spend anything on a build that is not needed.
    const key = buildKey({ sourceDigest: record.source.digest, plan, envVariableNames: record.spec.envVariableNames, builder: adapters.builder.identity });
    const reused = await findReusableBuild(context, key);
    return { kind: plan.kind, plan: JSON.stringify(plan), ...reuseOutput(key, reused) };
  },
};
