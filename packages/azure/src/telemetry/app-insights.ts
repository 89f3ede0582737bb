import { createRequire, syncBuiltinESMExports } from 'node:module';
import type { IncomingMessage } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TokenCredential } from '@azure/identity';
import type { Histogram, Span, Tracer } from '@opentelemetry/api';
import { context, isSpanContextValid, metrics, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags } from '@opentelemetry/api';
import type { Logger as OtelLogger } from '@opentelemetry/api-logs';
import type { HttpInstrumentationConfig } from '@opentelemetry/instrumentation-http';
import { logs } from '@opentelemetry/api-logs';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { AzureMonitorOpenTelemetryOptions } from 'applicationinsights';
import { flushAzureMonitor, shutdownAzureMonitor, useAzureMonitor } from 'applicationinsights';
import type { DeploymentEventName, Logger, MetricName, Telemetry, TelemetryProperties } from '@zepid/core';
import { SERVICE_VERSION, TELEMETRY_METRICS } from '@zepid/core';
import { onFastifyRoute } from './route-names.ts';
import { formatTraceparent, parseTraceparent } from './traceparent.ts';

export interface AppInsightsTelemetryOptions {
  /** `InstrumentationKey=…;IngestionEndpoint=https://…` of the Application Insights resource. */
  connectionString: string;
  /** `ai.cloud.role` (the Application Map node): `zepid-api` or `zepid-worker`. */
  cloudRoleName: string;
  /** `ai.cloud.roleInstance`; the host name (in Container Apps, the replica name) when absent. */
  cloudRoleInstance?: string;
  /** Entra-authenticated ingestion (resource with local auth disabled): the identity needs "Monitoring Metrics Publisher". */
  credential?: TokenCredential;
  logger: Logger;
  /** Share of operations kept, 0..1 (default 1: deployments are few, and each one should be traceable). */
  samplingRatio?: number;
  /** Live Metrics stream (default true); tests against a fake endpoint turn it off. */
  liveMetrics?: boolean;
  /** Incoming paths not recorded as requests (default: the Container Apps probe paths). */
  ignoreIncomingPaths?: readonly string[];
  /** Where telemetry that could not be sent waits for a retry; false to keep none (default: the SDK's temp dir). */
  offlineStorage?: { directory: string } | false;
  /** close() gives up flushing after this long (default 10 s), so shutdown never hangs on ingestion. */
  closeTimeoutMs?: number;
}

/** The probe paths of infra/modules/*-app.bicep: a request every few seconds per replica, worth nothing in App Insights. */
export const DEFAULT_IGNORED_PATHS: readonly string[] = ['/health/live', '/health/ready'];

/** Log-record attribute the Azure Monitor exporter turns into a customEvents row (`EventData`). */
const CUSTOM_EVENT_NAME = 'microsoft.custom_event.name';
/** Log-record and span attribute the exporter turns into the `ai.operation.name` tag (and keeps out of customDimensions). */
const OPERATION_NAME = 'ai.operation.name';
const METRIC_NAMES = Object.keys(TELEMETRY_METRICS) as MetricName[];
const METRIC_DESCRIPTIONS: Record<MetricName, string> = {
  DeploymentDuration: 'Time from the start of an attempt to its completion.',
  StepDuration: 'Time one step of a deployment took (dimension: step).',
  QueueWait: 'Time from a deployment being queued to a worker starting it.',
};

/**
 * Application Insights through the `applicationinsights` v3 SDK (the Azure Monitor OpenTelemetry
 * distro): requests, dependencies, performance counters and standard metrics are collected by the
 * SDK; this adapter adds the deployment events and metrics and carries the operation across the queue.
 *
 * - `event` emits an OpenTelemetry log record with `microsoft.custom_event.name`: a customEvents row
 *   whose customDimensions are the properties, stamped with the active span's trace id as
 *   `ai.operation.id` (what the v3 `TelemetryClient.trackEvent` shim does, minus its global shim state).
 * - `metric` records an OpenTelemetry histogram (what the v3 `trackMetric` shim does): customMetrics
 *   rows with value (sum), valueCount, valueMin, valueMax per set of properties and export interval.
 *   Metrics are aggregates: App Insights gives them no operation id, so they join to an operation
 *   through their `deploymentId` dimension.
 * - `currentTraceparent` is the active span (in the API, the request's server span) as a W3C
 *   traceparent; `withOperation` runs a CONSUMER span whose parent is that traceparent, which App
 *   Insights shows as a request of the worker in the same operation (same `ai.operation.id`).
 *
 * The SDK is process-global (OpenTelemetry's global providers), so one instance may be started per
 * process. It may be started after the app's modules are loaded: see `patchLoadedModules`.
 */
export class AppInsightsTelemetry implements Telemetry {
  /** The OpenTelemetry providers are process-global, so a second started instance would silently replace the first. */
  private static active: AppInsightsTelemetry | null = null;

  private readonly options: AppInsightsTelemetryOptions;
  private readonly logger: Logger;
  /** Names of the operations this adapter knows of (route or queue operation), for the events emitted inside them. */
  private readonly operationNames = new WeakMap<Span, string>();
  private tracer: Tracer | null = null;
  private eventLogger: OtelLogger | null = null;
  private histograms = new Map<MetricName, Histogram>();
  private stopRouteNames: (() => void) | null = null;

  constructor(options: AppInsightsTelemetryOptions) {
    if (options.connectionString.trim() === '') throw new Error('AppInsightsTelemetry needs a connection string');
    if (options.samplingRatio !== undefined && !(options.samplingRatio >= 0 && options.samplingRatio <= 1)) {
      throw new Error('samplingRatio must be between 0 and 1');
    }
    this.options = options;
    this.logger = options.logger.child({ telemetry: 'app-insights' });
  }

  /** Rejects on a connection string the SDK refuses (no or malformed instrumentation key). */
  async start(): Promise<void> {
    if (AppInsightsTelemetry.active === this) return;
    if (AppInsightsTelemetry.active !== null) {
      throw new Error('Application Insights is already started in this process (its OpenTelemetry providers are global)');
    }
    const ignored = new Set(this.options.ignoreIncomingPaths ?? DEFAULT_IGNORED_PATHS);
    const offline = this.options.offlineStorage;
    // Incoming requests become the requests table, outgoing ones dependencies (the distro passes this to HttpInstrumentation).
    const http: HttpInstrumentationConfig = {
      enabled: true,
      ignoreIncomingRequestHook: (request: IncomingMessage) => ignored.has((request.url ?? '/').split('?', 1)[0] ?? '/'),
    };
    const settings: AzureMonitorOpenTelemetryOptions = {
      azureMonitorExporterOptions: {
        connectionString: this.options.connectionString,
        ...(this.options.credential === undefined ? {} : { credential: this.options.credential }),
        ...(offline === false ? { disableOfflineStorage: true } : offline === undefined ? {} : { storageDirectory: offline.directory }),
      },
      resource: resourceFromAttributes({
        'service.name': this.options.cloudRoleName,
        'service.version': SERVICE_VERSION,
        ...(this.options.cloudRoleInstance === undefined ? {} : { 'service.instance.id': this.options.cloudRoleInstance }),
      }),
      // Fixed-ratio sampling decides by trace id, so the API and the worker keep or drop an operation
      // together; the distro's default rate limit (5 traces/s) would drop requests right after start.
      samplingRatio: this.options.samplingRatio ?? 1,
      tracesPerSecond: 0,
      enableLiveMetrics: this.options.liveMetrics ?? true,
      enableStandardMetrics: true,
      enableAutoCollectPerformance: true,
      // The SDK would add process-wide uncaughtException/unhandledRejection listeners: a listener
      // turns Node's crash on an unhandled rejection into a logged event, and exception messages
      // may quote a URL with a SAS token. The processes log their own errors.
      enableAutoCollectExceptions: false,
      // Deployment events are business events: they are kept even when their trace is sampled out.
      enableTraceBasedSamplingForLogs: false,
      instrumentationOptions: {
        http,
        azureSdk: { enabled: true },
      },
    };
    useAzureMonitor(settings);
    patchLoadedModules(this.logger);

    this.tracer = trace.getTracer('zepid-deploy', SERVICE_VERSION);
    this.eventLogger = logs.getLogger('zepid-deploy', SERVICE_VERSION);
    const meter = metrics.getMeter('zepid-deploy', SERVICE_VERSION);
    for (const name of METRIC_NAMES) {
      // Only sum/count/min/max reach App Insights: no buckets to keep.
      this.histograms.set(name, meter.createHistogram(name, { unit: 'ms', description: METRIC_DESCRIPTIONS[name], advice: { explicitBucketBoundaries: [] } }));
    }
    this.stopRouteNames = onFastifyRoute(({ method, route }) => {
      const span = trace.getActiveSpan();
      if (span === undefined) return;
      const name = `${method} ${route}`;
      span.setAttribute('http.route', route);
      span.updateName(name);
      this.operationNames.set(span, name);
    });
    AppInsightsTelemetry.active = this;
    this.logger.info({ cloudRoleName: this.options.cloudRoleName, entraAuth: this.options.credential !== undefined }, 'Application Insights telemetry started');
  }

  async close(): Promise<void> {
    if (AppInsightsTelemetry.active !== this) return;
    this.stopRouteNames?.();
    this.stopRouteNames = null;
    const timeoutMs = this.options.closeTimeoutMs ?? 10_000;
    const shutdown = (async () => {
      await flushAzureMonitor();
      await shutdownAzureMonitor();
    })().then(
      () => 'done' as const,
      (error: unknown) => {
        this.logger.warn({ err: error }, 'Application Insights shutdown failed; some telemetry may be lost');
        return 'done' as const;
      },
    );
    const outcome = await Promise.race([shutdown, sleep(timeoutMs, 'timeout' as const, { ref: false })]);
    if (outcome === 'timeout') this.logger.warn({ timeoutMs }, 'Application Insights did not flush in time; unsent telemetry is dropped');
    this.tracer = null;
    this.eventLogger = null;
    this.histograms = new Map();
    AppInsightsTelemetry.active = null;
  }

  event<N extends DeploymentEventName>(name: N, properties: TelemetryProperties<N>): void {
    if (this.eventLogger === null) return;
    const span = trace.getActiveSpan();
    const operationName = span === undefined ? undefined : this.operationNames.get(span);
    this.eventLogger.emit({
      attributes: {
        ...properties,
        ...(operationName === undefined ? {} : { [OPERATION_NAME]: operationName }),
        [CUSTOM_EVENT_NAME]: name,
      },
      context: context.active(),
    });
  }

  metric<N extends MetricName>(name: N, valueMs: number, properties: TelemetryProperties<N>): void {
    if (!Number.isFinite(valueMs)) return;
    this.histograms.get(name)?.record(Math.max(0, valueMs), properties);
  }

  currentTraceparent(): string | null {
    const spanContext = trace.getActiveSpan()?.spanContext();
    if (spanContext === undefined || !isSpanContextValid(spanContext)) return null;
    return formatTraceparent({
      traceId: spanContext.traceId,
      spanId: spanContext.spanId,
      sampled: (spanContext.traceFlags & 1) === 1,
    });
  }

  withOperation<T>(name: string, traceparent: string | null, fn: () => Promise<T>): Promise<T> {
    const tracer = this.tracer;
    if (tracer === null) return fn();
    const parent = traceparent === null ? null : parseTraceparent(traceparent);
    // From the root, not the caller's context: a job continues the request that queued it, not
    // whatever the receive loop happens to run in.
    const parentContext =
      parent === null
        ? ROOT_CONTEXT
        : trace.setSpanContext(ROOT_CONTEXT, {
            traceId: parent.traceId,
            spanId: parent.spanId,
            traceFlags: parent.sampled ? TraceFlags.SAMPLED : TraceFlags.NONE,
            isRemote: true,
          });
    // The exporter names a non-HTTP request after this attribute (and keeps it out of customDimensions).
    const attributes = { [OPERATION_NAME]: name };
    return tracer.startActiveSpan(name, { kind: SpanKind.CONSUMER, attributes }, parentContext, async (span) => {
      this.operationNames.set(span, name);
      try {
        const result = await fn();
        span.setStatus({ code: SpanStatusCode.OK });
        return result;
      } catch (error) {
        // The code or class only: an error message may quote a URL with a SAS token or a command line.
        span.setStatus({ code: SpanStatusCode.ERROR, message: errorLabel(error) });
        span.setAttribute('error.type', errorLabel(error));
        throw error;
      } finally {
        span.end();
      }
    });
  }
}

function errorLabel(error: unknown): string {
  if (typeof error === 'object' && error !== null) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string' && code !== '') return code;
    if (error instanceof Error) return error.name;
  }
  return 'Error';
}

/**
 * The distro patches modules through require hooks, which fire on the next `require` of a module.
 * Under ESM the app's `import`s never call `require`, and Fastify (CommonJS) may have required
 * `node:http` before telemetry started; requiring the patched modules once more here applies the
 * patches anyway:
 * - `node:http`/`node:https`: the server span comes from a patch of `Server.prototype.emit`, which
 *   covers servers created earlier too; `syncBuiltinESMExports` gives the patched `request`/`get`
 *   to ESM importers (outgoing calls as dependencies);
 * - `@azure/core-tracing`: the Azure SDK instrumentation sets its instrumenter when it is required
 *   (the SDK 3.17 happens to require it while starting; this keeps that true), and that state is
 *   shared by its ESM and CommonJS builds, so the ESM Azure SDK clients report their calls as dependencies.
 * So the processes may start telemetry with their other adapters; nothing has to be imported first
 * (app-insights.test.ts proves it with a Fastify app loaded before start, in and across processes).
 */
function patchLoadedModules(logger: Logger): void {
  const require = createRequire(import.meta.url);
  for (const name of ['node:http', 'node:https', '@azure/core-tracing']) {
    try {
      require(name);
    } catch (error) {
      logger.debug({ module: name, err: error }, 'module not patched for telemetry');
    }
  }
  syncBuiltinESMExports();
}
