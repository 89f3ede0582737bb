import type { ApiAdapters, AppRef, DeploymentRecord } from '@zepid/core';
import type { AppService } from './apps.ts';
import type { Follower } from './deployment-watch.ts';
import { Watch } from './deployment-watch.ts';
import { summaryView } from './views.ts';

/** How many of the org's newest deployments `GET /events` compares on each change. */
export const ORG_WINDOW = 50;
/**
 * Events an org's watch keeps for followers still sending earlier ones. A follower further behind
 * (a client that stopped reading) has its stream ended: EventSource reconnects and starts again
 * from a fresh snapshot, so memory stays bounded whatever a client does.
 */
export const ORG_BACKLOG = 500;

/** One event of `GET /events`, serialized once for every stream of the org. */
export interface OrgEvent {
  n: number;
  event: 'deployment' | 'app' | 'app_removed';
  json: string;
}

/** A `GET /events` stream: `sent` is the `n` of the last event it sent. */
export interface OrgFollower extends Follower {
  sent: number;
}

const appOf = (record: DeploymentRecord): AppRef => ({ orgId: record.orgId, projectId: record.projectId, environment: record.environment, appName: record.appName });

/**
 * An org followed by `GET /events` streams in this process: one listing of its newest deployments
 * per change signal (the doorbell locally, the shared etag poll in Azure), compared by etag with the
 * last one; what changed becomes events, serialized once, that every stream of the org sends. A
 * stream keeps only the number of the last event it sent.
 */
export class OrgWatch extends Watch {
  /** The newest deployments as last listed (the snapshot a new stream starts with); undefined before the first listing. */
  recent: DeploymentRecord[] | undefined = undefined;
  private readonly events: OrgEvent[] = [];
  private last = 0;
  private versions = new Map<string, string>();
  /** The app of each deployment in the window: a deployment that leaves it may have left with its app (deleted). */
  private appsInWindow = new Map<string, AppRef>();
  /** Apps being deleted: they lose their deployments before their record, so they stay watched until gone. */
  private readonly leaving = new Map<string, AppRef>();
  private readonly orgId: string;
  private readonly apps: Pick<AppService, 'view' | 'viewIfExists'>;
  private readonly firstRead: Promise<void>;
  private markRead: () => void = () => undefined;

  constructor(adapters: Pick<ApiAdapters, 'store' | 'artifacts' | 'changes'>, orgId: string, apps: Pick<AppService, 'view' | 'viewIfExists'>, resyncMs: number, onIdle: () => void) {
    super(adapters, resyncMs, onIdle);
    this.orgId = orgId;
    this.apps = apps;
    this.firstRead = new Promise((resolve) => (this.markRead = resolve));
  }

  /** The `n` of the newest event. */
  get newest(): number {
    return this.last;
  }

  /** Resolves once the first listing is in (`recent` is set), or the watch stopped. */
  ready(): Promise<void> {
    return this.firstRead;
  }

  override stop(): void {
    super.stop();
    this.markRead();
  }

  /** The events after `sent`, oldest first; null when some of them were dropped (the follower fell too far behind). */
  since(sent: number): OrgEvent[] | null {
    const first = this.events[0];
    if (first === undefined) return sent >= this.last ? [] : null;
    if (sent < first.n - 1) return null;
    return this.events.slice(sent - first.n + 1);
  }

  protected async read(): Promise<boolean> {
    const recent = await this.adapters.store.listRecent(this.orgId, ORG_WINDOW);
    if (this.recent === undefined) {
      this.remember(recent);
      this.markRead();
      return false;
    }
    const changed = recent.filter((record) => this.versions.get(record.id) !== record.etag).reverse();
    const apps = new Map(changed.map((record) => [record.appName, appOf(record)]));
    // Deployments gone from the window: newer ones pushed them out, or their app was deleted.
    const listed = new Set(recent.map((record) => record.id));
    for (const [id, app] of this.appsInWindow) if (!listed.has(id) && !apps.has(app.appName)) this.leaving.set(app.appName, app);
    this.remember(recent);
    const out: Omit<OrgEvent, 'n'>[] = [];
    // Oldest change first, as they happened; then each app they belong to as it is now (GET /apps' item).
    for (const record of changed) out.push({ event: 'deployment', json: JSON.stringify(summaryView(record)) });
    for (const app of apps.values()) out.push({ event: 'app', json: JSON.stringify(await this.apps.view(app)) });
    for (const app of [...this.leaving.values()]) {
      const view = await this.apps.viewIfExists(app);
      if (view === null || view.status !== 'deleting') this.leaving.delete(app.appName);
      if (view === null) out.push({ event: 'app_removed', json: JSON.stringify({ appName: app.appName, projectId: app.projectId, environment: app.environment }) });
      else out.push({ event: 'app', json: JSON.stringify(view) });
    }
    for (const event of out) {
      this.last += 1;
      this.events.push({ ...event, n: this.last });
    }
    this.trim();
    return out.length > 0;
  }

  private remember(recent: DeploymentRecord[]): void {
    this.recent = recent;
    this.versions = new Map(recent.map((record) => [record.id, record.etag]));
    this.appsInWindow = new Map(recent.map((record) => [record.id, appOf(record)]));
  }

  /** Drops the events every follower has sent, and beyond ORG_BACKLOG the oldest. */
  private trim(): void {
    let slowest = this.last;
    for (const follower of this.followers) slowest = Math.min(slowest, (follower as OrgFollower).sent);
    let drop = 0;
    while (drop < this.events.length && ((this.events[drop]?.n ?? 0) <= slowest || this.events.length - drop > ORG_BACKLOG)) drop += 1;
    if (drop > 0) this.events.splice(0, drop);
  }
}
