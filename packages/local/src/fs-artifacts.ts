import { randomUUID } from 'node:crypto';
import { appendFileSync, closeSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, renameSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, rm, stat, utimes, rename } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import type { ArtifactStore, DependencyHealth, DeploymentRef, StoredObject } from '@zepid/core';
import type { SqliteDatabase } from './sqlite/database.ts';
import { runSqlite } from './sqlite/database.ts';
import { insertManifest } from './sqlite/manifests.ts';
import { checkObject, DEPLOYMENT_ID_PATTERN, FILE_DIGEST_PATTERN, OBJECT_RETENTION, orgStorageKey, probe } from '@zepid/core';

const ID = new RegExp(DEPLOYMENT_ID_PATTERN);
const DIGEST = new RegExp(FILE_DIGEST_PATTERN);
const DIRS = { object: 'objects', context: 'contexts', log: 'logs' } as const;
const EXTENSIONS = { context: '.tar', log: '.ndjson' } as const;
/** Where contexts were written gzipped before `contextFormat` (a deployment in flight across the upgrade still finds its own). */
const LEGACY_CONTEXT_EXTENSION = '.tar.gz';
type Kind = keyof typeof EXTENSIONS;

/** A synchronous file call as the port's promise (its error as the rejection). */
function settle<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (error) {
    return Promise.reject(error instanceof Error ? error : new Error(String(error)));
  }
}

function isMissing(error: unknown): boolean {
  return (error as NodeJS.ErrnoException).code === 'ENOENT';
}

/** Log tails kept for status reads (oldest dropped first). */
const TAIL_CACHE_ENTRIES = 512;

/**
 * Artifacts as files under `<DATA_DIR>/artifacts/`:
 *
 *   objects/<org key>/<sha256>                    one file's content, once per org
 *   contexts/<deploymentId>.tar (plain tar: the builder reads it back from this disk), logs/<deploymentId>.ndjson
 *
 * and source manifests (paths → digests, a few hundred bytes) in the `manifests` table of the
 * embedded database, keyed by org key and deployment id.
 *
 * The org key is a hash of the org id (core's orgStorageKey): same length for every org, and no two
 * orgs share a directory on a case-insensitive file system. An object's mtime is its last use.
 */
export class FsArtifactStore implements ArtifactStore {
  /** The local builder extracts the context from this disk: gzip would only cost the worker CPU (BENCHMARKS.md). */
  readonly contextFormat = 'tar';
  private readonly root: string;
  /** `<root>/objects`, normalized once: object paths are built from it without `join` (below). */
  private readonly objectsDir: string;
  private readonly touchAfterMs: number;
  private readonly db: SqliteDatabase;
  private readonly tails = new Map<string, { size: number; mtimeMs: number; maxBytes: number; text: string }>();

  /** `objectTouchAfterMs`: how stale a found object's last use must be to be refreshed; tests lower it. */
  constructor(root: string, db: SqliteDatabase, options: { objectTouchAfterMs?: number } = {}) {
    this.root = root;
    this.objectsDir = join(root, DIRS.object);
    this.db = db;
    this.touchAfterMs = options.objectTouchAfterMs ?? OBJECT_RETENTION.touchAfterMs;
  }

  async start(): Promise<void> {
    this.db.open();
    await Promise.all(Object.values(DIRS).map((dir) => mkdir(join(this.root, dir), { recursive: true })));
  }

  close(): Promise<void> {
    this.db.close();
    return Promise.resolve();
  }

  health(): Promise<DependencyHealth> {
    return probe(() => stat(this.root));
  }

  private path(kind: Kind, deploymentId: string): string {
    // Ids come from our own records, but a file name is still no place to trust input.
    if (!ID.test(deploymentId)) throw new Error(`not a deployment id: ${JSON.stringify(deploymentId)}`);
    return join(this.root, DIRS[kind], `${deploymentId}${EXTENSIONS[kind]}`);
  }

  private checkRef(ref: DeploymentRef): DeploymentRef {
    if (!ID.test(ref.deploymentId)) throw new Error(`not a deployment id: ${JSON.stringify(ref.deploymentId)}`);
    return ref;
  }

  private objectPath(orgId: string, digest: string): string {
    if (!DIGEST.test(digest)) throw new Error(`not a sha256 digest: ${JSON.stringify(digest)}`);
    // The org key is 32 hex characters and the digest 64 (checked above): nothing for `join` to
    // normalize, and `join` cost ~0.7 KB of garbage per file per POST /deploy (BENCHMARKS.md).
    return `${this.objectsDir}${sep}${orgStorageKey(orgId)}${sep}${digest}`;
  }

  /**
   * Write to a temporary name, then rename: a reader never sees half a file. Synchronous, like the
   * SQLite calls beside it: on a local disk, four thread-pool round trips per file cost the API more
   * than the writes themselves (POST /deploy throughput, BENCHMARKS.md).
   */
  private writeAtomic(path: string, data: Buffer): Promise<void> {
    return settle(() => {
      // A unique temporary name: two requests of this process may write the same object at once.
      const temporary = `${path}.${randomUUID()}.tmp`;
      try {
        writeFileSync(temporary, data, { mode: 0o600 });
      } catch (error) {
        if (!isMissing(error)) throw error;
        // First file of this org: create its directory.
        mkdirSync(dirname(path), { recursive: true });
        writeFileSync(temporary, data, { mode: 0o600 });
      }
      renameSync(temporary, path);
    });
  }

  private readOrNull(path: string): Promise<Buffer | null> {
    return settle(() => {
      try {
        return readFileSync(path);
      } catch (error) {
        if (isMissing(error)) return null;
        throw error;
      }
    });
  }

  putSource(ref: DeploymentRef, manifest: Buffer): Promise<void> {
    const { orgId, deploymentId } = this.checkRef(ref);
    return this.db.batch(() => insertManifest(this.db, orgId, deploymentId, manifest));
  }

  getSource(ref: DeploymentRef): Promise<Buffer | null> {
    const { orgId, deploymentId } = this.checkRef(ref);
    return runSqlite(() => {
      const row = this.db.connection.prepare('SELECT data FROM manifests WHERE org_key = ? AND deployment_id = ?').get(orgStorageKey(orgId), deploymentId) as
        | { data: Uint8Array }
        | undefined;
      return row === undefined ? null : Buffer.from(row.data);
    });
  }

  listSources(orgId: string): Promise<string[]> {
    return runSqlite(() =>
      (this.db.connection.prepare('SELECT deployment_id FROM manifests WHERE org_key = ? ORDER BY deployment_id').all(orgStorageKey(orgId)) as { deployment_id: string }[]).map(
        (row) => row.deployment_id,
      ),
    );
  }

  private async listDir(dir: string): Promise<string[]> {
    try {
      return await readdir(dir);
    } catch (error) {
      if (isMissing(error)) return [];
      throw error;
    }
  }

  findObjects(orgId: string, digests: readonly string[]): Promise<Map<string, number>> {
    return settle(() => {
      const found = new Map<string, number>();
      const now = Date.now();
      for (const digest of new Set(digests)) {
        const path = this.objectPath(orgId, digest);
        const info = statSync(path, { throwIfNoEntry: false });
        if (info === undefined) continue;
        if (now - info.mtimeMs >= this.touchAfterMs) {
          // Always later than before, so the version a sweep listed changes even within one millisecond.
          const at = new Date(Math.max(now, Math.ceil(info.mtimeMs) + 1));
          try {
            utimesSync(path, at, at);
          } catch (error) {
            if (!isMissing(error)) throw error;
            continue; // swept in between: missing after all
          }
        }
        found.set(digest, info.size);
      }
      return found;
    });
  }

  async putObject(orgId: string, digest: string, data: Buffer): Promise<boolean> {
    const path = this.objectPath(orgId, digest);
    if ((await this.findObjects(orgId, [digest])).has(digest)) return false;
    await this.writeAtomic(path, data);
    return true;
  }

  async getObject(orgId: string, digest: string): Promise<Buffer | null> {
    const data = await this.readOrNull(this.objectPath(orgId, digest));
    return data === null ? null : checkObject(digest, data);
  }

  async *listObjects(orgId: string): AsyncIterable<StoredObject> {
    const dir = join(this.root, DIRS.object, orgStorageKey(orgId));
    for (const name of await this.listDir(dir)) {
      // Temporary files of writes in flight (or of a crash) are not objects.
      if (!DIGEST.test(name)) continue;
      try {
        const info = await stat(join(dir, name));
        yield { digest: name, size: info.size, lastUsed: info.mtime, version: String(info.mtimeMs) };
      } catch (error) {
        if (!isMissing(error)) throw error;
      }
    }
  }

  /**
   * Sets the mtime back to a whole second at least `touchAfterMs` ago, so the next `findObjects`
   * refreshes it (to now or later); the version returned is the time set, not one read back after,
   * so a lookup landing between the two is never taken for the mark.
   */
  expireObjects(orgId: string, digests: readonly string[]): Promise<StoredObject[]> {
    return settle(() => {
      const marked: StoredObject[] = [];
      const at = new Date(Math.floor((Date.now() - this.touchAfterMs) / 1000) * 1000 - 1000);
      for (const digest of new Set(digests)) {
        const path = this.objectPath(orgId, digest);
        const info = statSync(path, { throwIfNoEntry: false });
        if (info === undefined) continue;
        try {
          utimesSync(path, at, at);
        } catch (error) {
          if (!isMissing(error)) throw error;
          continue; // deleted in between
        }
        marked.push({ digest, size: info.size, lastUsed: at, version: String(at.getTime()) });
      }
      return marked;
    });
  }

  /**
   * Moves the object aside first (atomic), then looks at its mtime: a use that refreshed it before the
   * move is seen and the object is put back; a use after the move finds it missing, never deleted later.
   */
  async deleteObject(orgId: string, digest: string, version: string): Promise<boolean> {
    const path = this.objectPath(orgId, digest);
    const aside = `${path}.${randomUUID()}.deleting`;
    try {
      await rename(path, aside);
    } catch (error) {
      if (isMissing(error)) return false;
      throw error;
    }
    if (String((await stat(aside)).mtimeMs) !== version) {
      // Used since listed: put it back as used now (the move may have replaced a copy a request just wrote).
      await rename(aside, path);
      const now = new Date();
      await utimes(path, now, now);
      return false;
    }
    await rm(aside, { force: true });
    return true;
  }

  async putContext(deploymentId: string, archive: Buffer): Promise<{ uri: string }> {
    const path = this.path('context', deploymentId);
    await this.writeAtomic(path, archive);
    return { uri: path };
  }

  async getContext(deploymentId: string): Promise<Buffer | null> {
    // The extractor takes a gzipped archive as well (node-tar detects gzip by its magic bytes).
    return (await this.readOrNull(this.path('context', deploymentId))) ?? this.readOrNull(this.legacyContextPath(deploymentId));
  }

  /** Two `unlink` calls, synchronous as the writes are (`rm` adds an `lstat` and thread-pool round trips per file). */
  deleteContext(deploymentId: string): Promise<void> {
    return settle(() => {
      for (const path of [this.path('context', deploymentId), this.legacyContextPath(deploymentId)]) {
        try {
          unlinkSync(path);
        } catch (error) {
          if (!isMissing(error)) throw error;
        }
      }
    });
  }

  private legacyContextPath(deploymentId: string): string {
    return this.path('context', deploymentId).slice(0, -EXTENSIONS.context.length) + LEGACY_CONTEXT_EXTENSION;
  }

  /**
   * Synchronous, as `writeAtomic` is: the promise API's open, write and close (three thread-pool
   * round trips and a FileHandle) cost the worker more than the append itself (its profile, BENCHMARKS.md).
   * A chunk is what the deployment's log buffered since its last flush (250 ms; at most the log limit).
   */
  appendLog(deploymentId: string, chunk: string): Promise<void> {
    return settle(() => appendFileSync(this.path('log', deploymentId), chunk, { mode: 0o600 }));
  }

  async readLog(deploymentId: string): Promise<string> {
    return (await this.readOrNull(this.path('log', deploymentId)))?.toString('utf8') ?? '';
  }

  /** One stat when nothing was appended since `offset`; SSE followers call it on every change signal. */
  readLogFrom(deploymentId: string, offset: number): Promise<{ text: string; next: number }> {
    try {
      const path = this.path('log', deploymentId);
      const stats = statSync(path, { throwIfNoEntry: false });
      if (stats === undefined || stats.size <= offset) return Promise.resolve({ text: '', next: offset });
      const fd = openSync(path, 'r');
      try {
        const buffer = Buffer.alloc(fstatSync(fd).size - offset);
        const read = readSync(fd, buffer, 0, buffer.length, offset);
        return Promise.resolve(completeLines(buffer.subarray(0, read), offset));
      } finally {
        closeSync(fd);
      }
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  /**
   * Every GET status reads this, so it is the hot path of the API: synchronous calls on a small local
   * file (one stat when the log has not grown since the last read, from a bounded cache) instead of
   * four thread-pool round trips per request (BENCHMARKS.md).
   */
  readLogTail(deploymentId: string, maxBytes: number): Promise<string> {
    try {
      return Promise.resolve(this.readLogTailSync(deploymentId, maxBytes));
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  private readLogTailSync(deploymentId: string, maxBytes: number): string {
    const path = this.path('log', deploymentId);
    const stats = statSync(path, { throwIfNoEntry: false });
    if (stats === undefined) return '';
    const cached = this.tails.get(path);
    if (cached !== undefined && cached.size === stats.size && cached.mtimeMs === stats.mtimeMs && cached.maxBytes === maxBytes) return cached.text;
    const fd = openSync(path, 'r');
    let text: string;
    try {
      const size = fstatSync(fd).size;
      const length = Math.min(size, maxBytes);
      const buffer = Buffer.alloc(length);
      readSync(fd, buffer, 0, length, size - length);
      text = buffer.toString('utf8');
      // Start at a line boundary unless the whole file was read.
      if (length < size) text = text.slice(text.indexOf('\n') + 1);
      if (size !== stats.size) return text; // it grew in between: answer, but do not cache
    } finally {
      closeSync(fd);
    }
    if (this.tails.size >= TAIL_CACHE_ENTRIES) this.tails.delete(this.tails.keys().next().value ?? '');
    this.tails.delete(path);
    this.tails.set(path, { size: stats.size, mtimeMs: stats.mtimeMs, maxBytes, text });
    return text;
  }

  async deleteAll(ref: DeploymentRef): Promise<number> {
    const { orgId, deploymentId } = this.checkRef(ref);
    let deleted = await runSqlite(
      () => Number(this.db.connection.prepare('DELETE FROM manifests WHERE org_key = ? AND deployment_id = ?').run(orgStorageKey(orgId), deploymentId).changes),
    );
    for (const path of [this.path('context', deploymentId), this.legacyContextPath(deploymentId), this.path('log', deploymentId)]) {
      try {
        await rm(path);
        deleted += 1;
      } catch (error) {
        if (!isMissing(error)) throw error;
      }
    }
    return deleted;
  }

}

/** The complete lines of `bytes` (read at `offset`) and the offset after the last one. */
export function completeLines(bytes: Buffer, offset: number): { text: string; next: number } {
  const end = bytes.lastIndexOf(0x0a) + 1;
  return { text: bytes.subarray(0, end).toString('utf8'), next: offset + end };
}
