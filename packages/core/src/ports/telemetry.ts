import type { Lifecycle } from './lifecycle.ts';

export type DeploymentEventName = 'DeploymentQueued' | 'DeploymentCompleted' | 'DeploymentFailed' | 'DeploymentCancelled' | 'DeploymentSuperseded';

export type MetricName =
  | 'DeploymentDuration'
  | 'StepDuration'
  | 'QueueWait';

/**
 * Telemetry: Application Insights in Azure, structured logs locally. Properties are ids and codes,
 * never secret values. Leaves out: SDK clients, spans, envelopes.
 */
export interface Telemetry extends Lifecycle {
  event(name: DeploymentEventName, properties: Record<string, string>): void;
  metric(name: MetricName, valueMs: number, properties: Record<string, string>): void;
  /** W3C traceparent of the operation in progress, to carry on a queue message; null when not tracing. */
  currentTraceparent(): string | null;
  /** Runs `fn` as an operation continuing `traceparent`, so API and worker share one operation id. */
  withOperation<T>(name: string, traceparent: string | null, fn: () => Promise<T>): Promise<T>;
}
