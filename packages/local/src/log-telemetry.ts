import type { DeploymentEventName, Logger, MetricName, Telemetry, TelemetryProperties } from '@zepid/core';

/** Local telemetry: deployment events and metrics as structured log lines. No tracing. */
export class LogTelemetry implements Telemetry {
  private readonly logger: Logger;
  /** Events are log lines here: POST /deploy writes its DeploymentQueued on its access line (Telemetry). */
  readonly eventsAreLogLines = true;

  constructor(logger: Logger) {
    this.logger = logger.child({ telemetry: true });
  }

  start(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  event<N extends DeploymentEventName>(name: N, properties: TelemetryProperties<N>): void {
    this.logger.info({ event: name, ...properties }, name);
  }

  metric<N extends MetricName>(name: N, valueMs: number, properties: TelemetryProperties<N>): void {
    this.logger.debug({ metric: name, valueMs: Math.round(valueMs), ...properties }, name);
  }

  currentTraceparent(): string | null {
    return null;
  }

  withOperation<T>(_name: string, _traceparent: string | null, fn: () => Promise<T>): Promise<T> {
    return fn();
  }
}
