import { createHash, randomBytes } from 'node:crypto';
import { kindOf } from './app.ts';
import type { DeploymentRecord } from './deployment.ts';
import type { DeploymentStatus } from './glossary.ts';
import { base32Of, randomBase32 } from './ids.ts';
import type { WebhookEndpoint, WebhookStore } from './ports/webhooks.ts';

/**
 * Webhooks: signed notifications (Standard Webhooks) of what happens to an org's deployments.
 *
 * - **event**: one thing that happened (`deployment.succeeded` of one deployment), id `evt_…`.
 *   Status changes put their event in the record's `outbox` (see `apply`); the store keeps the
 *   events of a write in its pending-event list in the same transaction (SQLite) or transactional
 *   batch (Cosmos DB) as the record itself, so a crash between the change and the delivery loses
 *   nothing, and the dispatcher finds new events without reading any deployment record.
 * - **webhook** (endpoint): a URL an org registered, id `wh_…`, with its secret (`whsec_…`, kept
 *   in the secrets port only) and the event types and project it wants.
 * - **delivery**: one event for one webhook, id `msg_…` (the `webhook-id` header, the same on every
 *   retry), with its attempts. The worker's dispatcher fans events out into deliveries and sends them.
 */
export const DEPLOYMENT_EVENT_TYPES = [
  'deployment.queued',
  'deployment.started',
  'deployment.succeeded',
  'deployment.failed',
  'deployment.cancelled',
  /** Ended without going live: a newer deployment of the same app already was (see `superseded`). */
  'deployment.superseded',
] as const;
/**
 * What happened to an app (issue 12), besides its deployments' own events:
 * - `app.rolled_back`: a rollback deployment completed (written with its `completed` status, beside
 *   `deployment.succeeded`);
 * - `app.env_changed`: a config deployment completed (the live image restarted with new env values),
 *   or env values were stored without a restart (`apply: none`, sent by the API);
 * - `app.deleted`: the delete job removed the app (status `deleted`, deploymentId null).
 * Data as the deployment events' (names and ids only, never env values).
 */
export const APP_EVENT_TYPES = ['app.rolled_back', 'app.env_changed', 'app.deleted'] as const;
export const WEBHOOK_EVENT_TYPES = [...DEPLOYMENT_EVENT_TYPES, ...APP_EVENT_TYPES, 'webhook.test'] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

/** The thin payload data: ids, status, url and error; never env values or secrets. */
export interface WebhookEventData {
  /** null in `webhook.test`, `app.deleted` and an `app.env_changed` that started no deployment. */
  deploymentId: string | null;
  projectId: string | null;
  environment: string | null;
  appName: string | null;
  /**
   * The deployment's status; `test`: `webhook.test`; `deleted`: `app.deleted`; `stored`: an
   * `app.env_changed` that started no deployment (apply "none", or the app has no live deployment).
   */
  status: DeploymentStatus | 'test' | 'deleted' | 'stored';
  url: string | null;
  error: { code: string; message: string; step: string | null } | null;
}

/** An event of a status change, written with it, waiting in the store's outbox until the dispatcher fans it out. */
export interface OutboxEvent {
  id: string;
  type: WebhookEventType;
  timestamp: string;
  data: WebhookEventData;
}

/** An outbox event as the store keeps it (`DeploymentStore.listOutbox`): with what its fan-out needs. */
export interface PendingEvent {
  orgId: string;
  deploymentId: string;
  projectId: string;
  event: OutboxEvent;
}

/** The JSON body every webhook receives. */
export interface WebhookPayload {
  type: WebhookEventType;
  timestamp: string;
  data: WebhookEventData;
}

const EVENT_OF_STATUS: Partial<Record<DeploymentStatus, WebhookEventType>> = {
  queued: 'deployment.queued',
  in_progress: 'deployment.started',
  completed: 'deployment.succeeded',
  failed: 'deployment.failed',
  cancelled: 'deployment.cancelled',
  superseded: 'deployment.superseded',
};

const APP_EVENT_OF_KIND: Partial<Record<ReturnType<typeof kindOf>, WebhookEventType>> = {
  rollback: 'app.rolled_back',
  config: 'app.env_changed',
};

/** `prefix` + 130 random bits as 26 lowercase base32 characters (like deployment ids). */
export function newPrefixedId(prefix: string): string {
  return randomBase32(prefix, 26);
}

/**
 * An event id derived from `seed` (same shape as newPrefixedId's): an event that a retried job emits
 * again (the delete job's `app.deleted`) keeps its id, so its deliveries are not created twice.
 */
export function derivedEventId(seed: string): string {
  return base32Of('evt_', createHash('sha256').update(seed).digest().subarray(0, 26));
}

export function eventDataOf(record: DeploymentRecord): WebhookEventData {
  return {
    deploymentId: record.id,
    projectId: record.projectId,
    environment: record.environment,
    appName: record.appName,
    status: record.status,
    url: record.result.url,
    error: record.error === null ? null : { code: record.error.code, message: record.error.message, step: record.error.step },
  };
}

/**
 * Adds the event of `next`'s status change to its outbox (none when the status did not change, or
 * changed to one no event names) and returns `next`. Called by the state machine on every change and
 * when a record is created, so the event is written by the same conditional write as the status.
 * `next` is changed in place: it must be a record its caller has just built (a copy of the record
 * would be one more 2 KB object per change: BENCHMARKS.md, allocations per POST).
 */
export function addStatusEvent(before: DeploymentRecord | null, next: DeploymentRecord, at: string): DeploymentRecord {
  if (before !== null && before.status === next.status) return next;
  const type = EVENT_OF_STATUS[next.status];
  if (type === undefined) return next;
  const data = eventDataOf(next);
  const events: OutboxEvent[] = [...(next.outbox ?? []), { id: newPrefixedId('evt_'), type, timestamp: at, data }];
  // A rollback or config deployment that completes is also an app event, in the same write.
  const appEvent = next.status === 'completed' ? APP_EVENT_OF_KIND[kindOf(next)] : undefined;
  if (appEvent !== undefined) events.push({ id: newPrefixedId('evt_'), type: appEvent, timestamp: at, data });
  next.outbox = events;
  return next;
}

/** The record as the stores return it: without the events its write carried (they are in the store's outbox now). */
export function withoutOutbox(record: DeploymentRecord): DeploymentRecord {
  if (record.outbox === undefined) return record;
  const { outbox: _written, ...rest } = record;
  return rest;
}

/** Retry delays after each failed attempt (Standard Webhooks' suggested schedule); jitter is added. */
export const WEBHOOK_RETRY_SCHEDULE_MS = [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000] as const;
/** An endpoint failing every attempt for this long is disabled. */
export const WEBHOOK_DISABLE_AFTER_MS = 3 * 86_400_000;
export const WEBHOOK_TIMEOUT_MS = 15_000;

/**
 * The wait before attempt `failures + 1` (after `failures` failed attempts): the schedule's delay
 * ±10% jitter, or the receiver's Retry-After when longer (capped at the schedule's longest delay).
 * null once the schedule is exhausted.
 */
export function nextRetryDelayMs(failures: number, retryAfterMs: number | null, random: () => number = Math.random): number | null {
  const base = WEBHOOK_RETRY_SCHEDULE_MS[failures - 1];
  if (base === undefined) return null;
  const jittered = Math.round(base * (0.9 + random() * 0.2));
  if (retryAfterMs === null) return jittered;
  return Math.max(jittered, Math.min(retryAfterMs, 36_000_000));
}

/**
 * The key under which the secrets port keeps a webhook's secrets. The port is keyed by deployment-id
 * shaped keys (both adapters check the shape), so a webhook `wh_<26>` keeps them under `dep_<26>`
 * with the same random part: no deployment can have it (130 random bits), and each adapter's naming
 * and encryption apply unchanged. Values: `CURRENT`, and `PREVIOUS` for 24 h after a rotation.
 */
export function webhookSecretKey(webhookId: string): string {
  return `dep_${webhookId.slice('wh_'.length)}`;
}

/** A new signing secret in the Standard Webhooks form: `whsec_` + base64 of 32 random bytes. */
export function newWebhookSecret(): string {
  return `whsec_${randomBytes(32).toString('base64')}`;
}

/** The delivery id of one event for one webhook: the same however often the fan-out runs. */
export function deliveryIdFor(eventId: string, webhookId: string): string {
  return `msg_${createHash('sha256').update(`${eventId}:${webhookId}`).digest('hex').slice(0, 32)}`;
}

/** Whether `webhook` wants events of `type` about `projectId`. */
export function wantsEvent(webhook: { enabled: boolean; events: readonly string[] | null; projectId: string | null }, type: WebhookEventType, projectId: string): boolean {
  if (!webhook.enabled) return false;
  if (webhook.projectId !== null && webhook.projectId !== projectId) return false;
  return type === 'webhook.test' || webhook.events === null || webhook.events.includes(type);
}

/** Turns an event into the body every attempt sends, byte for byte. */
export function payloadOf(event: OutboxEvent): string {
  return JSON.stringify({ type: event.type, timestamp: event.timestamp, data: event.data });
}

/**
 * One event becomes one pending delivery per webhook of the org that wants it. Delivery ids derive
 * from event + webhook, so a repeat (a fan-out after a crash, a redelivered delete job) creates
 * nothing twice. The dispatcher's fan-out uses it for outbox events; the delete job for `app.deleted`
 * and for the deleted app's events still pending (they go out before `app.deleted`).
 */
export async function createDeliveries(
  webhooks: WebhookStore,
  endpoints: readonly WebhookEndpoint[],
  about: { orgId: string; projectId: string },
  event: OutboxEvent,
  clock: Date,
): Promise<void> {
  const now = clock.toISOString();
  for (const webhook of endpoints) {
    // Only events after the webhook was registered (a fan-out repeated after a restart must not send older ones to a newer webhook).
    if (!wantsEvent(webhook, event.type, about.projectId) || event.timestamp < webhook.createdAt) continue;
    await webhooks.createDelivery({
      id: deliveryIdFor(event.id, webhook.id),
      orgId: about.orgId,
      webhookId: webhook.id,
      eventId: event.id,
      eventType: event.type,
      payload: payloadOf(event),
      status: 'pending',
      attempts: [],
      nextAttemptAt: now,
      lockedUntil: null,
      createdAt: now,
      updatedAt: now,
      etag: '',
    });
  }
}
