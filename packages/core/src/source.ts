import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { mapLimit } from './concurrency.ts';
import { DeployError } from './errors.ts';
import { memoized, sha256Hex } from './ids.ts';
import { LIMITS } from './limits.ts';
import type { ArtifactStore } from './ports/artifacts.ts';

/**
 * The source of a deployment, content-addressed: each file is an object of its organization named by
 * the SHA-256 of its content, stored once however many deployments use it; a deployment's source is a
 * manifest (path → digest and size, plus the chat history it was made from). The API writes both, the
 * worker's validate and sync steps read them, retention cleanup sweeps objects no manifest names.
 * Paths are checked here once for every consumer: the request validator, and again by whatever
 * unpacks files onto a disk (zip-slip).
 */

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\p{Cf}]/u;

/** Null when `path` is a safe relative path, else why not. */
export function checkSourcePath(path: string): string | null {
  if (path.length === 0) return 'is empty';
  if (path.length > LIMITS.pathLength) return `is longer than ${LIMITS.pathLength} characters`;
  if (CONTROL.test(path)) return 'contains a control or invisible character';
  if (path.includes('\\')) return 'contains a backslash; use /';
  if (path.startsWith('/')) return 'is absolute; paths are relative to the project root';
  if (/^[A-Za-z]:/.test(path)) return 'starts with a drive letter';
  const segments = path.split('/');
  if (segments.length > LIMITS.pathDepth) return `is deeper than ${LIMITS.pathDepth} directories`;
  for (const segment of segments) {
    if (segment === '') return 'has an empty segment (// or a trailing /)';
    if (segment === '.' || segment === '..') return `has a "${segment}" segment`;
    if (segment.length > LIMITS.pathSegmentLength) return `has a segment longer than ${LIMITS.pathSegmentLength} characters`;
  }
  return null;
}

/** A file's content digest: lowercase SHA-256 hex, no prefix. */
export const FILE_DIGEST_PATTERN = '^[0-9a-f]{64}$';
const FILE_DIGEST = new RegExp(FILE_DIGEST_PATTERN);

/**
 * When unreferenced objects go. An object no manifest names is deleted by the sweep only once it has
 * been unused for `graceMs`; a deployment being submitted refreshes the objects it references
 * (`findObjects`) when their last use is older than `touchAfterMs`, and the delete is conditional on
 * the object not having been used since the sweep listed it. So a submission never loses an object
 * between checking it and writing its manifest.
 */
export const OBJECT_RETENTION = {
  graceMs: 24 * 60 * 60 * 1000,
  touchAfterMs: 60 * 60 * 1000,
  /**
   * Default of OBJECT_UPLOAD_WINDOW_MS: the longest a POST /deploy may take from looking up its objects
   * to having stored its manifest without checking its objects again. The delete-app job waits this
   * long between marking an app's objects and looking for manifests that name them (removeAppObjects).
   */
  uploadWindowMs: 10 * 1000,
} as const;

export interface ManifestFile {
  path: string;
  /** SHA-256 hex of the content: the name of the org's object holding it. */
  sha256: string;
  size: number;
}

export interface SourceManifest {
  files: ManifestFile[];
  historyMessages: { role: string; content: string }[];
}

/**
 * The source digest: sha256 over the sorted (path, file digest) pairs, so identical trees share it
 * and it can be computed from a manifest without reading any content.
 */
export function sourceDigest(files: readonly Pick<ManifestFile, 'path' | 'sha256'>[]): string {
  const hash = createHash('sha256');
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  // Paths never contain NUL (checkSourcePath), so the pairs cannot run into each other.
  for (const file of sorted) hash.update(`${file.path}\u0000${file.sha256}\u0000`);
  return `sha256:${hash.digest('hex')}`;
}

interface StoredManifest {
  version: 2;
  files: ManifestFile[];
  historyMessages: { role: string; content: string }[];
}

/**
 * A manifest as stored: UTF-8 JSON. Not gzipped: a manifest is paths and digests, a few hundred
 * bytes, and setting up a gzip stream per POST /deploy cost more CPU (and young-generation garbage)
 * than the whole insert it is stored by (BENCHMARKS.md). Manifests written gzipped before still
 * decode.
 */
export function encodeSourceManifest(manifest: SourceManifest): Buffer {
  const stored: StoredManifest = { version: 2, files: manifest.files, historyMessages: manifest.historyMessages };
  return Buffer.from(JSON.stringify(stored));
}

/** gzip's magic bytes: a manifest stored before manifests were plain JSON (which starts with `{`). */
const isGzip = (data: Buffer) => data.length >= 2 && data[0] === 0x1f && data[1] === 0x8b;

/** Decodes a stored manifest (plain JSON, or gzipped as written before) and checks every entry again: a manifest is input too. */
export function decodeSourceManifest(data: Buffer): SourceManifest {
  const stored = JSON.parse((isGzip(data) ? gunzipSync(data) : data).toString('utf8')) as StoredManifest;
  if (stored.version !== 2 || !Array.isArray(stored.files)) throw new Error('unknown source manifest format');
  const files = stored.files.map((file) => {
    const problem = checkSourcePath(file.path);
    if (problem !== null) throw new Error(`source path ${JSON.stringify(file.path)} ${problem}`);
    if (!FILE_DIGEST.test(file.sha256) || !Number.isSafeInteger(file.size) || file.size < 0) {
      throw new Error(`source file ${JSON.stringify(file.path)} has no valid digest or size`);
    }
    return { path: file.path, sha256: file.sha256, size: file.size };
  });
  return { files, historyMessages: Array.isArray(stored.historyMessages) ? stored.historyMessages : [] };
}

/** How an org is named in object and manifest paths: fixed length, lowercase, safe on any file system. */
export const orgStorageKey: (orgId: string) => string = memoized((orgId) => sha256Hex(orgId).slice(0, 32));

/** Returns `data` if it hashes to `digest`; a stored object that does not is corrupt. */
export function checkObject(digest: string, data: Buffer): Buffer {
  const actual = sha256Hex(data);
  if (actual !== digest) {
    throw new DeployError('SOURCE_INVALID', `Stored object ${digest} is corrupt: its ${data.length} bytes hash to ${actual}`);
  }
  return data;
}

/** Manifest reads in flight during a sweep. */
const SWEEP_READS = 8;

/**
 * Mark and sweep for one org: deletes objects that no stored manifest of the org names and that were
 * last used before `now - OBJECT_RETENTION.graceMs`. Reads manifests only when there is a candidate.
 * A manifest that cannot be read stops the sweep (throws) rather than risk deleting what it names.
 */
export async function sweepObjects(artifacts: ArtifactStore, orgId: string, now: Date): Promise<{ objects: number; bytes: number }> {
  const unusedBefore = now.getTime() - OBJECT_RETENTION.graceMs;
  const candidates = [];
  for await (const object of artifacts.listObjects(orgId)) if (object.lastUsed.getTime() < unusedBefore) candidates.push(object);
  const removed = { objects: 0, bytes: 0 };
  if (candidates.length === 0) return removed;
  const referenced = new Set<string>();
  await mapLimit(await artifacts.listSources(orgId), SWEEP_READS, async (deploymentId) => {
    const manifest = await artifacts.getSource({ orgId, deploymentId });
    // Deleted since listed: whatever it named is referenced by nothing new.
    if (manifest === null) return;
    for (const file of decodeSourceManifest(manifest).files) referenced.add(file.sha256);
  });
  for (const object of candidates) {
    if (referenced.has(object.digest)) continue;
    if (await artifacts.deleteObject(orgId, object.digest, object.version)) {
      removed.objects += 1;
      removed.bytes += object.size;
    }
  }
  return removed;
}

/**
 * The delete-app job's share of the objects (issue 12): deletes the org's objects that the manifests
 * of `deploymentIds` (the deleted app's deployments, still stored) name and no other manifest of the
 * org names, at once rather than after the sweep's grace. Content addressing means another app of the
 * org may be storing a deployment that names the same object right now, so:
 *
 * 1. the candidates are marked (`expireObjects`): from then on, any lookup of one (`findObjects`, which
 *    every POST /deploy does before it writes its manifest) changes its version;
 * 2. then `uploadWindowMs` passes: a POST /deploy that looked its objects up before the marks has by
 *    then stored its manifest, or it checks its objects again before it is recorded (the API's
 *    DeploymentService does that past the same window, OBJECT_UPLOAD_WINDOW_MS);
 * 3. then every other manifest of the org is read, and the candidates none names are deleted only if
 *    still at the version the mark gave them (`deleteObject`): one looked up since stays.
 *
 * Reads the manifests of `deploymentIds` first: they must still be stored (the job deletes them after).
 * A manifest that cannot be read throws rather than risk deleting what it names.
 */
export async function removeAppObjects(
  artifacts: ArtifactStore,
  orgId: string,
  deploymentIds: readonly string[],
  options: { uploadWindowMs: number; wait: (ms: number) => Promise<void> },
): Promise<{ objects: number; bytes: number; kept: number }> {
  const removed = { objects: 0, bytes: 0, kept: 0 };
  const own = new Set(deploymentIds);
  const namedBy = async (ids: readonly string[]): Promise<Set<string>> => {
    const digests = new Set<string>();
    await mapLimit(ids, SWEEP_READS, async (deploymentId) => {
      const manifest = await artifacts.getSource({ orgId, deploymentId });
      if (manifest === null) return; // deleted since listed (or never stored): names nothing
      for (const file of decodeSourceManifest(manifest).files) digests.add(file.sha256);
    });
    return digests;
  };
  const candidates = await namedBy([...own]);
  if (candidates.size === 0) return removed;
  const marked = await artifacts.expireObjects(orgId, [...candidates]);
  await options.wait(options.uploadWindowMs);
  const elsewhere = await namedBy((await artifacts.listSources(orgId)).filter((id) => !own.has(id)));
  for (const object of marked) {
    if (elsewhere.has(object.digest)) {
      removed.kept += 1;
      continue;
    }
    if (await artifacts.deleteObject(orgId, object.digest, object.version)) {
      removed.objects += 1;
      removed.bytes += object.size;
    } else removed.kept += 1;
  }
  return removed;
}
