import type { AppJobMessage, AppRef, Clock, DeploymentRecord, Logger, LogSink, OutboxEvent, WorkerAdapters } from '@zepid/core';
import { setTimeout as sleep } from 'node:timers/promises';
import { ACTIVE_STATUSES, appName, createDeliveries, derivedEventId, ENVIRONMENTS, isDeployError, isTerminal, OBJECT_RETENTION, projectKey, removeAppObjects, sweepObjects, updateDeployment } from '@zepid/core';
import { imageOwner } from './retention.ts';
import type { Settlement } from './workflow.ts';

export interface AppDeletionOptions {
  adapters: WorkerAdapters;
  logger: Logger;
  clock: Clock;
  /**
   * Local mode: frees the app's uid (isolation.ts `release`) once nothing of it remains: called after
   * its processes, revisions and images are gone. Azure has nothing of the kind.
   */
  releaseTenant?: (app: AppRef) => Promise<void>;
  /** While a deployment of the app still runs: how long until the job looks again. */
  busyRetryMs?: number;
  /** OBJECT_UPLOAD_WINDOW_MS: how long the job waits between marking the app's objects and deleting those only it used (core's removeAppObjects). */
  objectUploadWindowMs?: number;
}

/** Page size of the listings (an app's deployments, the project's). */
const PAGE = 100;
/** Pending webhook events of the org read once by a delete job (see the `app.deleted` step). */
const PENDING_READ = 1000;

/**
 * The delete-app job (issue 12): removes everything the app(s) of a project own, after the API marked
 * them deleting (`deletingSince` on the app record). Per app, in an order that any crash can resume
 * from (every step is idempotent, and the records go last, so a redelivery still finds what is left):
 *
 * 1. running deployments are asked to cancel; while one still runs the job hands the session back and
 *    looks again later (a continuation message: the deployment's own job must run to cancel it, and a
 *    redelivery would count against the job's delivery limit);
 * 2. the runtime removes the app (route, revisions): its URL stops answering;
 * 3. the images its deployments ran are deleted, except one a deployment of another environment of
 *    the project still runs or keeps (a reused build shares its image);
 * 4. the source objects only its deployments' manifests name (core's removeAppObjects: marked, then
 *    after OBJECT_UPLOAD_WINDOW_MS deleted unless another manifest names one or an upload looked one
 *    up since); then env values (each deployment's and the app's), artifacts (manifests, logs, contexts);
 * 5. webhook `app.deleted` (after the app's events still in the outbox) and telemetry `AppDeleted`
 *    (once per deletion: `deletionAnnouncedAt` on the app record is written before it is sent);
 * 6. the deployment records, then the app record; locally the app's uid is freed.
 * Then the org's other unused source objects are swept (those past OBJECT_RETENTION's grace).
 */
export class AppDeletion {
  private readonly options: AppDeletionOptions;

  constructor(options: AppDeletionOptions) {
    this.options = options;
  }

  async run(message: AppJobMessage, messageId: string, signal: AbortSignal): Promise<Settlement> {
    const { adapters, logger, clock } = this.options;
    const environments = message.environment === null ? ENVIRONMENTS : [message.environment];
    const busy: string[] = [];
    for (const environment of environments) {
      if (signal.aborted) return { action: 'release' };
      const app: AppRef = { orgId: message.orgId, projectId: message.projectId, environment, appName: appName(message.orgId, message.projectId, environment) };
      const record = await adapters.store.getApp(app.orgId, app.appName);
      const deployments = await this.deploymentsOf(app);
      if (record === null && deployments.length === 0) continue; // never existed, or removed by an earlier delivery
      if (record?.deletingSince == null) {
        // The API marks an app before it publishes the job: an unmarked one was not asked for.
        logger.warn({ appName: app.appName }, 'delete job: the app is not marked deleting; leaving it');
        continue;
      }
      if (await this.cancelRunning(deployments)) {
        busy.push(app.appName);
        continue;
      }
      await this.remove(app, deployments, message, signal);
    }
    if (busy.length > 0) return this.continueLater(message, messageId, busy);
    const swept = await sweepObjects(adapters.artifacts, message.orgId, clock());
    logger.info({ orgId: message.orgId, projectId: message.projectId, environment: message.environment, sweptObjects: swept.objects }, 'delete job done');
    return { action: 'complete' };
  }

  /** Every deployment of the app, any status. */
  private async deploymentsOf(app: AppRef): Promise<DeploymentRecord[]> {
    const all: DeploymentRecord[] = [];
    let cursor: string | null = null;
    do {
      const page = await this.options.adapters.store.listByApp(app.orgId, app.appName, { limit: PAGE, cursor });
      all.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor !== null);
    return all;
  }

  /** Every deployment of the project's other environments: what still uses a shared image. */
  private async othersOf(app: AppRef): Promise<DeploymentRecord[]> {
    const all: DeploymentRecord[] = [];
    let cursor: string | null = null;
    do {
      const page = await this.options.adapters.store.listByProject(app.orgId, app.projectId, { limit: PAGE, cursor });
      all.push(...page.items.filter((record) => record.appName !== app.appName));
      cursor = page.nextCursor;
    } while (cursor !== null);
    return all;
  }

  /** Asks each queued or running deployment to cancel; true while any still runs. */
  private async cancelRunning(deployments: readonly DeploymentRecord[]): Promise<boolean> {
    const { adapters, clock } = this.options;
    let running = false;
    for (const deployment of deployments.filter((record) => ACTIVE_STATUSES.includes(record.status))) {
      const ref = { orgId: deployment.orgId, deploymentId: deployment.id };
      try {
        const after = await updateDeployment(adapters.store, ref, (current) => (isTerminal(current.status) || current.cancelRequested ? null : [{ type: 'cancel_requested' }]), clock);
        if (!isTerminal(after.status)) running = true;
      } catch (error) {
        if (isDeployError(error) && (error.code === 'NOT_FOUND' || error.code === 'INVALID_STATE')) continue;
        throw error;
      }
    }
    return running;
  }

  private async remove(app: AppRef, deployments: readonly DeploymentRecord[], message: AppJobMessage, signal: AbortSignal): Promise<void> {
    const { adapters, logger, clock } = this.options;
    const log: LogSink = (line, level = 'info') => logger[level === 'error' ? 'error' : level === 'warn' ? 'warn' : 'info']({ appName: app.appName }, line);
    await adapters.runtime.removeApp(app, { signal, log });

    // An image belongs to the deployment that built it; another environment's deployment may run it (reuse).
    const ownImages = new Map<string, string>();
    for (const deployment of deployments) {
      const image = deployment.steps.build.output.image;
      if (typeof image === 'string') ownImages.set(imageOwner(deployment), image);
    }
    const usedElsewhere = new Set((await this.othersOf(app)).filter((record) => typeof record.steps.build.output.image === 'string').map(imageOwner));
    for (const [builtBy, image] of ownImages) {
      if (usedElsewhere.has(builtBy)) {
        log(`image of ${builtBy} kept: another environment of ${app.projectId} runs or keeps it`);
        continue;
      }
      await adapters.builder.deleteImage(builtBy, image);
    }
    // Before the manifests go: they say which objects are the app's (a redelivery reads them again).
    const objects = await removeAppObjects(adapters.artifacts, app.orgId, deployments.map((deployment) => deployment.id), {
      uploadWindowMs: this.options.objectUploadWindowMs ?? OBJECT_RETENTION.uploadWindowMs,
      wait: (ms) => sleep(ms, undefined, { signal }),
    });
    log(`source objects only this app used: ${objects.objects} deleted (${objects.bytes} bytes); ${objects.kept} kept (other apps name them, or an upload used them meanwhile)`);
    for (const deployment of deployments) {
      // A finished cleanup (or compensation) removed it already.
      if (deployment.steps.cleanup.status !== 'completed' && deployment.steps.sandbox.status !== 'skipped') await adapters.builder.deleteSandbox(deployment.id);
      await adapters.secrets.delete(deployment.id);
      await adapters.artifacts.deleteAll({ orgId: deployment.orgId, deploymentId: deployment.id });
    }
    await adapters.secrets.deleteAppEnv(app);

    const live = deployments.find((deployment) => deployment.status === 'completed') ?? null;
    const now = clock();
    const event: OutboxEvent = {
      // The same id on every delivery of this job: its webhook deliveries are created once.
      id: derivedEventId(`app.deleted\u0000${app.orgId}\u0000${app.appName}\u0000${message.requestedAt}`),
      type: 'app.deleted',
      timestamp: now.toISOString(),
      data: { deploymentId: null, projectId: app.projectId, environment: app.environment, appName: app.appName, status: 'deleted', url: live?.result.url ?? null, error: null },
    };
    const endpoints = await adapters.webhooks.listWebhooks(app.orgId);
    // The app's events still in the outbox (a cancelled deployment's, say) go out before `app.deleted`.
    // One read of the org's pending events (at most PENDING_READ; beyond that, the dispatcher sends
    // the rest after `app.deleted`); deleting the records leaves their events in the outbox anyway.
    const ids = new Set(deployments.map((deployment) => deployment.id));
    const pending = (await adapters.store.listOutbox(PENDING_READ, app.orgId)).filter((entry) => ids.has(entry.deploymentId));
    for (const entry of pending) await createDeliveries(adapters.webhooks, endpoints, app, entry.event, now);
    await adapters.store.removeOutbox(pending.map((entry) => ({ orgId: entry.orgId, eventId: entry.event.id })));
    await createDeliveries(adapters.webhooks, endpoints, app, event, now);
    if (await this.claimAnnouncement(app)) adapters.telemetry.event('AppDeleted', { deploymentId: '', orgId: app.orgId, projectId: app.projectId, environment: app.environment, appName: app.appName, deployments: String(deployments.length) });

    for (const deployment of deployments) await adapters.store.delete({ orgId: deployment.orgId, deploymentId: deployment.id });
    await adapters.store.deleteApp(app.orgId, app.appName);
    await this.options.releaseTenant?.(app);
    logger.info({ orgId: app.orgId, appName: app.appName, deployments: deployments.length, images: ownImages.size }, 'app deleted');
  }

  /**
   * True for the one delivery that may send `AppDeleted`: it wrote `deletionAnnouncedAt` on the app
   * record (conditional on its etag) before sending; every later delivery finds it set. The record is
   * the job's durable progress, like the webhook event id derived from the request.
   */
  private async claimAnnouncement(app: AppRef): Promise<boolean> {
    const { store } = this.options.adapters;
    for (let tries = 0; ; tries += 1) {
      const record = await store.getApp(app.orgId, app.appName);
      if (record === null || record.deletionAnnouncedAt != null) return false;
      try {
        await store.putApp({ ...record, deletionAnnouncedAt: this.options.clock().toISOString() });
        return true;
      } catch (error) {
        // Another writer (a second DELETE, another delivery) changed the record: read it again.
        if (!isDeployError(error) || error.code !== 'CONCURRENT_UPDATE' || tries >= 10) throw error;
      }
    }
  }

  /**
   * Hands the session back so the running deployments' own jobs can end them (cancelled), and
   * publishes the same request again, to run after a pause. A crash between the publish and the
   * completion leaves two requests: both harmless (idempotent).
   */
  private async continueLater(message: AppJobMessage, messageId: string, busy: readonly string[]): Promise<Settlement> {
    const delayMs = this.options.busyRetryMs ?? 2000;
    const base = messageId.replace(/:again:\d+$/, '');
    await this.options.adapters.queue.publish(message, {
      messageId: `${base}:again:${this.options.clock().getTime()}`,
      sessionId: projectKey(message.orgId, message.projectId),
      delayMs,
    });
    this.options.logger.info({ apps: busy, delayMs }, 'delete job: deployments still running were asked to cancel; looking again shortly');
    return { action: 'complete' };
  }
}
