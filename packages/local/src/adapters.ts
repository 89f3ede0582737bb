import { join } from 'node:path';
import type { ApiAdapters, Logger } from '@zepid/core';
import { FileChangeSignal, ringingAfter } from './changes.ts';
import { FileSecretStore } from './file-secrets.ts';
import { FsArtifactStore } from './fs-artifacts.ts';
import { LogTelemetry } from './log-telemetry.ts';
import { SqliteDatabase } from './sqlite/database.ts';
import { Doorbell } from './sqlite/doorbell.ts';
import { SqliteIntake } from './sqlite/intake.ts';
import type { SqliteQueueOptions } from './sqlite/queue.ts';
import { SqliteJobQueue } from './sqlite/queue.ts';
import { SqliteDeploymentStore } from './sqlite/store.ts';
import { SqliteWebhookStore } from './sqlite/webhooks.ts';
import { SqliteStreamLeaseStore } from './sqlite/stream-leases.ts';

/** Where local mode keeps things under DATA_DIR. */
export function localPaths(dataDir: string) {
  return {
    database: join(dataDir, 'zepid.db'),
    artifacts: join(dataDir, 'artifacts'),
    secrets: join(dataDir, 'secrets'),
    work: join(dataDir, 'work'),
    images: join(dataDir, 'images'),
    npmCache: join(dataDir, 'cache', 'npm'),
    tokens: join(dataDir, 'api-tokens.json'),
  };
}

/**
 * The embedded adapters both apps share: store and queue in one SQLite file (so the intake can
 * write a record and its job in one transaction), artifacts and secrets as files.
 */
export function createLocalAdapters(dataDir: string, logger: Logger, queueOptions: Partial<SqliteQueueOptions> = {}): ApiAdapters {
  const paths = localPaths(dataDir);
  const db = new SqliteDatabase(paths.database);
  // One doorbell for the queue and the intake: a job submitted in this process wakes a receiver here directly.
  const doorbell = Doorbell.beside(paths.database);
  // Followers (SSE) in any process on this data dir hear of every record write and log append.
  const changes = new FileChangeSignal(paths.database);
  return {
    store: ringingAfter(new SqliteDeploymentStore(db), ['create', 'replace', 'delete'], changes),
    queue: new SqliteJobQueue(db, { doorbell, ...queueOptions }),
    // The intake rings the change signal itself, once per group commit (not once per deployment).
    intake: new SqliteIntake(db, doorbell, undefined, changes),
    artifacts: ringingAfter(new FsArtifactStore(paths.artifacts, db), ['appendLog'], changes),
    changes,
    webhooks: new SqliteWebhookStore(db),
    streamLeases: new SqliteStreamLeaseStore(db),
    secrets: new FileSecretStore(paths.secrets),
    telemetry: new LogTelemetry(logger),
  };
}
