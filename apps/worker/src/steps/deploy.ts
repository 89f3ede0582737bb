import type { Step } from './step.ts';
import { planOf } from './step.ts';

/** Step 5: a new revision, started and healthy before it gets the traffic. */
export const deployStep: Step = {
  name: 'deploy',
  async invoke(context) {
    const { record, adapters, log, signal } = context;
    const built = record.steps.build.output;
    const info = await adapters.runtime.deploy({
      deploymentId: record.id,
      orgId: record.orgId,
      projectId: record.projectId,
      appName: record.appName,
      environment: record.environment,
      image: String(built.image),
      imageDigest: typeof built.digest === 'string' ? built.digest : null,
      plan: planOf(record),
      containerSize: record.spec.containerSize,
      customDomain: record.spec.customDomain,
      envVariableNames: record.spec.envVariableNames,
      signal,
      log,
    });
    log(`revision ${info.revision} is live at ${info.url}`);
    for (const dns of info.dnsRecords) log(`add DNS record ${dns.type} ${dns.name} → ${dns.value} to serve ${record.spec.customDomain ?? ''}`, 'warn');
    return {
      revision: info.revision,
      url: info.url,
      previousRevision: info.previousRevision,
      dnsRecords: info.dnsRecords.length === 0 ? null : JSON.stringify(info.dnsRecords),
    };
  },
  async compensate(context, output) {
    if (typeof output.revision !== 'string') return;
    await context.adapters.runtime.rollback(
      {
        deploymentId: context.record.id,
        appName: context.record.appName,
        revision: output.revision,
        previousRevision: typeof output.previousRevision === 'string' ? output.previousRevision : null,
      },
      context.log,
    );
  },
};
