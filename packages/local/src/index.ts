/** @zepid/local: the embedded adapters that run with no cloud configured. */
export { SqliteDatabase } from './sqlite/database.ts';
export { SqliteDeploymentStore } from './sqlite/store.ts';
export { SqliteJobQueue, DEFAULT_QUEUE_OPTIONS } from './sqlite/queue.ts';
export type { SqliteQueueOptions } from './sqlite/queue.ts';
export { SqliteIntake } from './sqlite/intake.ts';
export { FsArtifactStore } from './fs-artifacts.ts';
export { FileSecretStore } from './file-secrets.ts';
