import type { Lifecycle } from './lifecycle.ts';

/**
 * The customDimensions every deployment event and metric carries. Required on every call, so the
 * dashboard's Environment filter and its joins on deploymentId hold for whatever the code sends.
 */
export const DEPLOYMENT_DIMENSIONS = ['deploymentId', 'orgId', 'projectId', 'environment'] as const;
export type DeploymentDimension = (typeof DEPLOYMENT_DIMENSIONS)[number];

/**
 * Every customEvents name the code sends, with the dimensions it may add to DEPLOYMENT_DIMENSIONS.
 * The workbook and the alerts in infra/ query only these names and keys
 * (test/infra/telemetry-queries.test.ts reads this table): a name or key added here is what a new
 * tile may use; one removed here fails that test while a query still reads it.
 */
export const TELEMETRY_EVENTS = {
  DeploymentQueued: [],
  DeploymentCompleted: ['url'],
  DeploymentFailed: ['errorCode', 'step'],
  DeploymentCancelled: ['step'],
  /** A deployment older than its app's live one, ended without moving traffic (the step it reached). */
  DeploymentSuperseded: ['step'],
  /** A rollback deployment completed: an earlier deployment's image (`rollbackOf`) is live again, nothing built. */
  AppRolledBack: ['rollbackOf', 'url'],
  /** A config deployment completed: the live image restarted with new env values (`imageOf` built it), nothing built. */
  AppEnvChanged: ['imageOf', 'url'],
  /** The delete job removed an app and everything it owned (`deploymentId` is '': no deployment; `deployments`: how many were removed). */
  AppDeleted: ['appName', 'deployments'],
  /**
   * One webhook delivery attempt that got no 2xx (issue 13's dispatcher). The deployment dimensions
   * are those of the event delivered (empty for `webhook.test`). `errorClass`: `HTTP_<status>` when
   * the endpoint answered, else TIMEOUT, ADDRESS_REFUSED (the address rules), CUT_OFF or the socket
   * error's code (ECONNREFUSED …). `final`: "true" when no attempt follows. Never the URL or the payload.
   */
  WebhookDeliveryFailed: ['webhookId', 'eventType', 'statusCode', 'errorClass', 'attempt', 'final'],
  /** A webhook disabled by the dispatcher; `reason`: GONE_410 or FAILING_3_DAYS. Dimensions as above. */
  WebhookDisabled: ['webhookId', 'reason'],
} as const satisfies Record<string, readonly string[]>;

/**
 * How one run of a step ended (StepDuration's `outcome`): `failed` when it threw (a transient error
 * the worker retries included), `interrupted` when the worker stopped or lost the deployment (the
 * step runs again on another delivery).
 */
export const STEP_OUTCOMES = ['completed', 'failed', 'cancelled', 'timed out', 'interrupted'] as const;
export type StepOutcome = (typeof STEP_OUTCOMES)[number];

/** Every customMetrics name the code sends (milliseconds), with the dimensions it adds. */
export const TELEMETRY_METRICS = {
  /** From the start of an attempt to its completion: completed deployments only. */
  DeploymentDuration: [],
  /** One run of one step, however it ended (`outcome`, one of STEP_OUTCOMES). */
  StepDuration: ['step', 'outcome'],
  /** From queued to the first attempt starting. */
  QueueWait: [],
} as const satisfies Record<string, readonly string[]>;

export type DeploymentEventName = keyof typeof TELEMETRY_EVENTS;
export type MetricName = keyof typeof TELEMETRY_METRICS;

type ExtraDimension<N extends DeploymentEventName | MetricName> = N extends DeploymentEventName
  ? (typeof TELEMETRY_EVENTS)[N][number]
  : N extends MetricName
    ? (typeof TELEMETRY_METRICS)[N][number]
    : never;

/** What one event or metric sends: the deployment's dimensions, plus those of its name (each optional). */
export type TelemetryProperties<N extends DeploymentEventName | MetricName> = Record<DeploymentDimension, string> &
  Partial<Record<ExtraDimension<N>, string>>;

/**
 * Telemetry: Application Insights in Azure, structured logs locally. Properties are ids and codes,
 * never secret values. Leaves out: SDK clients, spans, envelopes.
 */
export interface Telemetry extends Lifecycle {
  event<N extends DeploymentEventName>(name: N, properties: TelemetryProperties<N>): void;
  /**
   * True where events are only log lines (LogTelemetry: no Application Insights): a caller that
   * writes a line for the same thing anyway may carry the event on it (`telemetry: true`, `event`
   * and the properties, as `event` would write them) instead of calling `event` — POST /deploy's
   * access line carries its DeploymentQueued, one line per POST instead of two. Absent: call `event`.
   */
  readonly eventsAreLogLines?: boolean;
  metric<N extends MetricName>(name: N, valueMs: number, properties: TelemetryProperties<N>): void;
  /** W3C traceparent of the operation in progress, to carry on a queue message; null when not tracing. */
  currentTraceparent(): string | null;
  /** Runs `fn` as an operation continuing `traceparent`, so API and worker share one operation id. */
  withOperation<T>(name: string, traceparent: string | null, fn: () => Promise<T>): Promise<T>;
}
