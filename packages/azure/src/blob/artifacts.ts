import type { ContainerClient, StoragePipelineOptions } from '@azure/storage-blob';
import { BlobServiceClient } from '@azure/storage-blob';
import type { TokenCredential } from '@azure/identity';
import type { ArtifactStore, DependencyHealth, DeploymentRef, StoredObject } from '@zepid/core';
import { checkObject, DEPLOYMENT_ID_PATTERN, DeployError, FILE_DIGEST_PATTERN, mapLimit, OBJECT_RETENTION, orgStorageKey, probe } from '@zepid/core';
import { storageCode, storageStatus, toArtifactError } from './errors.ts';

/**
 * Artifact store on Azure Blob Storage: three containers.
 *
 *   sources/manifests/<org key>/<id>.json.gz   block blob, a deployment's source manifest (JSON; gzipped
 *                                              when written before manifests were plain: the name stays
 *                                              so both are found, and core's decoder reads both)
 *   sources/objects/<org key>/<sha256>         block blob, one file's content, once per org
 *   contexts/<id>.tar.gz    block blob, the build context; its URL is kaniko's `--context`
 *   logs/<id>.ndjson        append blob, the deployment's log (and <id>.<n>.ndjson, see below)
 *
 * The org key is a hash of the org id (core's orgStorageKey). An object's Last-Modified is its last
 * use: `findObjects` sets metadata on one last used over an hour ago, which moves Last-Modified and the
 * ETag, and the sweep deletes with If-Match on the ETag it listed, so an object used meanwhile stays.
 * Objects are created with If-None-Match: *, so two requests storing the same file upload it once
 * between them and both learn whether they wrote it.
 *
 * Logs are append blobs, so a line is written once and never rewritten. Their limits shape the code:
 * - A block holds at most 4 MiB: a larger append is cut into 4 MiB blocks, at chunk boundaries where
 *   it can be (a chunk cut in two can tear a line if the process dies between the blocks; readers
 *   skip a torn line).
 * - A blob holds at most 50,000 blocks: each append costs one, so appends are batched. Calls for the
 *   same deployment that arrive while an append is in flight are written together, in call order, as
 *   one block (group commit). Callers that await every line still spend a block per line, so the
 *   worker should flush lines in batches. When a blob is full anyway, it is sealed and the log goes on
 *   in `<id>.1.ndjson`, `<id>.2.ndjson` …; readers list the segments and join them. Only the newest
 *   segment accepts appends (older ones are sealed or full), so writers in different processes, each
 *   starting from the oldest segment they know, never write out of order.
 * An append that times out and is retried by the SDK can be stored twice: appends are at-least-once.
 */

export type BlobConnectionOptions =
  /** Production: `https://<account>.blob.core.windows.net` and an Entra credential (managed identity). */
  | { accountUrl: string; credential: TokenCredential }
  /** Azurite and key-based auth. */
  | { connectionString: string };

export type BlobArtifactStoreOptions = BlobConnectionOptions & {
  containers: { sources: string; contexts: string; logs: string };
  /** Create the containers when absent (emulators, dev); infra creates them in Azure. */
  createIfMissing: boolean;
  /** Blocks per log blob before it is sealed and the next begins: Azure's limit unless a test lowers it. */
  maxBlocksPerLogBlob?: number;
  /** How stale a found object's last use must be to be refreshed: OBJECT_RETENTION.touchAfterMs unless a test lowers it. */
  objectTouchAfterMs?: number;
};

const ID = new RegExp(DEPLOYMENT_ID_PATTERN);
const DIGEST = new RegExp(FILE_DIGEST_PATTERN);
/** Object lookups in flight for one request: a 2,000-file deployment is ~125 round trips deep. */
const LOOKUPS = 16;
const MAX_BLOCK_BYTES = 4 * 1024 * 1024;
/** Metadata an object carries between expireObjects and its next use (lowercase: metadata names come back lowercased). */
const EXPIRED_MARK = 'expiredat';
const MAX_BLOCKS_PER_BLOB = 50_000;
/** Deployments whose log rolled over, remembered so appends skip the sealed segments. */
const SEGMENT_HINTS = 1000;
const CONTENT_TYPES = { source: 'application/json', object: 'application/octet-stream', context: 'application/gzip', log: 'application/x-ndjson; charset=utf-8' };
/** The SDK's default first retry waits 4 s and a try has no time limit; an API request cannot wait that long. */
const PIPELINE: StoragePipelineOptions = {
  retryOptions: { maxTries: 3, retryDelayInMs: 500, maxRetryDelayInMs: 5000, tryTimeoutInMs: 60_000 },
  userAgentOptions: { userAgentPrefix: 'zepid-deploy' },
};

interface PendingAppend {
  data: Buffer;
  settle: (error?: DeployError) => void;
}

interface Segment {
  index: number;
  name: string;
  size: number;
}

function checkId(deploymentId: string): void {
  // Ids come from our own records, but a blob name is still no place to trust input.
  if (!ID.test(deploymentId)) throw new DeployError('VALIDATION_ERROR', `not a deployment id: ${JSON.stringify(deploymentId)}`);
}

function manifestName(ref: DeploymentRef): string {
  checkId(ref.deploymentId);
  return `${manifestPrefix(ref.orgId)}${ref.deploymentId}.json.gz`;
}

function manifestPrefix(orgId: string): string {
  return `manifests/${orgStorageKey(orgId)}/`;
}

function objectPrefix(orgId: string): string {
  return `objects/${orgStorageKey(orgId)}/`;
}

function objectName(orgId: string, digest: string): string {
  if (!DIGEST.test(digest)) throw new DeployError('VALIDATION_ERROR', `not a sha256 digest: ${JSON.stringify(digest)}`);
  return `${objectPrefix(orgId)}${digest}`;
}

function logBlobName(deploymentId: string, index: number): string {
  return index === 0 ? `${deploymentId}.ndjson` : `${deploymentId}.${index}.ndjson`;
}

function segmentIndex(deploymentId: string, name: string): number | null {
  if (name === `${deploymentId}.ndjson`) return 0;
  const match = /^\.(\d{1,6})\.ndjson$/.exec(name.slice(deploymentId.length));
  return name.startsWith(deploymentId) && match?.[1] !== undefined ? Number(match[1]) : null;
}

/** Packs appends into blocks of at most `max` bytes, cutting inside an append only when it alone is larger. */
export function packBlocks(chunks: readonly Buffer[], max: number): Buffer[] {
  const blocks: Buffer[] = [];
  let current: Buffer[] = [];
  let size = 0;
  const flush = () => {
    if (size > 0) blocks.push(Buffer.concat(current, size));
    current = [];
    size = 0;
  };
  for (const chunk of chunks) {
    if (size + chunk.length > max) flush();
    for (let offset = 0; offset < chunk.length; offset += max) {
      const piece = chunk.subarray(offset, Math.min(chunk.length, offset + max));
      if (piece.length === max) {
        flush();
        blocks.push(piece);
      } else {
        current.push(piece);
        size += piece.length;
      }
    }
  }
  flush();
  return blocks;
}

async function readStream(stream: NodeJS.ReadableStream | undefined): Promise<Buffer> {
  if (stream === undefined) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks);
}

export class BlobArtifactStore implements ArtifactStore {
  /** kaniko's `--context` takes a tar.gz from Blob Storage (https://github.com/GoogleContainerTools/kaniko#kaniko-build-contexts). */
  readonly contextFormat = 'tar.gz';
  private readonly options: BlobArtifactStoreOptions;
  private readonly maxBlocks: number;
  private readonly touchAfterMs: number;
  private service: BlobServiceClient | null = null;
  /** Appends waiting behind the one in flight, per deployment. */
  private readonly appendQueues = new Map<string, PendingAppend[]>();
  /** Deployment id → first segment not known to be sealed; absent means 0. */
  private readonly segmentHints = new Map<string, number>();

  constructor(options: BlobArtifactStoreOptions) {
    const maxBlocks = options.maxBlocksPerLogBlob ?? MAX_BLOCKS_PER_BLOB;
    if (!Number.isInteger(maxBlocks) || maxBlocks < 1 || maxBlocks > MAX_BLOCKS_PER_BLOB) {
      throw new Error(`maxBlocksPerLogBlob must be an integer from 1 to ${MAX_BLOCKS_PER_BLOB}`);
    }
    this.options = options;
    this.maxBlocks = maxBlocks;
    this.touchAfterMs = options.objectTouchAfterMs ?? OBJECT_RETENTION.touchAfterMs;
  }

  async start(): Promise<void> {
    if (this.service !== null) return;
    const service =
      'connectionString' in this.options
        ? BlobServiceClient.fromConnectionString(this.options.connectionString, PIPELINE)
        : new BlobServiceClient(this.options.accountUrl, this.options.credential, PIPELINE);
    for (const name of Object.values(this.options.containers)) {
      const container = service.getContainerClient(name);
      try {
        if (this.options.createIfMissing) await container.createIfNotExists();
        else await container.listBlobsFlat().byPage({ maxPageSize: 1 }).next();
      } catch (error) {
        if (storageCode(error) === 'ContainerNotFound') {
          throw new Error(`Blob container ${name} does not exist and createIfMissing is off`, { cause: error });
        }
        throw toArtifactError(error, `open container ${name}`);
      }
    }
    this.service = service;
  }

  close(): Promise<void> {
    // The SDK holds no connections of its own beyond Node's keep-alive agent.
    this.service = null;
    return Promise.resolve();
  }

  health(): Promise<DependencyHealth> {
    return probe(async () => {
      try {
        await this.container('logs').listBlobsFlat().byPage({ maxPageSize: 1 }).next();
      } catch (error) {
        throw toArtifactError(error, 'list logs');
      }
    });
  }

  private container(kind: keyof BlobArtifactStoreOptions['containers']): ContainerClient {
    if (this.service === null) throw new DeployError('INTERNAL_ERROR', 'BlobArtifactStore is not started');
    return this.service.getContainerClient(this.options.containers[kind]);
  }

  private async upload(kind: 'sources' | 'contexts', name: string, data: Buffer, contentType: string): Promise<string> {
    const blob = this.container(kind).getBlockBlobClient(name);
    try {
      await blob.uploadData(data, { blobHTTPHeaders: { blobContentType: contentType } });
    } catch (error) {
      throw toArtifactError(error, `store ${kind}/${name}`);
    }
    return blob.url;
  }

  private async list(kind: 'sources', prefix: string): Promise<{ name: string; size: number; lastModified: Date; etag: string }[]> {
    const items = [];
    try {
      for await (const item of this.container(kind).listBlobsFlat({ prefix })) {
        items.push({ name: item.name.slice(prefix.length), size: item.properties.contentLength ?? 0, lastModified: item.properties.lastModified, etag: item.properties.etag });
      }
    } catch (error) {
      throw toArtifactError(error, `list ${kind}/${prefix}`);
    }
    return items;
  }

  private async download(kind: 'sources' | 'contexts' | 'logs', name: string, range?: { offset: number; count: number }): Promise<Buffer | null> {
    try {
      const response = await this.container(kind).getBlobClient(name).download(range?.offset, range?.count);
      return await readStream(response.readableStreamBody);
    } catch (error) {
      if (storageStatus(error) === 404) return null;
      throw toArtifactError(error, `read ${kind}/${name}`);
    }
  }

  private async remove(kind: 'sources' | 'contexts' | 'logs', name: string): Promise<boolean> {
    try {
      return (await this.container(kind).getBlobClient(name).deleteIfExists()).succeeded;
    } catch (error) {
      throw toArtifactError(error, `delete ${kind}/${name}`);
    }
  }

  async putSource(ref: DeploymentRef, manifest: Buffer): Promise<void> {
    await this.upload('sources', manifestName(ref), manifest, CONTENT_TYPES.source);
  }

  async getSource(ref: DeploymentRef): Promise<Buffer | null> {
    return this.download('sources', manifestName(ref));
  }

  async listSources(orgId: string): Promise<string[]> {
    const names = (await this.list('sources', manifestPrefix(orgId))).map((item) => item.name);
    return names.filter((name) => name.endsWith('.json.gz')).map((name) => name.slice(0, -'.json.gz'.length)).filter((id) => ID.test(id));
  }

  async findObjects(orgId: string, digests: readonly string[]): Promise<Map<string, number>> {
    const names = [...new Set(digests)].map((digest) => ({ digest, name: objectName(orgId, digest) }));
    const sources = this.container('sources');
    const found = new Map<string, number>();
    await mapLimit(names, LOOKUPS, async ({ digest, name }) => {
      const blob = sources.getBlobClient(name);
      try {
        const properties = await blob.getProperties();
        const lastUsed = properties.lastModified?.getTime() ?? 0;
        // Marked by expireObjects (the delete-app job may delete it): refreshed whenever last used, which clears the mark.
        if (Date.now() - lastUsed >= this.touchAfterMs || properties.metadata?.[EXPIRED_MARK] !== undefined) await blob.setMetadata({ lastused: new Date().toISOString() });
        found.set(digest, properties.contentLength ?? 0);
      } catch (error) {
        // Deleted between the two calls counts as absent, like a 404 on the first.
        if (storageStatus(error) === 404) return;
        throw toArtifactError(error, `look up sources/${name}`);
      }
    });
    return found;
  }

  async putObject(orgId: string, digest: string, data: Buffer): Promise<boolean> {
    const name = objectName(orgId, digest);
    try {
      await this.container('sources')
        .getBlockBlobClient(name)
        .uploadData(data, { blobHTTPHeaders: { blobContentType: CONTENT_TYPES.object }, conditions: { ifNoneMatch: '*' } });
      return true;
    } catch (error) {
      if (storageStatus(error) === 409 || storageCode(error) === 'BlobAlreadyExists') return false;
      throw toArtifactError(error, `store sources/${name}`);
    }
  }

  async getObject(orgId: string, digest: string): Promise<Buffer | null> {
    const data = await this.download('sources', objectName(orgId, digest));
    return data === null ? null : checkObject(digest, data);
  }

  async *listObjects(orgId: string): AsyncIterable<StoredObject> {
    for (const item of await this.list('sources', objectPrefix(orgId))) {
      if (DIGEST.test(item.name)) yield { digest: item.name, size: item.size, lastUsed: item.lastModified, version: item.etag };
    }
  }

  /**
   * Sets the metadata `expiredat` (Set Blob Metadata replaces all of a blob's metadata and changes its
   * ETag and Last-Modified: https://learn.microsoft.com/rest/api/storageservices/set-blob-metadata);
   * `findObjects` refreshes a marked object whatever its Last-Modified, which removes the mark and
   * changes the ETag again. The version returned is the ETag of the marking write itself.
   */
  async expireObjects(orgId: string, digests: readonly string[]): Promise<StoredObject[]> {
    const sources = this.container('sources');
    const marked: StoredObject[] = [];
    await mapLimit([...new Set(digests)], LOOKUPS, async (digest) => {
      const name = objectName(orgId, digest);
      const blob = sources.getBlobClient(name);
      try {
        const properties = await blob.getProperties();
        const answer = await blob.setMetadata({ [EXPIRED_MARK]: new Date().toISOString() }, { conditions: { ifMatch: properties.etag } });
        if (answer.etag === undefined || answer.lastModified === undefined) throw new DeployError('DEPENDENCY_UNAVAILABLE', `Blob Storage answered no ETag marking sources/${name}`, { retryable: true });
        marked.push({ digest, size: properties.contentLength ?? 0, lastUsed: answer.lastModified, version: answer.etag });
      } catch (error) {
        // 404: absent; 412: used (refreshed) between the two calls, so not a candidate this time.
        if (storageStatus(error) === 404 || storageStatus(error) === 412) return;
        throw toArtifactError(error, `mark sources/${name}`);
      }
    });
    return marked;
  }

  async deleteObject(orgId: string, digest: string, version: string): Promise<boolean> {
    const name = objectName(orgId, digest);
    try {
      await this.container('sources').getBlobClient(name).delete({ conditions: { ifMatch: version } });
      return true;
    } catch (error) {
      // 412: used (metadata set) since it was listed. 404: gone already.
      if (storageStatus(error) === 412 || storageStatus(error) === 404) return false;
      throw toArtifactError(error, `delete sources/${name}`);
    }
  }

  /** The URI is the blob's URL, `https://<account>.blob.core.windows.net/<container>/<id>.tar.gz`, as kaniko wants it. */
  async putContext(deploymentId: string, archive: Buffer): Promise<{ uri: string }> {
    checkId(deploymentId);
    return { uri: await this.upload('contexts', `${deploymentId}.tar.gz`, archive, CONTENT_TYPES.context) };
  }

  async getContext(deploymentId: string): Promise<Buffer | null> {
    checkId(deploymentId);
    return this.download('contexts', `${deploymentId}.tar.gz`);
  }

  async deleteContext(deploymentId: string): Promise<void> {
    checkId(deploymentId);
    await this.remove('contexts', `${deploymentId}.tar.gz`);
  }

  async appendLog(deploymentId: string, chunk: string): Promise<void> {
    checkId(deploymentId);
    const data = Buffer.from(chunk, 'utf8');
    if (data.length === 0) return;
    return new Promise<void>((resolve, reject) => {
      const pending: PendingAppend = { data, settle: (error) => (error === undefined ? resolve() : reject(error)) };
      const queue = this.appendQueues.get(deploymentId);
      if (queue !== undefined) {
        queue.push(pending);
        return;
      }
      const fresh = [pending];
      this.appendQueues.set(deploymentId, fresh);
      void this.drainAppends(deploymentId, fresh);
    });
  }

  /** Writes whatever queued up while the previous append was in flight, until nothing is left. Never rejects. */
  private async drainAppends(deploymentId: string, queue: PendingAppend[]): Promise<void> {
    try {
      while (queue.length > 0) {
        const batch = queue.splice(0);
        try {
          for (const block of packBlocks(batch.map((pending) => pending.data), MAX_BLOCK_BYTES)) await this.appendBlock(deploymentId, block);
          for (const pending of batch) pending.settle();
        } catch (error) {
          const failure = toArtifactError(error, `append to the log of ${deploymentId}`);
          for (const pending of batch) pending.settle(failure);
        }
      }
    } finally {
      this.appendQueues.delete(deploymentId);
    }
  }

  private async appendBlock(deploymentId: string, block: Buffer): Promise<void> {
    const logs = this.container('logs');
    let index = this.segmentHints.get(deploymentId) ?? 0;
    let created = false;
    // Each pass either appends, creates the segment, or moves past a sealed one; the bound stops a loop on a misbehaving service.
    for (let pass = 0; pass < 8; pass += 1) {
      const blob = logs.getAppendBlobClient(logBlobName(deploymentId, index));
      let blocks: number;
      try {
        blocks = (await blob.appendBlock(block, block.length)).blobCommittedBlockCount ?? 0;
      } catch (error) {
        const code = storageCode(error);
        if (code === 'BlockCountExceedsLimit' || code === 'BlobIsSealed') {
          index += 1;
          this.rememberSegment(deploymentId, index);
          created = false;
          continue;
        }
        if (storageStatus(error) === 404 && !created) {
          await blob.createIfNotExists({ blobHTTPHeaders: { blobContentType: CONTENT_TYPES.log } });
          created = true;
          continue;
        }
        throw error;
      }
      if (blocks >= this.maxBlocks) {
        // Seal before moving on: a writer that has not heard of the next segment must be refused, not
        // let in out of order. The append itself succeeded; if sealing fails, the next append seals.
        try {
          await blob.seal();
          this.rememberSegment(deploymentId, index + 1);
        } catch {
          // retried by the next append, which finds the count still at the limit
        }
      }
      return;
    }
    throw new DeployError('INTERNAL_ERROR', `Could not find a log segment of ${deploymentId} that accepts appends`);
  }

  private rememberSegment(deploymentId: string, index: number): void {
    this.segmentHints.delete(deploymentId);
    if (this.segmentHints.size >= SEGMENT_HINTS) {
      const oldest = this.segmentHints.keys().next();
      if (oldest.done !== true) this.segmentHints.delete(oldest.value);
    }
    this.segmentHints.set(deploymentId, index);
  }

  private async logSegments(deploymentId: string): Promise<Segment[]> {
    const segments: Segment[] = [];
    try {
      for await (const item of this.container('logs').listBlobsFlat({ prefix: `${deploymentId}.` })) {
        const index = segmentIndex(deploymentId, item.name);
        if (index !== null) segments.push({ index, name: item.name, size: item.properties.contentLength ?? 0 });
      }
    } catch (error) {
      throw toArtifactError(error, `list the log of ${deploymentId}`);
    }
    return segments.sort((a, b) => a.index - b.index);
  }

  async readLog(deploymentId: string): Promise<string> {
    checkId(deploymentId);
    const parts: Buffer[] = [];
    for (const segment of await this.logSegments(deploymentId)) {
      if (segment.size === 0) continue;
      parts.push((await this.download('logs', segment.name)) ?? Buffer.alloc(0));
    }
    return Buffer.concat(parts).toString('utf8');
  }

  /**
   * A follower's poll: one listing gives every segment's length (the append blob's committed size),
   * so an unchanged log costs that one call; new bytes come by ranged downloads from `offset`.
   */
  async readLogFrom(deploymentId: string, offset: number): Promise<{ text: string; next: number }> {
    checkId(deploymentId);
    const parts: Buffer[] = [];
    let start = 0;
    for (const segment of await this.logSegments(deploymentId)) {
      const end = start + segment.size;
      if (end > offset && segment.size > 0) {
        const from = Math.max(0, offset - start);
        parts.push((await this.download('logs', segment.name, { offset: from, count: segment.size - from })) ?? Buffer.alloc(0));
      }
      start = end;
    }
    const bytes = Buffer.concat(parts);
    const complete = bytes.lastIndexOf(0x0a) + 1;
    return { text: bytes.subarray(0, complete).toString('utf8'), next: offset + complete };
  }

  /** Ranged downloads of the last `maxBytes`, across segments when the tail spans two. */
  async readLogTail(deploymentId: string, maxBytes: number): Promise<string> {
    checkId(deploymentId);
    const segments = await this.logSegments(deploymentId);
    const total = segments.reduce((sum, segment) => sum + segment.size, 0);
    const wanted = Math.min(total, Math.max(0, Math.floor(maxBytes)));
    if (wanted === 0) return '';
    const ranges: { name: string; offset: number; count: number }[] = [];
    let remaining = wanted;
    for (let i = segments.length - 1; i >= 0 && remaining > 0; i -= 1) {
      const segment = segments[i];
      if (segment === undefined || segment.size === 0) continue;
      const count = Math.min(segment.size, remaining);
      ranges.unshift({ name: segment.name, offset: segment.size - count, count });
      remaining -= count;
    }
    const parts: Buffer[] = [];
    for (const range of ranges) parts.push((await this.download('logs', range.name, range)) ?? Buffer.alloc(0));
    const text = Buffer.concat(parts).toString('utf8');
    // Start at a line boundary unless the whole log was read.
    return wanted < total ? text.slice(text.indexOf('\n') + 1) : text;
  }

  async deleteAll(ref: DeploymentRef): Promise<number> {
    const { deploymentId } = ref;
    checkId(deploymentId);
    let deleted = 0;
    if (await this.remove('sources', manifestName(ref))) deleted += 1;
    if (await this.remove('contexts', `${deploymentId}.tar.gz`)) deleted += 1;
    const segments = await this.logSegments(deploymentId);
    for (const segment of segments) await this.remove('logs', segment.name);
    if (segments.length > 0) deleted += 1;
    this.segmentHints.delete(deploymentId);
    return deleted;
  }
}
