import type { Container } from '@azure/cosmos';
import type { StreamLeaseStore } from '@zepid/core';
import { DeployError } from '@zepid/core';
import { randomBytes } from 'node:crypto';
import { cosmosStatus, toStoreError } from './errors.ts';
import type { CosmosDeploymentStore } from './store.ts';

/** Conditional writes that lost to another replica are tried again this many times. */
const ATTEMPTS = 20;

interface LeaseDocument {
  id: string;
  orgId: string;
  type: 'stream_leases';
  uniqueKey: string;
  /** Lease id → expiry (ms since the epoch). */
  leases: Record<string, number>;
  _etag?: string;
}

/**
 * Stream leases in the deployments container (partitioned by org; infra declares nothing new): one
 * document per token (`stream-leases:<token hash>`, `type` `stream_leases`, which no query of the
 * deployment or webhook store reads) holding its leases and their expiries. Every change is a
 * conditional write on the document's etag (If-Match, or a create that fails if another replica
 * created it first: https://learn.microsoft.com/azure/cosmos-db/nosql/database-transactions-optimistic-concurrency),
 * read again and retried when another replica wrote in between, so the count and the new lease are
 * one atomic step across replicas. Through the deployment store's client, as the webhook store.
 */
export class CosmosStreamLeaseStore implements StreamLeaseStore {
  private readonly deployments: Pick<CosmosDeploymentStore, 'sharedContainer'>;

  constructor(deployments: Pick<CosmosDeploymentStore, 'sharedContainer'>) {
    this.deployments = deployments;
  }

  /** Nothing to open: the deployment store (started first) holds the client. */
  start(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  acquire(orgId: string, key: string, limit: number, ttlMs: number, now: Date): Promise<string | null> {
    const id = `sl_${randomBytes(12).toString('hex')}`;
    return this.update(orgId, key, 'open a stream lease', (leases) => {
      if (Object.keys(leases).length >= limit) return { write: false, result: null };
      leases[id] = now.getTime() + ttlMs;
      return { write: true, result: id };
    }, now);
  }

  async renew(orgId: string, key: string, ids: readonly string[], ttlMs: number, now: Date): Promise<void> {
    if (ids.length === 0) return;
    await this.update(orgId, key, 'renew stream leases', (leases) => {
      let write = false;
      for (const id of ids) {
        if (leases[id] === undefined) continue;
        leases[id] = now.getTime() + ttlMs;
        write = true;
      }
      return { write, result: undefined };
    }, now);
  }

  async release(orgId: string, key: string, id: string): Promise<void> {
    await this.update(orgId, key, 'release a stream lease', (leases) => {
      if (leases[id] === undefined) return { write: false, result: undefined };
      delete leases[id];
      return { write: true, result: undefined };
    }, now());
  }

  private container(): Container {
    return this.deployments.sharedContainer();
  }

  /**
   * Reads the token's document, drops expired leases, lets `change` edit the rest, and writes it back
   * conditionally when `change` (or the pruning) changed something; again from the read when another
   * replica wrote first.
   */
  private async update<T>(orgId: string, key: string, action: string, change: (leases: Record<string, number>) => { write: boolean; result: T }, at: Date): Promise<T> {
    const id = `stream-leases:${key}`;
    for (let attempt = 1; attempt <= ATTEMPTS; attempt += 1) {
      let current: LeaseDocument | undefined;
      try {
        const { resource } = await this.container().item(id, orgId).read<LeaseDocument>();
        current = resource;
      } catch (error) {
        if (cosmosStatus(error) !== 404) throw toStoreError(error, action);
      }
      const leases: Record<string, number> = {};
      let pruned = false;
      for (const [lease, expiresAt] of Object.entries(current?.leases ?? {})) {
        if (expiresAt > at.getTime()) leases[lease] = expiresAt;
        else pruned = true;
      }
      const { write, result } = change(leases);
      if (!write && !pruned) return result;
      const document: LeaseDocument = { id, orgId, type: 'stream_leases', uniqueKey: id, leases };
      try {
        if (current === undefined) await this.container().items.create(document);
        else await this.container().item(id, orgId).replace(document, { accessCondition: { type: 'IfMatch', condition: current._etag ?? '' } });
        return result;
      } catch (error) {
        const status = cosmosStatus(error);
        // 412: another replica replaced it since our read; 409: another created it first. Read again.
        if (status !== 412 && status !== 409) throw toStoreError(error, action);
      }
    }
    throw new DeployError('CONCURRENT_UPDATE', `Could not ${action}: the token's stream leases kept changing`, { retryable: true });
  }
}

const now = () => new Date();
