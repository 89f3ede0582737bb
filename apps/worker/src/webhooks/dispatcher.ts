import type {
  ChangeSignal,
  Clock,
  DeploymentStore,
  Logger,
  Resolver,
  SecretStore,
  Telemetry,
  WebhookAddressPolicy,
  WebhookDelivery,
  WebhookEndpoint,
  WebhookEventData,
  WebhookStore,
} from '@zepid/core';
import {
  createDeliveries,
  isDeployError,
  nextRetryDelayMs,
  systemClock,
  WEBHOOK_DISABLE_AFTER_MS,
  WEBHOOK_RETRY_SCHEDULE_MS,
  WEBHOOK_TIMEOUT_MS,
  webhookSecretKey,
} from '@zepid/core';
import { setTimeout as sleep } from 'node:timers/promises';
import { sendWebhook, signatureHeader } from './sender.ts';

export interface DispatcherOptions {
  store: DeploymentStore;
  webhooks: WebhookStore;
  secrets: SecretStore;
  changes: ChangeSignal;
  logger: Logger;
  policy: WebhookAddressPolicy;
  clock?: Clock;
  /** Per attempt; 15 s. */
  timeoutMs?: number;
  /** Delays after each failed attempt; the Standard Webhooks schedule (5 s … 10 h) unless a test shortens it. */
  retryScheduleMs?: readonly number[];
  /**
   * How long a claimed delivery stays with this dispatcher before another may take it (a worker
   * killed mid-send): one attempt's timeout plus 10 s for the address check and the result's write.
   */
  claimMs?: number;
  /** Longest sleep between looks when nothing rings. */
  idleMs?: number;
  /**
   * After a ring, how long the dispatcher lets further rings gather before its pass (10 ms): every
   * store write and every log line rings, dozens per deployment, and most carry no event.
   */
  coalesceMs?: number;
  /** Events fanned out per read of the outbox (200); a pass reads again while a read comes back full. */
  fanOutBatch?: number;
  resolve?: Resolver;
  random?: () => number;
  /** WebhookDeliveryFailed and WebhookDisabled go here (Application Insights in Azure); none when absent. */
  telemetry?: Pick<Telemetry, 'event'>;
}

/** The deployment dimensions of a delivery's event (empty for `webhook.test`), from its payload. */
function dimensionsOf(delivery: WebhookDelivery) {
  let data: Partial<WebhookEventData> = {};
  try {
    data = (JSON.parse(delivery.payload) as { data?: Partial<WebhookEventData> }).data ?? {};
  } catch {
    // An unreadable payload still reports the failure, without the deployment's dimensions.
  }
  return { deploymentId: data.deploymentId ?? '', orgId: delivery.orgId, projectId: data.projectId ?? '', environment: data.environment ?? '' };
}

/**
 * The worker's webhook dispatcher. Two stages, both restartable at any point:
 * 1. fan-out: events in the store's outbox (written with the status changes that caused them)
 *    become one delivery per interested webhook (ids derived from event + webhook, so a repeat after
 *    a crash, or by a second worker, creates nothing twice), then leave the outbox. The outbox holds
 *    pending events only: a pass reads what is new, never a deployment record;
 * 2. send: due deliveries are claimed (conditional write of `lockedUntil`), sent, and their result
 *    written: delivered on 2xx; on 410 the webhook is disabled; otherwise the next attempt is
 *    scheduled (with jitter, honouring Retry-After) until the schedule ends, and a webhook failing
 *    for 3 days is disabled with the reason.
 * A worker killed anywhere leaves an outbox event or a pending (or claimed, expiring) delivery that
 * the next dispatcher finds.
 */
export class WebhookDispatcher {
  private readonly options: DispatcherOptions;
  private readonly clock: Clock;
  private readonly schedule: readonly number[];
  private stopping = new AbortController();
  private running: Promise<void> | null = null;

  constructor(options: DispatcherOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.schedule = options.retryScheduleMs ?? WEBHOOK_RETRY_SCHEDULE_MS;
  }

  start(): void {
    if (this.running !== null) return;
    this.stopping = new AbortController();
    this.running = this.loop();
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    await this.running;
    this.running = null;
  }

  private async loop(): Promise<void> {
    const { changes, logger } = this.options;
    while (!this.stopping.signal.aborted) {
      const seen = changes.rung;
      try {
        await this.runOnce();
      } catch (error) {
        logger.warn({ err: error }, 'webhook dispatch failed; trying again shortly');
      }
      // With the outbox a table (or documents) of pending events, a pass that finds nothing new is
      // two short indexed reads, whatever number of deployments is in flight. But every store write and
      // log line rings (about 20 per deployment of the bench's instant worker, most without an event):
      // a pass per ring still cost ~5% of the worker's CPU at 100 deployments/s. Rings arriving within
      // `coalesceMs` of the first share one pass: at most 100 passes a second, for 10 ms of latency.
      await changes.wait(seen, this.options.idleMs ?? 1000, this.stopping.signal);
      if (changes.rung !== seen) await sleep(this.options.coalesceMs ?? 10, undefined, { signal: this.stopping.signal }).catch(() => undefined);
    }
  }

  /** One pass of both stages; returns how many deliveries were attempted. */
  async runOnce(): Promise<number> {
    await this.fanOut();
    return this.sendDue();
  }

  /** Fans out what the outbox holds; returns how many events it fanned out. */
  async fanOut(): Promise<number> {
    const { store, webhooks } = this.options;
    const batch = this.options.fanOutBatch ?? 200;
    let fanned = 0;
    // Bounded: at most ten reads per pass, so sending is never starved by a flood of events.
    for (let reads = 0; reads < 10 && !this.stopping.signal.aborted; reads += 1) {
      const pending = await store.listOutbox(batch);
      if (pending.length === 0) break;
      // One listing of the webhooks per org and pass (most passes: one or two orgs, often no webhooks).
      const endpointsOf = new Map<string, WebhookEndpoint[]>();
      for (const { orgId, projectId, event } of pending) {
        let endpoints = endpointsOf.get(orgId);
        if (endpoints === undefined) {
          endpoints = await webhooks.listWebhooks(orgId);
          endpointsOf.set(orgId, endpoints);
        }
        await createDeliveries(webhooks, endpoints, { orgId, projectId }, event, this.clock());
      }
      // Only after every delivery exists: a crash before this line fans the same events out again,
      // which creates nothing twice.
      await store.removeOutbox(pending.map(({ orgId, event }) => ({ orgId, eventId: event.id })));
      fanned += pending.length;
      if (pending.length < batch) break;
    }
    return fanned;
  }

  async sendDue(): Promise<number> {
    const { webhooks } = this.options;
    const due = await webhooks.listDueDeliveries(this.clock(), 20);
    let attempted = 0;
    // Webhooks in parallel (at most 20 deliveries per pass bounds the sockets); one webhook's
    // deliveries one after another, in the order their events happened.
    const byWebhook = new Map<string, WebhookDelivery[]>();
    for (const delivery of due) byWebhook.set(delivery.webhookId, [...(byWebhook.get(delivery.webhookId) ?? []), delivery]);
    await Promise.all(
      [...byWebhook.values()].map(async (deliveries) => {
        for (const delivery of deliveries) {
          const claimed = await this.claim(delivery);
          if (claimed === null) continue;
          attempted += 1;
          await this.attempt(claimed);
        }
      }),
    );
    return attempted;
  }

  private async claim(delivery: WebhookDelivery): Promise<WebhookDelivery | null> {
    const until = new Date(this.clock().getTime() + (this.options.claimMs ?? (this.options.timeoutMs ?? WEBHOOK_TIMEOUT_MS) + 10_000)).toISOString();
    try {
      return await this.options.webhooks.replaceDelivery({ ...delivery, lockedUntil: until });
    } catch (error) {
      if (isDeployError(error) && (error.code === 'CONCURRENT_UPDATE' || error.code === 'NOT_FOUND')) return null;
      throw error;
    }
  }

  private async secretsOf(webhook: WebhookEndpoint, now: Date): Promise<string[]> {
    const values = await this.options.secrets.get(webhookSecretKey(webhook.id));
    const secrets = values.CURRENT === undefined ? [] : [values.CURRENT];
    const previousValid = webhook.previousSecretExpiresAt !== null && Date.parse(webhook.previousSecretExpiresAt) > now.getTime();
    if (previousValid && values.PREVIOUS !== undefined) secrets.push(values.PREVIOUS);
    return secrets;
  }

  private async attempt(delivery: WebhookDelivery): Promise<void> {
    const { webhooks, logger } = this.options;
    const now = this.clock();
    const webhook = await webhooks.getWebhook(delivery.orgId, delivery.webhookId);
    if (webhook === null || !webhook.enabled) {
      const why = webhook === null ? 'the webhook was deleted' : `the webhook is disabled${webhook.disabledReason === null ? '' : `: ${webhook.disabledReason}`}`;
      await this.settle(delivery, { at: now.toISOString(), statusCode: null, latencyMs: 0, error: why }, 'failed', null);
      return;
    }
    const secrets = await this.secretsOf(webhook, now);
    if (secrets.length === 0) {
      await this.settle(delivery, { at: now.toISOString(), statusCode: null, latencyMs: 0, error: 'the webhook has no secret' }, 'failed', null);
      return;
    }
    const headers = {
      'webhook-id': delivery.id,
      'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
      'webhook-signature': signatureHeader(secrets, delivery.id, now, delivery.payload),
    };
    const result = await sendWebhook(webhook.url, headers, delivery.payload, {
      policy: this.options.policy,
      timeoutMs: this.options.timeoutMs ?? WEBHOOK_TIMEOUT_MS,
      ...(this.options.resolve === undefined ? {} : { resolve: this.options.resolve }),
    });
    const attempt = { at: now.toISOString(), statusCode: result.statusCode, latencyMs: result.latencyMs, error: result.error };
    const ok = result.statusCode !== null && result.statusCode >= 200 && result.statusCode < 300;
    logger.info({ deliveryId: delivery.id, webhookId: webhook.id, statusCode: result.statusCode, latencyMs: result.latencyMs, error: result.error }, 'webhook attempt');
    if (ok) {
      await this.settle(delivery, attempt, 'delivered', null);
      if (webhook.failingSince !== null) await this.updateWebhook(webhook, (current) => ({ ...current, failingSince: null }));
      return;
    }
    const failed = (final: boolean) =>
      this.options.telemetry?.event('WebhookDeliveryFailed', {
        ...dimensionsOf(delivery),
        webhookId: webhook.id,
        eventType: delivery.eventType,
        statusCode: result.statusCode === null ? '' : String(result.statusCode),
        errorClass: result.errorClass ?? 'UNKNOWN',
        attempt: String(delivery.attempts.length + 1),
        final: String(final),
      });
    if (result.statusCode === 410) {
      await this.settle(delivery, attempt, 'failed', null);
      failed(true);
      await this.disable(webhook, delivery, 'GONE_410', 'the endpoint answered 410 Gone');
      return;
    }
    const failingSince = webhook.failingSince ?? now.toISOString();
    if (now.getTime() - Date.parse(failingSince) >= WEBHOOK_DISABLE_AFTER_MS) {
      await this.settle(delivery, attempt, 'failed', null);
      failed(true);
      await this.disable(webhook, delivery, 'FAILING_3_DAYS', `every attempt failed since ${failingSince} (3 days)`);
      return;
    }
    if (webhook.failingSince === null) await this.updateWebhook(webhook, (current) => ({ ...current, failingSince: current.failingSince ?? failingSince }));
    const delay = this.retryDelay(delivery.attempts.length + 1, result.retryAfterMs);
    failed(delay === null);
    if (delay === null) await this.settle(delivery, attempt, 'failed', null);
    else await this.settle(delivery, attempt, 'pending', new Date(now.getTime() + delay).toISOString());
  }

  private retryDelay(failures: number, retryAfterMs: number | null): number | null {
    if (this.schedule === WEBHOOK_RETRY_SCHEDULE_MS) return nextRetryDelayMs(failures, retryAfterMs, this.options.random);
    const base = this.schedule[failures - 1];
    return base === undefined ? null : Math.max(base, retryAfterMs ?? 0);
  }

  private async settle(delivery: WebhookDelivery, attempt: WebhookDelivery['attempts'][number], status: WebhookDelivery['status'], nextAttemptAt: string | null): Promise<void> {
    await this.options.webhooks.replaceDelivery({
      ...delivery,
      status,
      attempts: [...delivery.attempts, attempt],
      nextAttemptAt,
      lockedUntil: null,
      updatedAt: this.clock().toISOString(),
    });
  }

  private async disable(webhook: WebhookEndpoint, delivery: WebhookDelivery, kind: 'GONE_410' | 'FAILING_3_DAYS', reason: string): Promise<void> {
    this.options.logger.warn({ webhookId: webhook.id, orgId: webhook.orgId, reason }, 'webhook disabled');
    this.options.telemetry?.event('WebhookDisabled', { ...dimensionsOf(delivery), webhookId: webhook.id, reason: kind });
    await this.updateWebhook(webhook, (current) => ({ ...current, enabled: false, disabledReason: reason }));
  }

  private async updateWebhook(webhook: WebhookEndpoint, change: (current: WebhookEndpoint) => WebhookEndpoint): Promise<void> {
    let current: WebhookEndpoint | null = webhook;
    for (let attempt = 0; attempt < 5 && current !== null; attempt += 1) {
      try {
        await this.options.webhooks.replaceWebhook({ ...change(current), updatedAt: this.clock().toISOString() });
        return;
      } catch (error) {
        if (!isDeployError(error) || error.code !== 'CONCURRENT_UPDATE') throw error;
        current = await this.options.webhooks.getWebhook(webhook.orgId, webhook.id);
      }
    }
  }
}
