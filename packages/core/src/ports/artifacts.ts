import type { HealthReporting, Lifecycle } from './lifecycle.ts';

/**
 * Artifact store: a deployment's source bundle, build context and log, keyed by deployment id.
 * Leaves out: containers, blob clients, file handles. Missing artifacts read as null / empty.
 */
export interface ArtifactStore extends Lifecycle, HealthReporting {
  putSource(deploymentId: string, bundle: Buffer): Promise<void>;
  getSource(deploymentId: string): Promise<Buffer | null>;
  /** Stores the build context (tar.gz) and returns where a builder reads it (blob URL or file path). */
  putContext(deploymentId: string, archive: Buffer): Promise<{ uri: string }>;
  getContext(deploymentId: string): Promise<Buffer | null>;
  deleteContext(deploymentId: string): Promise<void>;
  /** Appends NDJSON log lines (each ending in `\n`). */
  appendLog(deploymentId: string, chunk: string): Promise<void>;
  readLog(deploymentId: string): Promise<string>;
  /** The last `maxBytes` of the log, starting at a line boundary. */
  readLogTail(deploymentId: string, maxBytes: number): Promise<string>;
  /** Removes source, context and log; returns how many artifacts existed. */
  deleteAll(deploymentId: string): Promise<number>;
}
