/**
 * @zepid/local/data: only the embedded data adapters (SQLite store, queue and intake, file artifacts
 * and secrets, log telemetry). The API imports this, not the package root: the local builder and
 * runtime (tar, process groups, the router) are the worker's, and loading them would only add RSS.
 */
export { createLocalAdapters, localPaths } from './adapters.ts';
export { FileSecretStore } from './file-secrets.ts';
export { LogTelemetry } from './log-telemetry.ts';
// How the API tells whether local builds can be isolated (several organizations need it); node built-ins only.
export { canSwitchUsers } from './builder/isolation.ts';
export { FileChangeSignal } from './changes.ts';
