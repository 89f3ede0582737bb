/** @zepid/local: the embedded adapters that run with no cloud configured. */
export { SqliteDatabase } from './sqlite/database.ts';
export { SqliteDeploymentStore } from './sqlite/store.ts';
export { SqliteJobQueue, DEFAULT_QUEUE_OPTIONS } from './sqlite/queue.ts';
export type { SqliteQueueOptions } from './sqlite/queue.ts';
export { Doorbell } from './sqlite/doorbell.ts';
export { SqliteIntake } from './sqlite/intake.ts';
export { FsArtifactStore } from './fs-artifacts.ts';
export { FileSecretStore } from './file-secrets.ts';
export { LogTelemetry } from './log-telemetry.ts';
export { createLocalAdapters, localPaths } from './adapters.ts';
export { LocalBuilder, extractContext } from './builder/local-builder.ts';
export type { LocalBuilderOptions } from './builder/local-builder.ts';
export { LocalRuntime } from './runtime/local-runtime.ts';
export { resolveIsolation } from './builder/isolation.ts';
export type { Isolation, IsolationSetting } from './builder/isolation.ts';
export { LocalRouter } from './runtime/router.ts';
export { ProcessRegistry } from './process/registry.ts';
export { spawnGroup, stopGroup, signalGroup, groupAlive, processStartTime } from './process/process-group.ts';
