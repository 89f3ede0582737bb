import { appendFile, mkdir, readFile, rm, stat, writeFile, rename } from 'node:fs/promises';
import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { ArtifactStore, DependencyHealth } from '@zepid/core';
import { DEPLOYMENT_ID_PATTERN, probe } from '@zepid/core';

const ID = new RegExp(DEPLOYMENT_ID_PATTERN);
const KINDS = { source: 'sources', context: 'contexts', log: 'logs' } as const;
const EXTENSIONS = { source: '.json.gz', context: '.tar.gz', log: '.ndjson' } as const;
type Kind = keyof typeof KINDS;

function isMissing(error: unknown): boolean {
  return (error as NodeJS.ErrnoException).code === 'ENOENT';
}

/** Artifacts as files under `<DATA_DIR>/artifacts/{sources,contexts,logs}/<deploymentId>.*`. */
/** Log tails kept for status reads (oldest dropped first). */
const TAIL_CACHE_ENTRIES = 512;

export class FsArtifactStore implements ArtifactStore {
  private readonly root: string;
  private readonly tails = new Map<string, { size: number; mtimeMs: number; maxBytes: number; text: string }>();

  constructor(root: string) {
    this.root = root;
  }

  async start(): Promise<void> {
    await Promise.all(Object.values(KINDS).map((dir) => mkdir(join(this.root, dir), { recursive: true })));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  health(): Promise<DependencyHealth> {
    return probe(() => stat(this.root));
  }

  private path(kind: Kind, deploymentId: string): string {
    // Ids come from our own records, but a file name is still no place to trust input.
    if (!ID.test(deploymentId)) throw new Error(`not a deployment id: ${JSON.stringify(deploymentId)}`);
    return join(this.root, KINDS[kind], `${deploymentId}${EXTENSIONS[kind]}`);
  }

  /** Write to a temporary name, then rename: a reader never sees half a file. */
  private async writeAtomic(path: string, data: Buffer): Promise<void> {
    const temporary = `${path}.${process.pid}.tmp`;
    await writeFile(temporary, data, { mode: 0o600 });
    await rename(temporary, path);
  }

  private async readOrNull(path: string): Promise<Buffer | null> {
    try {
      return await readFile(path);
    } catch (error) {
      if (isMissing(error)) return null;
      throw error;
    }
  }

  putSource(deploymentId: string, bundle: Buffer): Promise<void> {
    return this.writeAtomic(this.path('source', deploymentId), bundle);
  }

  getSource(deploymentId: string): Promise<Buffer | null> {
    return this.readOrNull(this.path('source', deploymentId));
  }

  async putContext(deploymentId: string, archive: Buffer): Promise<{ uri: string }> {
    const path = this.path('context', deploymentId);
    await this.writeAtomic(path, archive);
    return { uri: path };
  }

  getContext(deploymentId: string): Promise<Buffer | null> {
    return this.readOrNull(this.path('context', deploymentId));
  }

  async deleteContext(deploymentId: string): Promise<void> {
    await rm(this.path('context', deploymentId), { force: true });
  }

  async appendLog(deploymentId: string, chunk: string): Promise<void> {
    await appendFile(this.path('log', deploymentId), chunk, { mode: 0o600 });
  }

  async readLog(deploymentId: string): Promise<string> {
    return (await this.readOrNull(this.path('log', deploymentId)))?.toString('utf8') ?? '';
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
      return Promise.reject(error as Error);
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

  async deleteAll(deploymentId: string): Promise<number> {
    let deleted = 0;
    for (const kind of Object.keys(KINDS) as Kind[]) {
      const path = this.path(kind, deploymentId);
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
