import { createHash } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { LIMITS } from './limits.ts';
import type { SourceFile } from './request.ts';

/**
 * The source of a deployment: its files (and the chat history it was made from), stored by the API
 * in the artifact store and read by the worker's sync step. Paths are checked here once for every
 * consumer: the request validator, and again by whatever unpacks files onto a disk (zip-slip).
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

export interface SourceBundle {
  files: SourceFile[];
  historyMessages: { role: string; content: string }[];
}

/** sha256 over the sorted paths and contents: two uploads of the same tree share a digest. */
export function sourceDigest(files: readonly SourceFile[]): string {
  const hash = createHash('sha256');
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const file of sorted) {
    hash.update(`${file.path}\u0000${file.data.length}\u0000`);
    hash.update(file.data);
  }
  return `sha256:${hash.digest('hex')}`;
}

interface StoredBundle {
  version: 1;
  files: { path: string; content: string }[];
  historyMessages: { role: string; content: string }[];
}

export function encodeSourceBundle(bundle: SourceBundle): Buffer {
  const stored: StoredBundle = {
    version: 1,
    files: bundle.files.map((file) => ({ path: file.path, content: file.data.toString('base64') })),
    historyMessages: bundle.historyMessages,
  };
  return gzipSync(JSON.stringify(stored));
}

/** Decodes a stored bundle and checks every path again: a bundle is input too. */
export function decodeSourceBundle(data: Buffer): SourceBundle {
  const stored = JSON.parse(gunzipSync(data).toString('utf8')) as StoredBundle;
  if (stored.version !== 1 || !Array.isArray(stored.files)) throw new Error('unknown source bundle format');
  const files = stored.files.map((file) => {
    const problem = checkSourcePath(file.path);
    if (problem !== null) throw new Error(`source path ${JSON.stringify(file.path)} ${problem}`);
    return { path: file.path, data: Buffer.from(file.content, 'base64') };
  });
  return { files, historyMessages: stored.historyMessages ?? [] };
}
