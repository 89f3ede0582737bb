import type { ApiAdapters, Clock, DeployRequest, DeploymentRecord, Logger } from '@zepid/core';
import {
  DeployError,
  apply,
  quotaExceeded,
  appName,
  encodeSourceBundle,
  isTerminal,
  jobFor,
  newDeploymentId,
  newDeploymentRecord,
  sha256Hex,
  sourceDigest,
  updateDeployment,
} from '@zepid/core';

export interface DeploymentServiceOptions {
  maxActivePerOrg: number;
  clock: Clock;
  logger: Logger;
}

/**
 * What the API does with deployments: record and queue them, cancel and retry them. It never builds
 * or deploys: the worker does. Source and secrets are stored before the record, so a record never
 * points at nothing; if recording fails they are removed again.
 */
export class DeploymentService {
  private readonly adapters: ApiAdapters;
  private readonly options: DeploymentServiceOptions;

  get maxActivePerOrg(): number {
    return this.options.maxActivePerOrg;
  }

  constructor(adapters: ApiAdapters, options: DeploymentServiceOptions) {
    this.adapters = adapters;
    this.options = options;
  }

  /** Returns the new (or, for a repeated Idempotency-Key with the same body, the earlier) deployment. */
  async submit(
    request: DeployRequest,
    idempotency: { key: string; body: unknown } | null,
    traceparent: string | null,
  ): Promise<{ record: DeploymentRecord; replayed: boolean }> {
    const { store, intake, artifacts, secrets } = this.adapters;
    const requestHash = idempotency === null ? null : sha256Hex(JSON.stringify(idempotency.body));
    if (idempotency !== null && requestHash !== null) {
      const earlier = await store.findByIdempotencyKey(request.orgId, idempotency.key);
      if (earlier !== null) return { record: this.replay(earlier, requestHash), replayed: true };
    }

    // Cheap early refusal; the intake checks again atomically where the store can.
    const active = await store.countActive(request.orgId);
    if (active >= this.options.maxActivePerOrg) throw quotaExceeded(active, this.options.maxActivePerOrg);

    const id = newDeploymentId();
    const record = newDeploymentRecord(
      {
        id,
        orgId: request.orgId,
        projectId: request.projectId,
        userId: request.userId,
        projectName: request.projectName,
        environment: request.environment,
        appName: appName(request.orgId, request.projectId, request.environment),
        spec: {
          customDomain: request.customDomain,
          containerSize: request.containerSize,
          envVariableNames: Object.keys(request.envVariables).sort(),
          buildCommand: request.buildCommand,
          startCommand: request.startCommand,
          port: request.port,
          historyMessageCount: request.historyMessages.length,
        },
        source: {
          digest: sourceDigest(request.files),
          fileCount: request.files.length,
          bytes: request.files.reduce((sum, file) => sum + file.data.length, 0),
        },
        idempotency: idempotency === null || requestHash === null ? null : { key: idempotency.key, requestHash },
      },
      this.options.clock(),
    );

    await artifacts.putSource(id, encodeSourceBundle({ files: request.files, historyMessages: request.historyMessages }));
    await secrets.put(id, request.envVariables);
    try {
      const created = await intake.submit(record, jobFor(record, traceparent), { maxActivePerOrg: this.options.maxActivePerOrg });
      return { record: created, replayed: false };
    } catch (error) {
      await this.discard(id);
      // Two requests with one Idempotency-Key raced: the loser answers with the winner's deployment.
      if (error instanceof DeployError && error.code === 'CONFLICT' && idempotency !== null && requestHash !== null) {
        const winner = await store.findByIdempotencyKey(request.orgId, idempotency.key);
        if (winner !== null) return { record: this.replay(winner, requestHash), replayed: true };
      }
      throw error;
    }
  }

  private replay(earlier: DeploymentRecord, requestHash: string): DeploymentRecord {
    if (earlier.idempotency?.requestHash !== requestHash) {
      throw new DeployError('IDEMPOTENCY_CONFLICT', 'This Idempotency-Key was used with a different request body', {
        details: { deploymentId: earlier.id },
      });
    }
    return earlier;
  }

  private async discard(id: string): Promise<void> {
    await Promise.allSettled([this.adapters.artifacts.deleteAll(id), this.adapters.secrets.delete(id)]).then((results) => {
      for (const result of results) {
        if (result.status === 'rejected') this.options.logger.warn({ err: result.reason as unknown, deploymentId: id }, 'could not discard source or secrets');
      }
    });
  }

  /** Queued: cancelled at once. In progress: flagged; the worker stops and undoes what it made. */
  async cancel(orgId: string, deploymentId: string): Promise<DeploymentRecord> {
    return updateDeployment(
      this.adapters.store,
      { orgId, deploymentId },
      (current) => {
        if (isTerminal(current.status)) {
          throw new DeployError('INVALID_STATE', `Deployment is already ${current.status}; only queued or in-progress deployments can be cancelled`, {
            details: { status: current.status },
          });
        }
        return current.cancelRequested ? null : [{ type: 'cancel_requested' }];
      },
      this.options.clock,
    );
  }

  /** A failed or cancelled deployment runs again as a new attempt, from its first unfinished step. */
  async retry(orgId: string, deploymentId: string, traceparent: string | null): Promise<DeploymentRecord> {
    const { store, intake } = this.adapters;
    for (let tries = 0; ; tries += 1) {
      const current = await store.get({ orgId, deploymentId });
      if (current === null) throw new DeployError('NOT_FOUND', `Deployment ${deploymentId} not found`);
      if (current.status !== 'failed' && current.status !== 'cancelled') {
        throw new DeployError('INVALID_STATE', `Deployment is ${current.status}; only failed or cancelled deployments can be retried`, {
          details: { status: current.status },
        });
      }
      const next = apply(current, { type: 'retried' }, this.options.clock());
      try {
        return await intake.resubmit(next, jobFor(next, traceparent), { maxActivePerOrg: this.options.maxActivePerOrg });
      } catch (error) {
        if (error instanceof DeployError && error.code === 'CONCURRENT_UPDATE' && tries < 5) continue;
        throw error;
      }
    }
  }
}

