import type { HealthReporting, Lifecycle } from './lifecycle.ts';
import type { DeploymentRef } from './store.ts';

/** One stored file object as a listing sees it. */
export interface StoredObject {
  /** SHA-256 hex of the content: the object's name. */
  digest: string;
  size: number;
  /** When the object was stored or last referenced by a new deployment (refreshed at most hourly). */
  lastUsed: Date;
  /** Opaque; changes whenever `lastUsed` does, so a delete can be conditional on "not used since listed". */
  version: string;
}

/**
 * Artifact store: a deployment's source, build context and log.
 *
 * Source is content-addressed per organization: each file is an object named by its SHA-256
 * (stored once per org however many deployments use it), and a deployment's source is a manifest
 * (paths → digests, see core's source.ts) under the deployment. Objects of one org are invisible to
 * every other org: no read, no existence answer. Contexts and logs are keyed by deployment id alone.
 *
 * Leaves out: containers, blob clients, file handles, how an org is named in paths. Missing artifacts
 * read as null / empty.
 */
export interface ArtifactStore extends Lifecycle, HealthReporting {
  putSource(ref: DeploymentRef, manifest: Buffer): Promise<void>;
  getSource(ref: DeploymentRef): Promise<Buffer | null>;
  /** Ids of the org's deployments that have a manifest stored. */
  listSources(orgId: string): Promise<string[]>;
  /**
   * Size of each of `digests` the org has stored; absent ones are left out. A found object counts as
   * used now: its `lastUsed` is refreshed when older than an hour or marked by `expireObjects`, so a
   * sweep or an app's deletion running meanwhile keeps it.
   */
  findObjects(orgId: string, digests: readonly string[]): Promise<Map<string, number>>;
  /**
   * Stores `data` as the org's object `digest` (its SHA-256 hex, which the caller computed) unless the
   * org has it already. Returns true when bytes were written, false when the object was there.
   */
  putObject(orgId: string, digest: string, data: Buffer): Promise<boolean>;
  /** The object's bytes, checked against its digest (SOURCE_INVALID when they differ); null when absent. */
  getObject(orgId: string, digest: string): Promise<Buffer | null>;
  listObjects(orgId: string): AsyncIterable<StoredObject>;
  /**
   * Marks the org's objects `digests` so that the next `findObjects` of each refreshes it (changes its
   * version) however recently it was used, and returns them at the version the mark gave them (absent
   * ones left out). The delete-app job marks what it may delete, so a lookup after the mark keeps an
   * object (core's removeAppObjects). The mark leaves `lastUsed` within the sweep's grace.
   */
  expireObjects(orgId: string, digests: readonly string[]): Promise<StoredObject[]>;
  /** Deletes the object only if it is still at `version` (not used since listed); true when deleted. */
  deleteObject(orgId: string, digest: string, version: string): Promise<boolean>;
  /**
   * How the builder reads the build context, so the worker packs it that way: `tar.gz` where it
   * travels (kaniko reads a tar.gz from Blob Storage), plain `tar` where the builder reads it back
   * from the same disk (local), since compressing it there only costs the worker CPU (BENCHMARKS.md).
   */
  readonly contextFormat: 'tar.gz' | 'tar';
  /** Stores the build context (packed as `contextFormat` says) and returns where a builder reads it (blob URL or file path). */
  putContext(deploymentId: string, archive: Buffer): Promise<{ uri: string }>;
  getContext(deploymentId: string): Promise<Buffer | null>;
  deleteContext(deploymentId: string): Promise<void>;
  /** Appends NDJSON log lines (each ending in `\n`). */
  appendLog(deploymentId: string, chunk: string): Promise<void>;
  readLog(deploymentId: string): Promise<string>;
  /**
   * The complete lines of the log from byte `offset` on (a line still being appended is left for the
   * next read), and the offset after them. Followers (SSE) call it with the `next` of their last read.
   */
  readLogFrom(deploymentId: string, offset: number): Promise<{ text: string; next: number }>;
  /** The last `maxBytes` of the log, starting at a line boundary. */
  readLogTail(deploymentId: string, maxBytes: number): Promise<string>;
  /** Removes the manifest, context and log (objects stay for `sweepObjects`); returns how many existed. */
  deleteAll(ref: DeploymentRef): Promise<number>;
}
