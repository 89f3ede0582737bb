import type { DeploymentRecord, Logger, WorkerAdapters } from '@zepid/core';
import { ACTIVE_STATUSES, isDeployError, kindOf } from '@zepid/core';

export interface ImageRetentionOptions {
  adapters: Pick<WorkerAdapters, 'store' | 'builder'>;
  logger: Logger;
  /** KEEP_IMAGES_PER_APP: distinct images of an app's newest completed deployments that stay. */
  keepPerApp: number;
  clock?: () => Date;
}

/** Page size of the project listing. */
const PAGE = 100;

/**
 * Image retention that keeps rollback honest (issue 12). Per project (a reused build shares one image
 * between its environments), an image stays while any of these runs or may run it:
 * - the newest `keepPerApp` distinct images among each app's completed deployments (the live one's
 *   first: it is the newest completed), whatever kind of deployment ran them;
 * - a queued or running deployment's (a rollback or config about to run it, a build reusing it).
 * Every other image a completed build produced is deleted, and the deployment that built it gets
 * `imageRemovedAt` in its build output, so the API answers `canRollback: false` (and 409) without
 * asking the builder. Deleted first, marked second: a crash in between leaves an unmarked image that
 * is gone, which the next run deletes (idempotently) and marks.
 */
export class ImageRetention {
  private readonly options: ImageRetentionOptions;
  /** Projects whose last run failed: maintenance runs them again. */
  private readonly pending = new Map<string, { orgId: string; projectId: string }>();

  constructor(options: ImageRetentionOptions) {
    this.options = options;
  }

  /** After a deployment completed: its project. Never throws; a failure is retried by maintenance. */
  async afterCompleted(record: DeploymentRecord): Promise<void> {
    await this.runSafely(record.orgId, record.projectId);
  }

  /** Maintenance: the projects whose retention failed lately. */
  async runPending(): Promise<void> {
    for (const { orgId, projectId } of [...this.pending.values()]) await this.runSafely(orgId, projectId);
  }

  private async runSafely(orgId: string, projectId: string): Promise<void> {
    const key = `${orgId}\u0000${projectId}`;
    try {
      await this.enforce(orgId, projectId);
      this.pending.delete(key);
    } catch (error) {
      this.pending.set(key, { orgId, projectId });
      this.options.logger.warn({ err: error, orgId, projectId }, 'image retention failed; maintenance tries again');
    }
  }

  /** Deletes the project's images beyond what is kept; returns the deployments whose image went. */
  async enforce(orgId: string, projectId: string): Promise<string[]> {
    const { store, builder } = this.options.adapters;
    const records: DeploymentRecord[] = [];
    let cursor: string | null = null;
    do {
      const page = await store.listByProject(orgId, projectId, { limit: PAGE, cursor });
      records.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor !== null);

    const kept = new Set<string>();
    const byApp = new Map<string, DeploymentRecord[]>();
    for (const record of records) {
      if (record.status === 'completed') byApp.set(record.appName, [...(byApp.get(record.appName) ?? []), record]);
      if (ACTIVE_STATUSES.includes(record.status)) {
        if (typeof record.imageOf === 'string') kept.add(record.imageOf);
        const reused = record.steps.validate.output.reusedFrom;
        if (typeof reused === 'string') kept.add(reused);
      }
    }
    for (const completed of byApp.values()) {
      // Newest first: the store lists a project newest first; sorted again, as the order decides what stays.
      const owners = [...new Set(completed.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0)).map(imageOwner))];
      for (const owner of owners.slice(0, this.options.keepPerApp)) kept.add(owner);
    }

    const removed: string[] = [];
    for (const record of records) {
      const built = record.steps.build.output;
      if (record.status !== 'completed' || kindOf(record) !== 'build' || typeof built.image !== 'string') continue;
      if (typeof built.reusedFrom === 'string' || typeof built.imageRemovedAt === 'string' || kept.has(record.id)) continue;
      await builder.deleteImage(record.id, built.image);
      await this.markRemoved(record);
      removed.push(record.id);
    }
    if (removed.length > 0) this.options.logger.info({ orgId, projectId, removed, keepPerApp: this.options.keepPerApp }, 'image retention: removed images no rollback keeps');
    return removed;
  }

  private async markRemoved(record: DeploymentRecord): Promise<void> {
    const { store } = this.options.adapters;
    const at = (this.options.clock?.() ?? new Date()).toISOString();
    let current: DeploymentRecord | null = record;
    for (let attempt = 0; attempt < 10 && current !== null; attempt += 1) {
      const build = current.steps.build;
      try {
        await store.replace({ ...current, steps: { ...current.steps, build: { ...build, output: { ...build.output, imageRemovedAt: at } } } });
        return;
      } catch (error) {
        if (!isDeployError(error) || error.code !== 'CONCURRENT_UPDATE') throw error;
        current = await store.get({ orgId: record.orgId, deploymentId: record.id });
      }
    }
  }
}

/** The deployment that built the image `record` ran (itself, or the one its image came from). */
export function imageOwner(record: DeploymentRecord): string {
  const reused = record.steps.build.output.reusedFrom;
  return record.imageOf ?? (typeof reused === 'string' ? reused : record.id);
}
