import type { Container, FeedOptions, SqlQuerySpec } from '@azure/cosmos';
import type { DependencyHealth, WebhookDelivery, WebhookEndpoint, WebhookStore } from '@zepid/core';
import { DeployError, probe } from '@zepid/core';
import { cosmosStatus, toStoreError } from './errors.ts';
import type { CosmosDeploymentStore } from './store.ts';

type Kind = 'webhook' | 'webhook_delivery';

interface SystemProperties {
  _etag?: string;
}

/**
 * Webhook endpoints and deliveries in the deployments container (partitioned by org, like the
 * records; infra declares nothing new), as documents of `type` `webhook` and `webhook_delivery`.
 * Every query of the deployment store filters on `type`, so neither sees the other's documents.
 * `uniqueKey` is the document id: the container's unique key policy counts a missing value as one.
 * The container is opened (and, on emulators, created) by the deployment store, and used through
 * the deployment store's one Cosmos client (its connections, token cache and retry state are not
 * duplicated): this store has no client of its own, works while the deployment store is started,
 * and answers "not started" before or after.
 */
export class CosmosWebhookStore implements WebhookStore {
  private readonly deployments: Pick<CosmosDeploymentStore, 'sharedContainer'>;

  constructor(deployments: Pick<CosmosDeploymentStore, 'sharedContainer'>) {
    this.deployments = deployments;
  }

  /** Nothing to open: the deployment store (started first, see the wiring's order) holds the client. */
  start(): Promise<void> {
    return Promise.resolve();
  }

  /** Nothing to close: the deployment store disposes the client. */
  close(): Promise<void> {
    return Promise.resolve();
  }

  health(): Promise<DependencyHealth> {
    return probe(async () => {
      try {
        await this.container().read();
      } catch (error) {
        throw toStoreError(error, 'read the container');
      }
    });
  }

  private container(): Container {
    return this.deployments.sharedContainer();
  }

  private toDocument<T extends { id: string; etag: string }>(value: T, type: Kind) {
    const { etag: _etag, ...fields } = value;
    return { ...fields, type, uniqueKey: `${type}:${value.id}` };
  }

  private fromDocument<T>(resource: Record<string, unknown> & SystemProperties): T {
    const { _etag, _rid: _r, _self: _s, _ts: _t, _attachments: _a, type: _type, uniqueKey: _u, ...fields } = resource;
    return { ...fields, etag: _etag ?? '' } as T;
  }

  private async query<T>(spec: SqlQuerySpec, options: FeedOptions, action: string): Promise<T[]> {
    try {
      const { resources } = await this.container().items.query<Record<string, unknown>>(spec, options).fetchAll();
      return resources.map((resource) => this.fromDocument<T>(resource));
    } catch (error) {
      throw toStoreError(error, action);
    }
  }

  private async read<T>(orgId: string, id: string, type: Kind): Promise<T | null> {
    try {
      const { resource, statusCode } = await this.container().item(id, orgId).read<Record<string, unknown>>();
      if (statusCode === 404 || resource === undefined || resource.type !== type) return null;
      return this.fromDocument<T>(resource);
    } catch (error) {
      if (cosmosStatus(error) === 404) return null;
      throw toStoreError(error, `read a ${type}`);
    }
  }

  private async replace<T extends { id: string; orgId: string; etag: string }>(value: T, type: Kind): Promise<T> {
    if (value.etag === '') throw new DeployError('CONCURRENT_UPDATE', `${type} ${value.id} was not read before writing`, { retryable: true });
    try {
      const { resource } = await this.container()
        .item(value.id, value.orgId)
        .replace(this.toDocument(value, type), { accessCondition: { type: 'IfMatch', condition: value.etag } });
      if (resource === undefined) throw new DeployError('INTERNAL_ERROR', `Cosmos DB did not return ${type} ${value.id}`);
      return this.fromDocument<T>(resource);
    } catch (error) {
      const status = cosmosStatus(error);
      if (status === 412) throw new DeployError('CONCURRENT_UPDATE', `${type} ${value.id} changed since it was read`, { retryable: true, cause: error });
      if (status === 404) throw new DeployError('NOT_FOUND', `${type} ${value.id} not found`, { cause: error });
      throw toStoreError(error, `update a ${type}`);
    }
  }

  async createWebhook(webhook: WebhookEndpoint): Promise<WebhookEndpoint> {
    try {
      const { resource } = await this.container().items.create(this.toDocument(webhook, 'webhook'));
      if (resource === undefined) throw new DeployError('INTERNAL_ERROR', `Cosmos DB did not return webhook ${webhook.id}`);
      return this.fromDocument<WebhookEndpoint>(resource as unknown as Record<string, unknown>);
    } catch (error) {
      if (cosmosStatus(error) === 409) throw new DeployError('CONFLICT', `Webhook ${webhook.id} already exists`, { cause: error });
      throw toStoreError(error, 'create a webhook');
    }
  }

  getWebhook(orgId: string, id: string): Promise<WebhookEndpoint | null> {
    return this.read<WebhookEndpoint>(orgId, id, 'webhook');
  }

  listWebhooks(orgId: string): Promise<WebhookEndpoint[]> {
    return this.query<WebhookEndpoint>(
      { query: `SELECT * FROM c WHERE c.type = 'webhook' AND c.orgId = @orgId ORDER BY c.createdAt ASC`, parameters: [{ name: '@orgId', value: orgId }] },
      { partitionKey: orgId },
      'list webhooks',
    );
  }

  replaceWebhook(webhook: WebhookEndpoint): Promise<WebhookEndpoint> {
    return this.replace(webhook, 'webhook');
  }

  async deleteWebhook(orgId: string, id: string): Promise<void> {
    const deliveries = await this.query<WebhookDelivery>(
      { query: `SELECT * FROM c WHERE c.type = 'webhook_delivery' AND c.webhookId = @id`, parameters: [{ name: '@id', value: id }] },
      { partitionKey: orgId },
      'list a webhook\'s deliveries',
    );
    for (const [itemId, type] of [...deliveries.map((d) => [d.id, 'delivery'] as const), [id, 'webhook'] as const]) {
      try {
        await this.container().item(itemId, orgId).delete();
      } catch (error) {
        if (cosmosStatus(error) !== 404) throw toStoreError(error, `delete a ${type}`);
      }
    }
  }

  async createDelivery(delivery: WebhookDelivery): Promise<boolean> {
    try {
      await this.container().items.create(this.toDocument(delivery, 'webhook_delivery'));
      return true;
    } catch (error) {
      if (cosmosStatus(error) === 409) return false;
      throw toStoreError(error, 'create a webhook delivery');
    }
  }

  getDelivery(orgId: string, id: string): Promise<WebhookDelivery | null> {
    return this.read<WebhookDelivery>(orgId, id, 'webhook_delivery');
  }

  listDeliveries(orgId: string, webhookId: string, limit: number): Promise<WebhookDelivery[]> {
    return this.query<WebhookDelivery>(
      {
        query: `SELECT TOP @limit * FROM c WHERE c.type = 'webhook_delivery' AND c.webhookId = @webhookId ORDER BY c.createdAt DESC`,
        parameters: [
          { name: '@webhookId', value: webhookId },
          { name: '@limit', value: limit },
        ],
      },
      { partitionKey: orgId },
      'list webhook deliveries',
    );
  }

  replaceDelivery(delivery: WebhookDelivery): Promise<WebhookDelivery> {
    return this.replace(delivery, 'webhook_delivery');
  }

  async listDueDeliveries(now: Date, limit: number): Promise<WebhookDelivery[]> {
    const at = now.toISOString();
    const due = await this.query<WebhookDelivery>(
      {
        query: `SELECT TOP @limit * FROM c WHERE c.type = 'webhook_delivery' AND c.status = 'pending' AND c.nextAttemptAt <= @now ORDER BY c.nextAttemptAt ASC`,
        parameters: [
          { name: '@now', value: at },
          { name: '@limit', value: limit * 2 },
        ],
      },
      {},
      'list due webhook deliveries',
    );
    return due.filter((delivery) => delivery.lockedUntil === null || delivery.lockedUntil <= at).slice(0, limit);
  }
}
