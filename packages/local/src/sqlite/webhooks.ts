import type { DependencyHealth, WebhookDelivery, WebhookEndpoint, WebhookStore } from '@zepid/core';
import { DeployError, probe, secureRandomBytes } from '@zepid/core';
import type { SqliteDatabase } from './database.ts';
import { runSqlite } from './database.ts';

interface Row {
  doc: string;
  etag: string;
}

const newEtag = () => secureRandomBytes(9).toString('base64url');

function parse<T extends { etag: string }>(row: Row): T {
  return { ...(JSON.parse(row.doc) as T), etag: row.etag };
}

function docOf<T extends { etag: string }>(value: T): string {
  const { etag: _etag, ...doc } = value;
  return JSON.stringify(doc);
}

function stale(kind: string, id: string): DeployError {
  return new DeployError('CONCURRENT_UPDATE', `${kind} ${id} changed since it was read`, { retryable: true });
}

const hasWebhookRow = (db: SqliteDatabase, orgId: string): boolean =>
  db.connection.prepare('SELECT 1 FROM webhooks WHERE org_id = ? LIMIT 1').get(orgId) !== undefined;

/** `orgHasWebhook`'s answers within one write transaction of a database: org id → has a webhook. */
const webhookChecks = new WeakMap<SqliteDatabase, { transaction: number; orgs: Map<string, boolean> }>();

/**
 * Whether the org has a webhook (enabled or not: a disabled one can be enabled again and then sees
 * later events), for the outbox (store.ts `writeOutbox`): an org without one keeps no events. Called
 * inside the writing transaction, which holds SQLite's write lock, so no other connection can
 * register a webhook before it commits: the answer holds at the commit. One indexed read
 * (`webhooks_by_org`), kept for the rest of the transaction (a group commit writes dozens of records
 * of the same org); forgotten when this connection writes a webhook (below).
 */
export function orgHasWebhook(db: SqliteDatabase, orgId: string): boolean {
  if (!db.connection.isTransaction) return hasWebhookRow(db, orgId);
  let checks = webhookChecks.get(db);
  if (checks?.transaction !== db.transactionNumber) {
    checks = { transaction: db.transactionNumber, orgs: new Map() };
    webhookChecks.set(db, checks);
  }
  let has = checks.orgs.get(orgId);
  if (has === undefined) {
    has = hasWebhookRow(db, orgId);
    checks.orgs.set(orgId, has);
  }
  return has;
}

/** Webhook endpoints and deliveries in the embedded database (tables of migration 6). */
export class SqliteWebhookStore implements WebhookStore {
  private readonly db: SqliteDatabase;

  constructor(db: SqliteDatabase) {
    this.db = db;
  }

  start(): Promise<void> {
    this.db.open();
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.db.close();
    return Promise.resolve();
  }

  health(): Promise<DependencyHealth> {
    return probe(() => Promise.resolve(this.db.connection.prepare('SELECT 1 FROM webhooks LIMIT 1').get()));
  }

  createWebhook(webhook: WebhookEndpoint): Promise<WebhookEndpoint> {
    return runSqlite(() => {
      const etag = newEtag();
      webhookChecks.delete(this.db);
      this.db.connection
        .prepare('INSERT INTO webhooks (id, org_id, created_at, etag, doc) VALUES (?, ?, ?, ?, ?)')
        .run(webhook.id, webhook.orgId, webhook.createdAt, etag, docOf(webhook));
      return { ...webhook, etag };
    });
  }

  getWebhook(orgId: string, id: string): Promise<WebhookEndpoint | null> {
    return runSqlite(() => {
      const row = this.db.connection.prepare('SELECT doc, etag FROM webhooks WHERE id = ? AND org_id = ?').get(id, orgId) as Row | undefined;
      return row === undefined ? null : parse<WebhookEndpoint>(row);
    });
  }

  listWebhooks(orgId: string): Promise<WebhookEndpoint[]> {
    return runSqlite(() =>
      (this.db.connection.prepare('SELECT doc, etag FROM webhooks WHERE org_id = ? ORDER BY created_at, id').all(orgId) as unknown as Row[]).map(
        (row) => parse<WebhookEndpoint>(row),
      ),
    );
  }

  replaceWebhook(webhook: WebhookEndpoint): Promise<WebhookEndpoint> {
    return runSqlite(() => {
      const etag = newEtag();
      const result = this.db.connection
        .prepare('UPDATE webhooks SET etag = ?, doc = ? WHERE id = ? AND org_id = ? AND etag = ?')
        .run(etag, docOf(webhook), webhook.id, webhook.orgId, webhook.etag);
      if (result.changes === 0) {
        const exists = this.db.connection.prepare('SELECT 1 FROM webhooks WHERE id = ? AND org_id = ?').get(webhook.id, webhook.orgId);
        if (exists === undefined) throw new DeployError('NOT_FOUND', `Webhook ${webhook.id} not found`);
        throw stale('Webhook', webhook.id);
      }
      return { ...webhook, etag };
    });
  }

  deleteWebhook(orgId: string, id: string): Promise<void> {
    return runSqlite(() =>
      this.db.transaction(() => {
        webhookChecks.delete(this.db);
        this.db.connection.prepare('DELETE FROM webhook_deliveries WHERE org_id = ? AND webhook_id = ?').run(orgId, id);
        this.db.connection.prepare('DELETE FROM webhooks WHERE id = ? AND org_id = ?').run(id, orgId);
      }),
    );
  }

  createDelivery(delivery: WebhookDelivery): Promise<boolean> {
    return runSqlite(() => {
      const result = this.db.connection
        .prepare(
          `INSERT INTO webhook_deliveries (id, org_id, webhook_id, status, next_attempt_at, created_at, etag, doc)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
        )
        .run(delivery.id, delivery.orgId, delivery.webhookId, delivery.status, delivery.nextAttemptAt, delivery.createdAt, newEtag(), docOf(delivery));
      return Number(result.changes) > 0;
    });
  }

  getDelivery(orgId: string, id: string): Promise<WebhookDelivery | null> {
    return runSqlite(() => {
      const row = this.db.connection.prepare('SELECT doc, etag FROM webhook_deliveries WHERE id = ? AND org_id = ?').get(id, orgId) as Row | undefined;
      return row === undefined ? null : parse<WebhookDelivery>(row);
    });
  }

  listDeliveries(orgId: string, webhookId: string, limit: number): Promise<WebhookDelivery[]> {
    return runSqlite(() =>
      (
        this.db.connection
          .prepare('SELECT doc, etag FROM webhook_deliveries WHERE org_id = ? AND webhook_id = ? ORDER BY created_at DESC, id DESC LIMIT ?')
          .all(orgId, webhookId, limit) as unknown as Row[]
      ).map((row) => parse<WebhookDelivery>(row)),
    );
  }

  replaceDelivery(delivery: WebhookDelivery): Promise<WebhookDelivery> {
    return runSqlite(() => {
      const etag = newEtag();
      const result = this.db.connection
        .prepare('UPDATE webhook_deliveries SET status = ?, next_attempt_at = ?, etag = ?, doc = ? WHERE id = ? AND org_id = ? AND etag = ?')
        .run(delivery.status, delivery.status === 'pending' ? delivery.nextAttemptAt : null, etag, docOf(delivery), delivery.id, delivery.orgId, delivery.etag);
      if (result.changes === 0) {
        const exists = this.db.connection.prepare('SELECT 1 FROM webhook_deliveries WHERE id = ? AND org_id = ?').get(delivery.id, delivery.orgId);
        if (exists === undefined) throw new DeployError('NOT_FOUND', `Delivery ${delivery.id} not found`);
        throw stale('Delivery', delivery.id);
      }
      return { ...delivery, etag };
    });
  }

  listDueDeliveries(now: Date, limit: number): Promise<WebhookDelivery[]> {
    return runSqlite(() => {
      const at = now.toISOString();
      return (
        this.db.connection
          .prepare(`SELECT doc, etag FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, rowid LIMIT ?`)
          .all(at, limit * 2) as unknown as Row[]
      )
        .map((row) => parse<WebhookDelivery>(row))
        .filter((delivery) => delivery.lockedUntil === null || delivery.lockedUntil <= at)
        .slice(0, limit);
    });
  }
}
