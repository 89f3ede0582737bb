import type { WebhookEventType } from '../webhooks.ts';
import type { HealthReporting, Lifecycle } from './lifecycle.ts';

/** A registered endpoint. Its secret is not here: it lives in the secrets port (see webhooks.ts). */
export interface WebhookEndpoint {
  id: string;
  orgId: string;
  url: string;
  /** Event types it receives; null: every deployment event. `webhook.test` always reaches it. */
  events: WebhookEventType[] | null;
  /** Only this project's deployments; null: every project of the org. */
  projectId: string | null;
  description: string | null;
  enabled: boolean;
  /** Why the service disabled it (410 Gone, failing for 3 days); null when enabled or disabled by its owner. */
  disabledReason: string | null;
  /** Start of the current run of failed attempts; null after a success. */
  failingSince: string | null;
  /** Until when the previous secret still signs (24 h after a rotation); null when there is none. */
  previousSecretExpiresAt: string | null;
  createdAt: string;
  updatedAt: string;
  etag: string;
}

export interface DeliveryAttempt {
  at: string;
  /** HTTP status; null when no answer came (refused address, timeout, connection error). */
  statusCode: number | null;
  latencyMs: number;
  error: string | null;
}

/** One event for one webhook: the unit of delivery and retry. Its id is the `webhook-id` header. */
export interface WebhookDelivery {
  id: string;
  orgId: string;
  webhookId: string;
  eventId: string;
  eventType: WebhookEventType;
  /** The exact JSON body that is signed and sent on every attempt. */
  payload: string;
  /** pending: to be sent at `nextAttemptAt`; delivered: a 2xx came; failed: given up (or the endpoint is gone or disabled). */
  status: 'pending' | 'delivered' | 'failed';
  attempts: DeliveryAttempt[];
  nextAttemptAt: string | null;
  /** A dispatcher holds it until then (one sender at a time across workers). */
  lockedUntil: string | null;
  createdAt: string;
  updatedAt: string;
  etag: string;
}

/**
 * Webhook store: endpoints and deliveries, per org. Writes are conditional on the etag read
 * (CONCURRENT_UPDATE otherwise), like the deployment store. Leaves out: SQL, containers, partition
 * keys, secrets (the secrets port keeps them).
 */
export interface WebhookStore extends Lifecycle, HealthReporting {
  createWebhook(webhook: WebhookEndpoint): Promise<WebhookEndpoint>;
  getWebhook(orgId: string, id: string): Promise<WebhookEndpoint | null>;
  listWebhooks(orgId: string): Promise<WebhookEndpoint[]>;
  replaceWebhook(webhook: WebhookEndpoint): Promise<WebhookEndpoint>;
  /** Removes the endpoint and its deliveries. */
  deleteWebhook(orgId: string, id: string): Promise<void>;
  /** Inserts unless a delivery with its id exists (a fan-out repeated after a crash); true when inserted. */
  createDelivery(delivery: WebhookDelivery): Promise<boolean>;
  getDelivery(orgId: string, id: string): Promise<WebhookDelivery | null>;
  /** Newest first. */
  listDeliveries(orgId: string, webhookId: string, limit: number): Promise<WebhookDelivery[]>;
  replaceDelivery(delivery: WebhookDelivery): Promise<WebhookDelivery>;
  /** Pending deliveries due at `now` and not locked, all orgs, oldest due first. */
  listDueDeliveries(now: Date, limit: number): Promise<WebhookDelivery[]>;
}
