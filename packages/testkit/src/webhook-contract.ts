import type { DeploymentStore, WebhookDelivery, WebhookEndpoint, WebhookStore } from '@zepid/core';
import { DeployError, newPrefixedId } from '@zepid/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeWebhook } from './records.ts';

export interface WebhookHarness {
  webhooks: WebhookStore;
  /** The deployment store beside it (sharing its database or container). */
  store: DeploymentStore;
  dispose(): Promise<void>;
}

const unique = (prefix: string) => `${prefix}_${Math.random().toString(36).slice(2, 10)}`;

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'no error';
  } catch (error) {
    return error instanceof DeployError ? error.code : `not a DeployError: ${String(error)}`;
  }
}

function delivery(webhook: WebhookEndpoint, overrides: Partial<WebhookDelivery> = {}): WebhookDelivery {
  const at = new Date().toISOString();
  return {
    id: `msg_${Math.random().toString(16).slice(2).padEnd(32, '0').slice(0, 32)}`,
    orgId: webhook.orgId,
    webhookId: webhook.id,
    eventId: newPrefixedId('evt_'),
    eventType: 'deployment.queued',
    payload: '{"type":"deployment.queued"}',
    status: 'pending',
    attempts: [],
    nextAttemptAt: at,
    lockedUntil: null,
    createdAt: at,
    updatedAt: at,
    etag: '',
    ...overrides,
  };
}

/** The behaviour every WebhookStore adapter must have (the outbox of events is the deployment store's: store-contract). */
export function webhookContract(name: string, createHarness: () => Promise<WebhookHarness>): void {
  describe(`WebhookStore contract: ${name}`, () => {
    let harness: WebhookHarness;
    beforeAll(async () => {
      harness = await createHarness();
    });
    afterAll(async () => {
      await harness.dispose();
    });

    it('creates, reads, lists, replaces (conditionally) and deletes endpoints, only within their org', async () => {
      const { webhooks } = harness;
      const orgId = unique('org');
      const created = await webhooks.createWebhook(makeWebhook(orgId, { events: ['deployment.failed'] }));
      expect(created.etag).not.toBe('');
      expect(await webhooks.getWebhook(orgId, created.id)).toEqual(created);
      expect(await webhooks.getWebhook(unique('org'), created.id)).toBeNull();
      expect((await webhooks.listWebhooks(orgId)).map((w) => w.id)).toEqual([created.id]);
      expect(await webhooks.listWebhooks(unique('org'))).toEqual([]);
      const changed = await webhooks.replaceWebhook({ ...created, enabled: false, disabledReason: 'the endpoint answered 410 Gone' });
      expect(changed.etag).not.toBe(created.etag);
      expect(await codeOf(webhooks.replaceWebhook({ ...created, url: 'https://stale.example.com/' }))).toBe('CONCURRENT_UPDATE');
      expect(await webhooks.getWebhook(orgId, created.id)).toMatchObject({ enabled: false, url: 'https://hooks.example.com/zepid' });
      await webhooks.createDelivery(delivery(changed));
      await webhooks.deleteWebhook(orgId, created.id);
      expect(await webhooks.getWebhook(orgId, created.id)).toBeNull();
      expect(await webhooks.listDeliveries(orgId, created.id, 10)).toEqual([]);
    });

    it('creates a delivery once per id, lists it newest first, replaces it conditionally', async () => {
      const { webhooks } = harness;
      const orgId = unique('org');
      const webhook = await webhooks.createWebhook(makeWebhook(orgId));
      const first = delivery(webhook, { createdAt: '2026-01-01T00:00:00.000Z' });
      expect(await webhooks.createDelivery(first)).toBe(true);
      expect(await webhooks.createDelivery({ ...first, payload: '{"twice":true}' })).toBe(false);
      const second = delivery(webhook, { createdAt: '2026-01-02T00:00:00.000Z' });
      await webhooks.createDelivery(second);
      expect((await webhooks.listDeliveries(orgId, webhook.id, 10)).map((d) => d.id)).toEqual([second.id, first.id]);
      expect((await webhooks.listDeliveries(orgId, webhook.id, 1)).map((d) => d.id)).toEqual([second.id]);
      const stored = await webhooks.getDelivery(orgId, first.id);
      expect(stored).toMatchObject({ payload: first.payload, status: 'pending' });
      expect(await webhooks.getDelivery(unique('org'), first.id)).toBeNull();
      if (stored === null) return;
      const attempt = { at: new Date().toISOString(), statusCode: 500, latencyMs: 12, error: null };
      const saved = await webhooks.replaceDelivery({ ...stored, attempts: [attempt], status: 'delivered', nextAttemptAt: null });
      expect(await codeOf(webhooks.replaceDelivery({ ...stored, status: 'failed' }))).toBe('CONCURRENT_UPDATE');
      expect(await webhooks.getDelivery(orgId, first.id)).toMatchObject({ status: 'delivered', attempts: [attempt], etag: saved.etag });
    });

    it('lists due, unlocked, pending deliveries across orgs, earliest first', async () => {
      const { webhooks } = harness;
      const [a, b] = [await webhooks.createWebhook(makeWebhook(unique('org'))), await webhooks.createWebhook(makeWebhook(unique('org')))];
      const now = new Date();
      const ago = (ms: number) => new Date(now.getTime() - ms).toISOString();
      const due1 = delivery(a, { nextAttemptAt: ago(60_000) });
      const due2 = delivery(b, { nextAttemptAt: ago(30_000) });
      const later = delivery(a, { nextAttemptAt: new Date(now.getTime() + 60_000).toISOString() });
      const locked = delivery(b, { nextAttemptAt: ago(40_000), lockedUntil: new Date(now.getTime() + 60_000).toISOString() });
      const lockExpired = delivery(b, { nextAttemptAt: ago(20_000), lockedUntil: ago(1000) });
      const done = delivery(a, { nextAttemptAt: ago(50_000), status: 'delivered' });
      for (const d of [due1, due2, later, locked, lockExpired, done]) await webhooks.createDelivery(d);
      const ours = new Set([due1, due2, later, locked, lockExpired, done].map((d) => d.id));
      const due = (await webhooks.listDueDeliveries(now, 1000)).filter((d) => ours.has(d.id)).map((d) => d.id);
      expect(due).toEqual([due1.id, due2.id, lockExpired.id]);
    });
  });
}
