import type { FastifyReply } from 'fastify';
import type { DeploymentRecord, Telemetry } from '@zepid/core';

/**
 * What a route that starts a deployment from an earlier one (rollback, redeploy) does once the
 * service answered: a replay of its Idempotency-Key says so in a header; a new deployment is counted
 * (DeploymentQueued) and logged with `fields` naming what it derives from.
 */
export function noteDerivedQueued(
  reply: FastifyReply,
  telemetry: Pick<Telemetry, 'event'>,
  outcome: { record: DeploymentRecord; replayed: boolean },
  fields: Record<string, string>,
  message: string,
): void {
  const { record, replayed } = outcome;
  if (replayed) {
    void reply.header('idempotent-replayed', 'true');
    return;
  }
  telemetry.event('DeploymentQueued', { deploymentId: record.id, orgId: record.orgId, projectId: record.projectId, environment: record.environment });
  reply.request.log.info({ deploymentId: record.id, ...fields }, message);
}
