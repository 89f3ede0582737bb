import type { DeploymentEventName, Logger, MetricName, Telemetry } from '@zepid/core';

/** Local telemetry: deployment events and metrics as structured log lines. No tracing. */
export class LogTelemetry implements Telemetry {
  private readonly logger: Logger;

  constructor(logger: Logger) {
    this.logger = logger.child({ telemetry: true });
  }

  start(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  event(name: DeploymentEventName, properties: Record<string, string>): void {
    this.logger.info({ event: name, ...properties }, name);
  }

  metric(name: MetricName, valueMs: number, properties: Record<string, string>): void {
    this.logger.debug({ metric: name, valueMs: Math.round(valueMs), ...properties }, name);
  }

  currentTraceparent(): string | null {
    return null;
  }

  withOperation<T>(_name: string, _traceparent: string | null, fn: () => Promise<T>): Promise<T> {
    return fn();
  }
}
