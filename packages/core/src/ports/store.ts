import type { AppRecord, AppRef } from '../app.ts';
import type { DeploymentRecord } from '../deployment.ts';
import type { DeploymentStatus } from '../glossary.ts';
import type { PendingEvent } from '../webhooks.ts';
import type { HealthReporting, Lifecycle } from './lifecycle.ts';

/**
 * Deployment store: the source of truth for every deployment.
 *
 * Leaves out: SDK and connection types, SQL, partition keys, RU charges. Records go in and come out
 * as plain `DeploymentRecord`s; `etag` is opaque. Errors are DeployErrors: CONCURRENT_UPDATE on a
 * stale etag, QUOTA_EXCEEDED on create past the org's limit, DEPENDENCY_UNAVAILABLE (retryable) when
 * the store cannot be reached.
 */
export interface DeploymentRef {
  orgId: string;
  deploymentId: string;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface WorkerHeartbeat {
  workerId: string;
  host: string;
  version: string;
  startedAt: string;
  lastSeenAt: string;
  running: number;
  capacity: number;
}

export interface CreateOptions {
  /** Refuse (QUOTA_EXCEEDED) when the org already has this many queued or in-progress deployments. */
  maxActivePerOrg: number;
}

export interface DeploymentStore extends Lifecycle, HealthReporting {
  /** Inserts a new record and returns it with its etag. */
  create(record: DeploymentRecord, options: CreateOptions): Promise<DeploymentRecord>;
  /** Point read; null when absent (including when it belongs to another org). */
  get(ref: DeploymentRef): Promise<DeploymentRecord | null>;
  /**
   * The record's current etag alone, null when absent (or another org's): lets a reader holding
   * something derived from a version of the record check it is still current without reading and
   * parsing the whole record (the API's kept status answers). Optional: without it, callers `get`.
   */
  etagOf?(ref: DeploymentRef): Promise<string | null>;
  /**
   * An opaque mark that changes whenever a write to the store commits, by any process or replica
   * (any record: it says "something changed", never what). A reader that checked a record's etag
   * after taking mark M may trust what it derived from that version for as long as the mark still
   * equals M, without reading the store. Null when the store cannot tell at this moment; optional
   * (Cosmos DB offers nothing cheaper than a read): callers then read.
   */
  writeMark?(): string | null;
  /** Writes the record if the stored etag still equals `record.etag`; returns it with the new etag. */
  replace(record: DeploymentRecord): Promise<DeploymentRecord>;
  delete(ref: DeploymentRef): Promise<void>;
  findByIdempotencyKey(orgId: string, key: string): Promise<DeploymentRecord | null>;
  /** Newest first. `cursor` is opaque and comes from the previous page. */
  listByProject(orgId: string, projectId: string, page: { limit: number; cursor: string | null }): Promise<Page<DeploymentRecord>>;
  /** Newest first. */
  listRecent(orgId: string, limit: number): Promise<DeploymentRecord[]>;
  countByStatus(orgId: string): Promise<Record<DeploymentStatus, number>>;
  countActive(orgId: string): Promise<number>;
  /** Terminal deployments finished before `before`, oldest first; all orgs when orgId is null. */
  listFinishedBefore(orgId: string | null, before: Date, limit: number): Promise<DeploymentRecord[]>;
  /** The newest completed deployment of an app: its revision is the one serving traffic. */
  latestCompleted(orgId: string, appName: string): Promise<DeploymentRecord | null>;
  /**
   * The id and `spec.envVariableNames` of what `latestCompleted` returns, without reading and parsing
   * the whole record: POST /deploy of an app without an env record asks which variables its live
   * deployment ran with (BENCHMARKS.md). Optional: without it, callers use `latestCompleted`.
   */
  latestCompletedEnvNames?(orgId: string, appName: string): Promise<{ deploymentId: string; envVariableNames: string[] } | null>;
  /**
   * Build reuse: the newest completed deployment of the project (any environment) whose validate
   * step recorded `buildKey` (`steps.validate.output.buildKey`, a sha256 over the source digest, the
   * build plan, the env variable names and the builder's identity). Adapters keep the key indexed
   * beside the record on every create and replace.
   */
  latestCompletedWithBuildKey(orgId: string, projectId: string, buildKey: string): Promise<DeploymentRecord | null>;
  /**
   * Outbox: queued deployments whose current job may not have reached the queue (publishedAt null)
   * and that were last written before `before`. All orgs.
   */
  listUnpublished(before: Date, limit: number): Promise<DeploymentRecord[]>;
  /**
   * In-progress deployments whose current attempt started before `before`, all orgs: the worker's
   * sweep fails those past their timeout whose job was lost (worker crashed on its last delivery).
   */
  listRunningStartedBefore(before: Date, limit: number): Promise<DeploymentRecord[]>;
  /**
   * Webhook outbox. `create` and `replace` keep the events a record carries in `outbox` in the same
   * transaction (SQLite) or transactional batch (Cosmos DB) as the record, and return the record
   * without them (records read never carry any). Deleting a record leaves its pending events.
   * A store may leave out the events of a write when the org had no webhook (enabled or disabled) at
   * that write's commit: they would fan out to no one, since a webhook gets no event from before it
   * was registered (core's `createDeliveries`). The SQLite store does (checked in the writing
   * transaction); the Cosmos DB store keeps them and the dispatcher fans them out to no one.
   *
   * Events not yet fanned out into deliveries, oldest first: all orgs, or one org's. Reads only
   * pending events (an index or a table of their own), never the deployment records.
   */
  listOutbox(limit: number, orgId?: string): Promise<PendingEvent[]>;
  /** Forgets events once fanned out; no error for an event already gone (another worker removed it). */
  removeOutbox(events: readonly { orgId: string; eventId: string }[]): Promise<void>;
  recordHeartbeat(heartbeat: WorkerHeartbeat): Promise<void>;
  listHeartbeats(): Promise<WorkerHeartbeat[]>;
  // Apps (issue 12). An app exists while it has deployments or an app record; see core's app.ts.
  /** The app's record (env variable names, deletion); null when none was written. */
  getApp(orgId: string, appName: string): Promise<AppRecord | null>;
  /**
   * Creates the record when `app.etag` is '' (CONFLICT when one exists), else replaces it if the stored
   * etag still equals `app.etag` (CONCURRENT_UPDATE otherwise); returns it with the new etag.
   */
  putApp(app: AppRecord): Promise<AppRecord>;
  /** Removes the app record; no error when absent. */
  deleteApp(orgId: string, appName: string): Promise<void>;
  /** The org's apps (those with deployments or a record), by appName; `cursor` is opaque. */
  listApps(orgId: string, page: { limit: number; cursor: string | null }): Promise<Page<AppRef>>;
  /** An app's deployments, newest first (by createdAt), any status. */
  listByApp(orgId: string, appName: string, page: { limit: number; cursor: string | null }): Promise<Page<DeploymentRecord>>;
}
