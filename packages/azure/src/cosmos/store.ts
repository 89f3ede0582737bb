import { createHash } from 'node:crypto';
import type { Container, ContainerDefinition, FeedOptions, JSONObject, OperationInput, OperationResponse, SqlParameter, SqlQuerySpec } from '@azure/cosmos';
import { CosmosClient } from '@azure/cosmos';
import type { TokenCredential } from '@azure/identity';
import type {
  AppRecord,
  AppRef,
  CreateOptions,
  DependencyHealth,
  DeploymentRecord,
  DeploymentRef,
  DeploymentStatus,
  DeploymentStore,
  Logger,
  OutboxEvent,
  Page,
  PendingEvent,
  WorkerHeartbeat,
} from '@zepid/core';
import { ACTIVE_STATUSES, DEPLOYMENT_STATUSES, DeployError, probe, quotaExceeded, silentLogger, TERMINAL_STATUSES } from '@zepid/core';
import { cosmosStatus, toStoreError } from './errors.ts';

/**
 * Deployment store on Azure Cosmos DB (NoSQL API).
 *
 * Partition key `/orgId`. Every request of the API carries the org (from the token) and every job
 * message carries `orgId`, so a status read is a point read `item(id, orgId)` (1 RU), and a project's
 * listing, the idempotency lookup and the per-org active count are single-partition queries. Tenants
 * are isolated by the partition as well as by the filter. What it costs: the worker's sweeps (outbox,
 * timeouts, retention across orgs) fan out over all partitions; they run every few seconds at most,
 * with a limit. A logical partition holds at most 20 GB, about ten million records of one org,
 * far more than retention lets accumulate.
 *
 * One container holds two kinds of documents, told apart by `type`:
 * - `deployment`: the record as is, plus `uniqueKey` and, when it may expire, `ttl`;
 * - `app`: an app's record (issue 12: env variable names, deletion), id `app:<appName>`, in its org's
 *   partition. Deployment ids start with `dep_`, so the two never collide, and every query over
 *   deployments filters on `type = 'deployment'` (as the webhook store's do on theirs);
 * - `outbox_event`: a webhook event a record's write carried (issue 13's outbox), id = the event id
 *   (`evt_…`), in its org's partition, written in one transactional batch with the record (below)
 *   and deleted by the dispatcher once fanned out;
 * - `heartbeat`: one per worker, in the reserved partition `_workers`. Org ids start with a letter
 *   or digit (ID_PATTERN), so no org can own that partition. Heartbeats need no second container,
 *   and their `ttl` of one day forgets workers that stopped beating, as the SQLite store does.
 *
 * Retention: the container runs with `defaultTtl: -1` (TTL on, nothing expires unless it says so).
 * Failed, cancelled and superseded records carry `ttl = retentionDays` and so disappear that long after their
 * last write. A completed record is written without a `ttl`: the newest completed deployment of an
 * app is the one serving traffic (cleanup keeps it, rollback needs it), so it only receives a `ttl`
 * once a newer deployment of the same app completes. A retried record (failed → queued) is written
 * whole without `ttl` and stops expiring. TTL deletes the record only, not its blobs or Key Vault
 * secrets: it is the backstop behind the API's retention cleanup, so `retentionDays` should exceed
 * RETENTION_DAYS.
 *
 * Writes are whole-document `replace`s conditional on the `_etag` read (If-Match); a 412 becomes
 * CONCURRENT_UPDATE. There is no partial update (PATCH): the emulator has none and the state machine
 * produces whole records anyway.
 *
 * Webhook outbox (issue 16): a write whose record carries events (`outbox`) is one transactional
 * batch in the org's partition: the record's create, or its replace with `ifMatch` on the etag read,
 * first, then an upsert of one `outbox_event` document per event. A transactional batch runs all its
 * operations or none; when one fails it has that operation's status (412 for a stale etag, 409 for
 * an existing id) and every other operation 424 (https://learn.microsoft.com/azure/cosmos-db/nosql/transactional-batch).
 * So an event exists exactly when the status change that caused it was written. The dispatcher finds
 * events with `c.type = 'outbox_event' ORDER BY c.at` (range index on both, no read of any deployment)
 * and deletes each once fanned out, which never touches the record and so never races the workflow's
 * conditional writes. cosmosdb-server (the tests' emulator) runs a batch's operations in order and
 * stops at the first failure without undoing earlier ones: putting the one operation that can fail
 * (the conditional replace, or the create) first makes it behave as the service does for our batches.
 *
 * The org's active-deployment limit is best effort here: the count and the insert are two requests,
 * so two creates racing at the limit can both pass, leaving the org one or two over. SQLite checks
 * and inserts in one transaction and never overshoots. The limit guards against runaway clients, and
 * closing the gap would take a counter document on the hot path of every status change.
 */

export type CosmosConnectionOptions =
  /** Production: the account endpoint and an Entra credential (managed identity). */
  | { endpoint: string; credential: TokenCredential }
  /** Emulators and key-based auth. */
  | { connectionString: string };

export type CosmosStoreOptions = CosmosConnectionOptions & {
  databaseId: string;
  containerId: string;
  /**
   * Create the database and container when absent (emulators, key-based dev accounts). In Azure infra
   * creates them: Cosmos' data-plane roles, which a managed identity gets, cannot create either.
   */
  createIfMissing: boolean;
  /** Days a finished record lives after its last write (see above); null: records never expire. */
  retentionDays: number | null;
  /** Per-request timeout; the SDK's own default is a minute, too long for an API answering users. */
  requestTimeoutMs?: number;
  logger?: Logger;
};

const PARTITION_KEY_PATH = '/orgId';
const HEARTBEAT_PARTITION = '_workers';
const HEARTBEAT_TTL_SECONDS = 86_400;
const DAY_SECONDS = 86_400;
const CURSOR_VERSION = 1;
/** Keeps Cosmos continuation tokens, and so our cursors, well under the API's cursor length limit. */
const CONTINUATION_LIMIT_KB = 1;
/** A page can come back short on Cosmos; we ask again this many times before returning it short. */
const MAX_FETCHES_PER_PAGE = 10;

/**
 * The container as `createIfMissing` makes it; infra (Bicep) must declare the same. The composite
 * index serves ORDER BY createdAt DESC, id DESC (Cosmos refuses multi-property ORDER BY without one).
 * The unique key makes an idempotency key unique per org, like SQLite's unique index; a record
 * without one uses its own id, because Cosmos counts a missing value as a value.
 */
export const DEPLOYMENTS_CONTAINER: Omit<ContainerDefinition, 'id'> = {
  partitionKey: { paths: [PARTITION_KEY_PATH] },
  defaultTtl: -1,
  indexingPolicy: {
    indexingMode: 'consistent',
    automatic: true,
    includedPaths: [{ path: '/*' }],
    // Never filtered on; leaving them out makes every write cheaper.
    excludedPaths: [{ path: '/steps/*' }, { path: '/spec/*' }, { path: '/source/*' }, { path: '/result/*' }, { path: '/error/*' }, { path: '/"_etag"/?' }],
    compositeIndexes: [
      [
        { path: '/createdAt', order: 'descending' },
        { path: '/id', order: 'descending' },
      ],
    ],
  },
  uniqueKeyPolicy: { uniqueKeys: [{ paths: ['/uniqueKey'] }] },
};

interface SystemProperties {
  _rid?: string;
  _self?: string;
  _etag?: string;
  _ts?: number;
  _attachments?: string;
}

type DeploymentDocument = Omit<DeploymentRecord, 'etag'> & {
  type: 'deployment';
  uniqueKey: string;
  /**
   * Build reuse: `steps.validate.output.buildKey` copied to the top level, because `/steps/*` is not
   * indexed (and a query filtering on an excluded path is refused). Absent until validate records one.
   */
  buildKey?: string;
  ttl?: number;
};

/** A pending webhook event (see above): the event as the record's write carried it, with what its fan-out needs. */
interface OutboxEventDocument {
  id: string;
  orgId: string;
  type: 'outbox_event';
  uniqueKey: string;
  deploymentId: string;
  projectId: string;
  /** The event's timestamp: the listing's order. */
  at: string;
  event: OutboxEvent;
}

interface HeartbeatDocument {
  id: string;
  orgId: typeof HEARTBEAT_PARTITION;
  type: 'heartbeat';
  uniqueKey: string;
  ttl: number;
  lastSeenAt: string;
  heartbeat: WorkerHeartbeat;
}

interface Cursor {
  v: number;
  /** Binds the cursor to the listing it came from. */
  scope: string;
  token: string;
}

function validationError(message: string): DeployError {
  return new DeployError('VALIDATION_ERROR', message, { details: [{ field: 'cursor', message: 'is invalid' }] });
}

function listingScope(orgId: string, projectId: string): string {
  return createHash('sha256').update(`${orgId}\u0000${projectId}`).digest('base64url').slice(0, 16);
}

function encodeCursor(scope: string, token: string): string {
  const cursor: Cursor = { v: CURSOR_VERSION, scope, token };
  return Buffer.from(JSON.stringify(cursor)).toString('base64url');
}

function decodeCursor(cursor: string, scope: string): string {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw validationError('cursor is not one this service returned');
  }
  const candidate = value as Partial<Cursor> | null;
  if (
    typeof candidate !== 'object' ||
    candidate === null ||
    candidate.v !== CURSOR_VERSION ||
    typeof candidate.token !== 'string' ||
    candidate.token === '' ||
    typeof candidate.scope !== 'string'
  ) {
    throw validationError('cursor is not one this service returned');
  }
  if (candidate.scope !== scope) throw validationError('cursor belongs to another listing');
  return candidate.token;
}

function toRecord(resource: DeploymentDocument & SystemProperties): DeploymentRecord {
  const { _rid, _self, _etag, _ts, _attachments, type: _type, uniqueKey: _uniqueKey, buildKey: _buildKey, ttl: _ttl, ...record } = resource;
  if (_etag === undefined) throw new DeployError('INTERNAL_ERROR', `Cosmos DB returned deployment ${resource.id} without an etag`);
  return { ...record, etag: _etag };
}

function parameters(values: Record<string, unknown>): SqlParameter[] {
  return Object.entries(values).map(([name, value]) => ({ name: `@${name}`, value: value as SqlParameter['value'] }));
}

function outboxDocument(record: DeploymentRecord, event: OutboxEvent): OutboxEventDocument {
  return {
    id: event.id,
    orgId: record.orgId,
    type: 'outbox_event',
    uniqueKey: `outbox_event:${event.id}`,
    deploymentId: record.id,
    projectId: record.projectId,
    at: event.timestamp,
    event,
  };
}

/** An app record: the record as is (without etag) plus what the container needs. */
type AppDocument = Omit<AppRecord, 'etag'> & { id: string; type: 'app'; uniqueKey: string };

/** Listing scopes (cursor binding) of apps and of one app's deployments; project ids never contain NUL. */
const APPS_LISTING = '\u0000apps';
const APP_LISTING_PREFIX = '\u0000app\u0000';
/** Rows per query of listApps (three short strings each). */
const APP_SCAN_BATCH = 100;
/** Cosmos ids may not contain `/`, `\\`, `?` or `#` (https://learn.microsoft.com/azure/cosmos-db/concepts-limits#per-item-limits). */
const APP_NAME = /^[^/\\?#]{1,200}$/;

function appDocumentId(appName: string): string {
  if (!APP_NAME.test(appName)) throw new DeployError('VALIDATION_ERROR', `not an app name: ${JSON.stringify(appName.slice(0, 210))}`);
  return `app:${appName}`;
}

function toAppDocument(app: AppRecord): AppDocument {
  const { etag: _etag, ...fields } = app;
  const id = appDocumentId(app.appName);
  return { ...fields, id, type: 'app', uniqueKey: id };
}

function toApp(resource: AppDocument & SystemProperties): AppRecord {
  const { _rid, _self, _etag, _ts, _attachments, id: _id, type: _type, uniqueKey: _uniqueKey, ...app } = resource;
  if (_etag === undefined) throw new DeployError('INTERNAL_ERROR', `Cosmos DB returned app ${resource.appName} without an etag`);
  return { ...app, etag: _etag };
}

export class CosmosDeploymentStore implements DeploymentStore {
  private readonly options: CosmosStoreOptions;
  private readonly logger: Logger;
  private client: CosmosClient | null = null;
  private containerRef: Container | null = null;

  constructor(options: CosmosStoreOptions) {
    if (options.retentionDays !== null && !(options.retentionDays > 0)) {
      throw new Error('retentionDays must be a positive number of days, or null');
    }
    this.options = options;
    this.logger = (options.logger ?? silentLogger).child({ component: 'cosmos-store' });
  }

  private newClient(): CosmosClient {
    const connectionPolicy = { requestTimeout: this.options.requestTimeoutMs ?? 10_000 };
    const userAgentSuffix = 'zepid-deploy';
    if ('connectionString' in this.options) {
      return new CosmosClient({ connectionString: this.options.connectionString, connectionPolicy, userAgentSuffix });
    }
    return new CosmosClient({ endpoint: this.options.endpoint, aadCredentials: this.options.credential, connectionPolicy, userAgentSuffix });
  }

  async start(): Promise<void> {
    if (this.client !== null) return;
    const client = this.newClient();
    try {
      this.checkDefinition(await this.openContainer(client));
    } catch (error) {
      client.dispose();
      throw error;
    }
    this.client = client;
    this.containerRef = client.database(this.options.databaseId).container(this.options.containerId);
  }

  private async openContainer(client: CosmosClient): Promise<ContainerDefinition | undefined> {
    const { databaseId, containerId } = this.options;
    try {
      if (this.options.createIfMissing) {
        // createIfNotExists is read-then-create: when the API and the worker start together one of
        // them gets 409 for what the other just made. That is "it exists": read it.
        const createOrRead = async <T>(create: () => Promise<T>, read: () => Promise<T>): Promise<T> => {
          try {
            return await create();
          } catch (error) {
            if (cosmosStatus(error) === 409) return read();
            throw error;
          }
        };
        await createOrRead(
          () => client.databases.createIfNotExists({ id: databaseId }),
          () => client.database(databaseId).read(),
        );
        const database = client.database(databaseId);
        return (
          await createOrRead(
            () => database.containers.createIfNotExists({ id: containerId, ...DEPLOYMENTS_CONTAINER }),
            () => database.container(containerId).read(),
          )
        ).resource;
      }
      const response = await client.database(databaseId).container(containerId).read();
      if (response.statusCode !== 404 && response.resource !== undefined) return response.resource;
    } catch (error) {
      if (this.options.createIfMissing || cosmosStatus(error) !== 404) throw toStoreError(error, 'open the deployments container');
    }
    throw new Error(`Cosmos DB container ${databaseId}/${containerId} does not exist and createIfMissing is off`);
  }

  /** A container made by hand or by older infra must match what the queries assume. */
  private checkDefinition(definition: ContainerDefinition | undefined): void {
    const name = `${this.options.databaseId}/${this.options.containerId}`;
    const paths = definition?.partitionKey?.paths ?? [];
    if (paths.length !== 1 || paths[0] !== PARTITION_KEY_PATH) {
      throw new Error(`Cosmos DB container ${name} is partitioned by ${paths.join(',') || 'nothing'}; it must be ${PARTITION_KEY_PATH}`);
    }
    if (this.options.retentionDays !== null && definition?.defaultTtl === undefined) {
      throw new Error(`Cosmos DB container ${name} has TTL off, so finished deployments would never expire; set defaultTtl to -1`);
    }
  }

  close(): Promise<void> {
    this.client?.dispose();
    this.client = null;
    this.containerRef = null;
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
    if (this.containerRef === null) throw new DeployError('INTERNAL_ERROR', 'CosmosDeploymentStore is not started');
    return this.containerRef;
  }

  /**
   * The container this store opened, on its one client: the webhook store keeps its documents in
   * the same container and uses it through here instead of a client of its own.
   */
  sharedContainer(): Container {
    return this.container();
  }

  private toDocument(record: DeploymentRecord): DeploymentDocument {
    // The events the write carries become documents of their own (see `batch`).
    const { etag: _etag, outbox: _events, ...fields } = record;
    const document: DeploymentDocument = {
      ...fields,
      type: 'deployment',
      uniqueKey: record.idempotency === null ? `id:${record.id}` : `idempotency:${record.idempotency.key}`,
    };
    const buildKey = record.steps.validate.output.buildKey;
    if (typeof buildKey === 'string') document.buildKey = buildKey;
    if (this.options.retentionDays !== null && (record.status === 'failed' || record.status === 'cancelled' || record.status === 'superseded')) {
      document.ttl = Math.round(this.options.retentionDays * DAY_SECONDS);
    }
    return document;
  }

  private async query<T>(spec: SqlQuerySpec, options: FeedOptions, action: string): Promise<T[]> {
    try {
      const { resources } = await this.container().items.query<T>(spec, options).fetchAll();
      return resources;
    } catch (error) {
      throw toStoreError(error, action);
    }
  }

  private async queryRecords(query: string, values: Record<string, unknown>, orgId: string | null, action: string): Promise<DeploymentRecord[]> {
    const options: FeedOptions = orgId === null ? {} : { partitionKey: orgId };
    const documents = await this.query<DeploymentDocument & SystemProperties>({ query, parameters: parameters(values) }, options, action);
    return documents.map(toRecord);
  }

  async create(record: DeploymentRecord, options: CreateOptions): Promise<DeploymentRecord> {
    const active = await this.countActive(record.orgId);
    if (active >= options.maxActivePerOrg) throw quotaExceeded(active, options.maxActivePerOrg);
    try {
      if ((record.outbox ?? []).length > 0) {
        const created = await this.batch(record, [{ operationType: 'Create', resourceBody: this.toDocument(record) as unknown as JSONObject }], 'create a deployment');
        return toRecord(created);
      }
      const { resource } = await this.container().items.create<DeploymentDocument>(this.toDocument(record));
      if (resource === undefined) throw new DeployError('INTERNAL_ERROR', `Cosmos DB did not return deployment ${record.id} after creating it`);
      return toRecord(resource);
    } catch (error) {
      if (cosmosStatus(error) === 409) {
        throw new DeployError('CONFLICT', `Deployment ${record.id} or its idempotency key already exists`, { cause: error });
      }
      throw toStoreError(error, 'create a deployment');
    }
  }

  async get(ref: DeploymentRef): Promise<DeploymentRecord | null> {
    try {
      const { resource, statusCode } = await this.container().item(ref.deploymentId, ref.orgId).read<DeploymentDocument & SystemProperties>();
      if (statusCode === 404 || resource?.type !== 'deployment') return null;
      return toRecord(resource);
    } catch (error) {
      if (cosmosStatus(error) === 404) return null;
      throw toStoreError(error, 'read a deployment');
    }
  }

  async replace(record: DeploymentRecord): Promise<DeploymentRecord> {
    // An empty etag would make the write unconditional on some servers; no caller may do that.
    if (record.etag === '') throw new DeployError('CONCURRENT_UPDATE', `Deployment ${record.id} was not read before writing`, { retryable: true });
    let saved: DeploymentRecord;
    try {
      if ((record.outbox ?? []).length > 0) {
        const replaced = await this.batch(
          record,
          [{ operationType: 'Replace', id: record.id, resourceBody: this.toDocument(record) as unknown as JSONObject, ifMatch: record.etag }],
          'update a deployment',
        );
        saved = toRecord(replaced);
      } else {
        const { resource } = await this.container()
          .item(record.id, record.orgId)
          .replace<DeploymentDocument>(this.toDocument(record), { accessCondition: { type: 'IfMatch', condition: record.etag } });
        if (resource === undefined) throw new DeployError('INTERNAL_ERROR', `Cosmos DB did not return deployment ${record.id} after replacing it`);
        saved = toRecord(resource);
      }
    } catch (error) {
      const status = cosmosStatus(error);
      if (status === 412) {
        throw new DeployError('CONCURRENT_UPDATE', `Deployment ${record.id} changed since it was read`, { retryable: true, cause: error });
      }
      if (status === 404) throw new DeployError('NOT_FOUND', `Deployment ${record.id} not found`, { cause: error });
      throw toStoreError(error, 'update a deployment');
    }
    if (saved.status === 'completed' && this.options.retentionDays !== null) await this.expireSuperseded(saved);
    return saved;
  }

  /**
   * One transactional batch in the record's partition: `first` (the record's create or conditional
   * replace, the one operation that can fail) and an upsert of each event the record carries (see
   * the class comment). Returns the record's document as written; a failed batch throws what the
   * failed operation's status means (the callers map 409, 412 and 404 as for a single write). A
   * failed batch may reach us as a thrown SDK error (an HTTP error status, in the error or its
   * `cause`) or as a response whose operations carry the statuses (the emulator answers 200 so):
   * both are read here.
   */
  private async batch(record: DeploymentRecord, first: OperationInput[], action: string): Promise<DeploymentDocument & SystemProperties> {
    const events = record.outbox ?? [];
    // A transactional batch holds at most 100 operations (the SDK refuses more); a write carries 1 or 2 events.
    if (events.length > 99) throw new DeployError('INTERNAL_ERROR', `a deployment write carries ${events.length} webhook events; at most 99 fit one batch`);
    // Each operation names the partition too: the service requires it to equal the batch's, and the
    // emulator reads it from the operation alone.
    const operations: OperationInput[] = [
      ...first,
      ...events.map((event): OperationInput => ({ operationType: 'Upsert', resourceBody: outboxDocument(record, event) as unknown as JSONObject })),
    ].map((operation) => ({ ...operation, partitionKey: record.orgId }));
    let results: OperationResponse[];
    try {
      results = (await this.container().items.batch(operations, record.orgId)).result ?? [];
    } catch (error) {
      const status = cosmosStatus(error) ?? cosmosStatus((error as { cause?: unknown }).cause);
      throw status === undefined ? error : Object.assign(new Error(`Cosmos DB refused the batch to ${action} (HTTP ${status})`, { cause: error }), { code: status });
    }
    const failed = results.find((result) => result.statusCode >= 400 && result.statusCode !== 424) ?? results.find((result) => result.statusCode >= 400);
    if (failed !== undefined) throw Object.assign(new Error(`Cosmos DB refused the batch to ${action} (HTTP ${failed.statusCode})`), { code: failed.statusCode });
    const written = results[0]?.resourceBody as (DeploymentDocument & SystemProperties) | undefined;
    if (written === undefined || results.length !== operations.length) throw new DeployError('INTERNAL_ERROR', `Cosmos DB did not return deployment ${record.id} after a batch to ${action}`);
    return written;
  }

  /**
   * Gives the completed deployments of the app that this one replaces as the live one their `ttl`.
   * Best effort: the write of `completed` has succeeded and must be reported so; whatever is missed
   * here (a concurrent write, an outage) is picked up by the next completion of the app.
   */
  private async expireSuperseded(live: DeploymentRecord): Promise<void> {
    const ttl = Math.round((this.options.retentionDays ?? 0) * DAY_SECONDS);
    try {
      const superseded = await this.query<DeploymentDocument & SystemProperties>(
        {
          query: `SELECT * FROM c WHERE c.orgId = @orgId AND c.type = 'deployment' AND c.appName = @appName AND c.status = 'completed'
                  AND c.id != @id AND c.finishedAt < @finishedAt AND NOT IS_DEFINED(c.ttl)`,
          parameters: parameters({ orgId: live.orgId, appName: live.appName, id: live.id, finishedAt: live.finishedAt ?? live.updatedAt }),
        },
        { partitionKey: live.orgId },
        'find superseded deployments',
      );
      for (const document of superseded) {
        const { _etag: etag, _rid, _self, _ts, _attachments, ...body } = document;
        if (etag === undefined) continue;
        await this.container()
          .item(document.id, document.orgId)
          .replace({ ...body, ttl }, { accessCondition: { type: 'IfMatch', condition: etag } })
          .catch((error: unknown) => {
            if (cosmosStatus(error) !== 412 && cosmosStatus(error) !== 404) throw error;
          });
      }
    } catch (error) {
      this.logger.warn(
        { deploymentId: live.id, error: toStoreError(error, 'expire superseded deployments').message },
        'older completed deployments keep no expiry until the next completion of this app',
      );
    }
  }

  async delete(ref: DeploymentRef): Promise<void> {
    try {
      await this.container().item(ref.deploymentId, ref.orgId).delete();
    } catch (error) {
      if (cosmosStatus(error) === 404) return;
      throw toStoreError(error, 'delete a deployment');
    }
  }

  async findByIdempotencyKey(orgId: string, key: string): Promise<DeploymentRecord | null> {
    const found = await this.queryRecords(
      `SELECT * FROM c WHERE c.orgId = @orgId AND c.type = 'deployment' AND c.uniqueKey = @uniqueKey`,
      { orgId, uniqueKey: `idempotency:${key}` },
      orgId,
      'find a deployment by idempotency key',
    );
    return found[0] ?? null;
  }

  /**
   * The cursor wraps Cosmos' continuation token with the listing it belongs to. The emulator takes
   * any token and Cosmos answers 400 to a mangled one; both become VALIDATION_ERROR here. A page can
   * be short, and the last page can be empty, when Cosmos stops early: clients follow `nextCursor`
   * until it is null, never count items.
   */
  listByProject(orgId: string, projectId: string, page: { limit: number; cursor: string | null }): Promise<Page<DeploymentRecord>> {
    return this.listPaged(
      {
        query: `SELECT * FROM c WHERE c.orgId = @orgId AND c.type = 'deployment' AND c.projectId = @projectId
                ORDER BY c.createdAt DESC, c.id DESC`,
        parameters: parameters({ orgId, projectId }),
      },
      orgId,
      listingScope(orgId, projectId),
      page,
      'list deployments',
    );
  }

  /** A single-partition listing of deployments in pages, its cursor wrapping Cosmos' continuation token. */
  private async listPaged(
    spec: SqlQuerySpec,
    orgId: string,
    scope: string,
    page: { limit: number; cursor: string | null },
    action: string,
  ): Promise<Page<DeploymentRecord>> {
    let token: string | undefined = page.cursor === null ? undefined : decodeCursor(page.cursor, scope);
    const items: DeploymentRecord[] = [];
    for (let fetches = 0; fetches < MAX_FETCHES_PER_PAGE && items.length < page.limit; fetches += 1) {
      const fromCursor = token !== undefined;
      try {
        const response = await this.container()
          .items.query<DeploymentDocument & SystemProperties>(spec, {
            partitionKey: orgId,
            maxItemCount: page.limit - items.length,
            continuationToken: token,
            continuationTokenLimitInKB: CONTINUATION_LIMIT_KB,
          })
          .fetchNext();
        items.push(...response.resources.map(toRecord));
        token = response.continuationToken === undefined || response.continuationToken === '' ? undefined : response.continuationToken;
      } catch (error) {
        const status = cosmosStatus(error);
        if (fromCursor && (status === 400 || (status === undefined && error instanceof SyntaxError))) {
          throw validationError('cursor is not one this service returned');
        }
        throw toStoreError(error, action);
      }
      if (token === undefined) break;
    }
    return { items, nextCursor: token === undefined ? null : encodeCursor(scope, token) };
  }

  listRecent(orgId: string, limit: number): Promise<DeploymentRecord[]> {
    return this.queryRecords(
      `SELECT TOP @limit * FROM c WHERE c.orgId = @orgId AND c.type = 'deployment' ORDER BY c.createdAt DESC, c.id DESC`,
      { orgId, limit },
      orgId,
      'list recent deployments',
    );
  }

  /** One COUNT per status: the emulator has no GROUP BY, and five single-partition counts are cheap. */
  async countByStatus(orgId: string): Promise<Record<DeploymentStatus, number>> {
    const counts = await Promise.all(DEPLOYMENT_STATUSES.map((status) => this.countWithStatus(orgId, [status])));
    return Object.fromEntries(DEPLOYMENT_STATUSES.map((status, index) => [status, counts[index] ?? 0])) as Record<DeploymentStatus, number>;
  }

  countActive(orgId: string): Promise<number> {
    return this.countWithStatus(orgId, ACTIVE_STATUSES);
  }

  private async countWithStatus(orgId: string, statuses: readonly DeploymentStatus[]): Promise<number> {
    const [count] = await this.query<number>(
      {
        query: `SELECT VALUE COUNT(1) FROM c WHERE c.orgId = @orgId AND c.type = 'deployment' AND ARRAY_CONTAINS(@statuses, c.status)`,
        parameters: parameters({ orgId, statuses: [...statuses] }),
      },
      { partitionKey: orgId },
      'count deployments',
    );
    return count ?? 0;
  }

  listFinishedBefore(orgId: string | null, before: Date, limit: number): Promise<DeploymentRecord[]> {
    const org = orgId === null ? '' : 'c.orgId = @orgId AND ';
    return this.queryRecords(
      `SELECT TOP @limit * FROM c WHERE ${org}c.type = 'deployment' AND ARRAY_CONTAINS(@terminal, c.status)
       AND IS_STRING(c.finishedAt) AND c.finishedAt < @before ORDER BY c.finishedAt ASC`,
      { ...(orgId === null ? {} : { orgId }), terminal: [...TERMINAL_STATUSES], before: before.toISOString(), limit },
      orgId,
      'list finished deployments',
    );
  }

  async latestCompleted(orgId: string, appName: string): Promise<DeploymentRecord | null> {
    const [latest] = await this.queryRecords(
      `SELECT TOP 1 * FROM c WHERE c.orgId = @orgId AND c.type = 'deployment' AND c.appName = @appName AND c.status = 'completed'
       ORDER BY c.finishedAt DESC`,
      { orgId, appName },
      orgId,
      'find the live deployment',
    );
    return latest ?? null;
  }

  async latestCompletedWithBuildKey(orgId: string, projectId: string, buildKey: string): Promise<DeploymentRecord | null> {
    const [latest] = await this.queryRecords(
      `SELECT TOP 1 * FROM c WHERE c.orgId = @orgId AND c.type = 'deployment' AND c.projectId = @projectId AND c.buildKey = @buildKey
       AND c.status = 'completed' ORDER BY c.finishedAt DESC`,
      { orgId, projectId, buildKey },
      orgId,
      'find a build to reuse',
    );
    return latest ?? null;
  }

  listUnpublished(before: Date, limit: number): Promise<DeploymentRecord[]> {
    return this.queryRecords(
      `SELECT TOP @limit * FROM c WHERE c.type = 'deployment' AND c.status = 'queued' AND IS_NULL(c.publishedAt)
       AND c.updatedAt < @before ORDER BY c.updatedAt ASC`,
      { before: before.toISOString(), limit },
      null,
      'list unpublished deployments',
    );
  }

  listRunningStartedBefore(before: Date, limit: number): Promise<DeploymentRecord[]> {
    return this.queryRecords(
      `SELECT TOP @limit * FROM c WHERE c.type = 'deployment' AND c.status = 'in_progress' AND IS_STRING(c.attemptStartedAt)
       AND c.attemptStartedAt < @before ORDER BY c.attemptStartedAt ASC`,
      { before: before.toISOString(), limit },
      null,
      'list running deployments',
    );
  }

  /** Pending events only (`type = 'outbox_event'`, range-indexed, ordered by `at`): no deployment document is read. */
  async listOutbox(limit: number, orgId?: string): Promise<PendingEvent[]> {
    const documents = await this.query<OutboxEventDocument>(
      {
        query: `SELECT TOP @limit * FROM c WHERE ${orgId === undefined ? '' : 'c.orgId = @orgId AND '}c.type = 'outbox_event' ORDER BY c.at ASC`,
        parameters: parameters({ limit, ...(orgId === undefined ? {} : { orgId }) }),
      },
      orgId === undefined ? {} : { partitionKey: orgId },
      'list webhook events',
    );
    return documents.map((document) => ({ orgId: document.orgId, deploymentId: document.deploymentId, projectId: document.projectId, event: document.event }));
  }

  /** One delete per event (a batch would fail whole on one already gone); 404 is "already removed". */
  async removeOutbox(events: readonly { orgId: string; eventId: string }[]): Promise<void> {
    await Promise.all(
      events.map(async ({ orgId, eventId }) => {
        try {
          await this.container().item(eventId, orgId).delete();
        } catch (error) {
          if (cosmosStatus(error) !== 404) throw toStoreError(error, 'remove a webhook event');
        }
      }),
    );
  }

  /** Last writer wins: only the worker itself writes its heartbeat, so no etag is needed. */
  async recordHeartbeat(heartbeat: WorkerHeartbeat): Promise<void> {
    const id = `worker:${encodeURIComponent(heartbeat.workerId)}`;
    const document: HeartbeatDocument = {
      id,
      orgId: HEARTBEAT_PARTITION,
      type: 'heartbeat',
      uniqueKey: id,
      ttl: HEARTBEAT_TTL_SECONDS,
      lastSeenAt: heartbeat.lastSeenAt,
      heartbeat,
    };
    try {
      await this.container().items.upsert(document);
    } catch (error) {
      throw toStoreError(error, 'record a worker heartbeat');
    }
  }

  async listHeartbeats(): Promise<WorkerHeartbeat[]> {
    // TTL removes stale heartbeats in Azure; the filter makes emulators (no TTL) agree.
    const since = new Date(Date.now() - HEARTBEAT_TTL_SECONDS * 1000).toISOString();
    const documents = await this.query<HeartbeatDocument>(
      {
        query: `SELECT * FROM c WHERE c.orgId = @orgId AND c.type = 'heartbeat' AND c.lastSeenAt >= @since ORDER BY c.lastSeenAt DESC`,
        parameters: parameters({ orgId: HEARTBEAT_PARTITION, since }),
      },
      { partitionKey: HEARTBEAT_PARTITION },
      'list worker heartbeats',
    );
    return documents.map((document) => document.heartbeat);
  }

  // Apps (issue 12).

  async getApp(orgId: string, appName: string): Promise<AppRecord | null> {
    try {
      const { resource, statusCode } = await this.container().item(appDocumentId(appName), orgId).read<AppDocument & SystemProperties>();
      if (statusCode === 404 || resource?.type !== 'app') return null;
      return toApp(resource);
    } catch (error) {
      if (cosmosStatus(error) === 404) return null;
      throw toStoreError(error, 'read an app');
    }
  }

  async putApp(app: AppRecord): Promise<AppRecord> {
    const document = toAppDocument(app);
    try {
      if (app.etag === '') {
        const { resource } = await this.container().items.create<AppDocument>(document);
        if (resource === undefined) throw new DeployError('INTERNAL_ERROR', `Cosmos DB did not return app ${app.appName} after creating it`);
        return toApp(resource);
      }
      const { resource } = await this.container()
        .item(document.id, app.orgId)
        .replace<AppDocument>(document, { accessCondition: { type: 'IfMatch', condition: app.etag } });
      if (resource === undefined) throw new DeployError('INTERNAL_ERROR', `Cosmos DB did not return app ${app.appName} after replacing it`);
      return toApp(resource);
    } catch (error) {
      const status = cosmosStatus(error);
      if (status === 409) throw new DeployError('CONFLICT', `App ${app.appName} already has a record`, { cause: error });
      // 412: another writer got there first; 404: it was deleted since it was read. Either way the
      // caller's copy is stale: read again (and create, if it is gone) and retry.
      if (status === 412 || status === 404) {
        throw new DeployError('CONCURRENT_UPDATE', `App ${app.appName} changed since it was read`, { retryable: true, cause: error });
      }
      throw toStoreError(error, 'write an app');
    }
  }

  async deleteApp(orgId: string, appName: string): Promise<void> {
    try {
      await this.container().item(appDocumentId(appName), orgId).delete();
    } catch (error) {
      if (cosmosStatus(error) === 404) return;
      throw toStoreError(error, 'delete an app');
    }
  }

  /**
   * Apps are the distinct `appName`s of the org's deployment and app documents. DISTINCT and GROUP BY
   * would say that in one query on Cosmos DB, but cosmosdb-server (the emulator of the tests) supports
   * neither (its grammar has TOP, ORDER BY and VALUE only), so this walks the appName range index:
   * `appName > @after ORDER BY appName` (a single-property ORDER BY is served by the default range
   * index: https://learn.microsoft.com/azure/cosmos-db/nosql/query/order-by), projecting three small
   * fields, skipping the rows of apps already seen. Each query yields at least one new app, since the
   * next starts after the last appName seen, so a page costs at most `limit + 1` single-partition
   * queries (an org whose apps each have more than APP_SCAN_BATCH deployments), usually one. The
   * cursor is the last appName of the page (key-based): stable under inserts and deletes, unlike a
   * continuation token over rows.
   */
  async listApps(orgId: string, page: { limit: number; cursor: string | null }): Promise<Page<AppRef>> {
    const scope = listingScope(orgId, APPS_LISTING);
    let after = page.cursor === null ? '' : decodeCursor(page.cursor, scope);
    const apps: AppRef[] = [];
    for (;;) {
      const rows = await this.query<AppRef>(
        {
          query: `SELECT TOP @batch c.orgId, c.projectId, c.environment, c.appName FROM c
                  WHERE c.orgId = @orgId AND ARRAY_CONTAINS(@types, c.type) AND c.appName > @after ORDER BY c.appName ASC`,
          parameters: parameters({ orgId, types: ['deployment', 'app'], after, batch: APP_SCAN_BATCH }),
        },
        { partitionKey: orgId },
        'list apps',
      );
      for (const row of rows) {
        if (row.appName === apps.at(-1)?.appName) continue;
        apps.push({ orgId: row.orgId, projectId: row.projectId, environment: row.environment, appName: row.appName });
      }
      const last = rows.at(-1);
      // Fewer rows than asked: the range is exhausted. Enough apps: one more than the page tells
      // whether a next page exists.
      if (rows.length < APP_SCAN_BATCH || last === undefined || apps.length > page.limit) break;
      after = last.appName;
    }
    const items = apps.slice(0, page.limit);
    const more = apps.length > page.limit;
    return { items, nextCursor: more ? encodeCursor(scope, items.at(-1)?.appName ?? '') : null };
  }

  listByApp(orgId: string, appName: string, page: { limit: number; cursor: string | null }): Promise<Page<DeploymentRecord>> {
    return this.listPaged(
      {
        query: `SELECT * FROM c WHERE c.orgId = @orgId AND c.type = 'deployment' AND c.appName = @appName
                ORDER BY c.createdAt DESC, c.id DESC`,
        parameters: parameters({ orgId, appName }),
      },
      orgId,
      listingScope(orgId, `${APP_LISTING_PREFIX}${appName}`),
      page,
      'list deployments of an app',
    );
  }
}
