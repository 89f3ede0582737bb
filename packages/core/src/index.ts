/**
 * @zepid/core: the vocabulary, rules and ports of Zepid Deploy v3. Start with the glossary.
 * Nothing here talks to a database, a queue or a cloud: adapters in @zepid/local and @zepid/azure do.
 */
export * from './glossary.ts';
export * from './service.ts';
export * from './deployment.ts';
export * from './app.ts';
export * from './state-machine.ts';
export * from './errors.ts';
export * from './limits.ts';
export * from './ids.ts';
export * from './naming.ts';
export * from './request.ts';
export * from './source.ts';
export * from './concurrency.ts';
export * from './build-plan.ts';
export * from './static-site.ts';
export * from './static-rules.ts';
export * from './frameworks.ts';
export * from './logs.ts';
export * from './config.ts';
export * from './update.ts';
export * from './live-order.ts';
export * from './lease.ts';
export * from './outbox.ts';
export * from './webhooks.ts';
export * from './webhook-address.ts';
export type * from './ports/webhooks.ts';
export type * from './ports/store.ts';
export type * from './ports/queue.ts';
export type * from './ports/artifacts.ts';
export type * from './ports/secrets.ts';
export type * from './ports/builder.ts';
export type * from './ports/runtime.ts';
export * from './ports/telemetry.ts';
export * from './ports/intake.ts';
export type * from './ports/adapters.ts';
export type * from './ports/changes.ts';
export type * from './ports/stream-leases.ts';
export type { Logger, LogFn } from './ports/logger.ts';
export { silentLogger } from './ports/logger.ts';
export type { Lifecycle, DependencyHealth, HealthReporting } from './ports/lifecycle.ts';
export { closeInReverse, probe, startInOrder } from './ports/lifecycle.ts';
