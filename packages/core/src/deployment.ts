import type { DeploymentKind } from './app.ts';
import type { OutboxEvent } from './webhooks.ts';
import { addStatusEvent } from './webhooks.ts';
import type { DeploymentStatus, Environment, StepName, StepStatus } from './glossary.ts';
import { isStepDone, STEPS } from './glossary.ts';
import type { ErrorCode } from './errors.ts';

/** What one step did in the current attempt, and what it created (so compensation can undo it). */
export interface StepState {
  status: StepStatus;
  startedAt: string | null;
  finishedAt: string | null;
  error: string | null;
  /** Names of what the step created or produced (sandbox id, image, revision); never secret values. */
  output: Record<string, string | number | boolean | null>;
}

export interface ContainerSize {
  cpu: number;
  memory: string;
}

/** The request as recorded. Env variable values are not here: they live in the secrets port. */
export interface DeploymentSpec {
  customDomain: string | null;
  containerSize: ContainerSize | null;
  envVariableNames: string[];
  buildCommand: string | null;
  startCommand: string | null;
  port: number | null;
  historyMessageCount: number;
}

export interface SourceSummary {
  /** sha256 over the sorted (path, file sha256) pairs: identical trees share it (see source.ts). */
  digest: string;
  fileCount: number;
  bytes: number;
  /** Objects this deployment newly stored (content the org did not have yet; one per distinct content), and their bytes. */
  storedFiles: number;
  storedBytes: number;
}

export interface DeploymentResult {
  image: string | null;
  revision: string | null;
  url: string | null;
}

export interface DeploymentErrorInfo {
  code: ErrorCode;
  message: string;
  step: StepName | null;
}

export interface DeploymentRecord {
  id: string;
  orgId: string;
  projectId: string;
  userId: string;
  projectName: string | null;
  environment: Environment;
  /** `<project>-<environment>`, derived from orgId, projectId and environment. */
  appName: string;
  /** What the deployment does (app.ts); absent on records written before kinds existed: `build`. */
  kind?: DeploymentKind;
  /** `rollback`: the deployment whose image is put back live. */
  rollbackOf?: string | null;
  /** `rollback` and `config`: the deployment whose image (and build plan) this one runs, without building. */
  imageOf?: string | null;
  /**
   * A redeploy (POST /deploy/:id/redeploy): the deployment whose stored source this `build` builds
   * again. Such a build never reuses an earlier build's image (package caches still help).
   */
  redeployOf?: string | null;
  /** Who started it: the API token of the request (its id and name, never the token); absent on records written before. */
  createdBy?: DeploymentCreator | null;
  spec: DeploymentSpec;
  source: SourceSummary;
  status: DeploymentStatus;
  currentStep: StepName | null;
  progress: number;
  steps: Record<StepName, StepState>;
  /** 1 for the first run; a retry is attempt + 1. */
  attempt: number;
  /**
   * Lease epoch: bumped by the conditional write with which a delivery starts running the deployment
   * (`attempt_started`). The run remembers the epoch it wrote and, before any side effect another
   * delivery could rely on, confirms the record still carries it; a run that finds a newer epoch lost
   * the deployment to another delivery and makes no further side effect. 0 until the first run.
   */
  lease: number;
  /** Set by a cancel while the worker runs the deployment; the worker stops and compensates. */
  cancelRequested: boolean;
  result: DeploymentResult;
  error: DeploymentErrorInfo | null;
  /** Idempotency-Key of the request that created it, with a hash of the body, if the client sent one. */
  idempotency: { key: string; requestHash: string } | null;
  /** When the job of the current attempt was last published; null until the queue has it (outbox). */
  publishedAt: string | null;
  createdAt: string;
  updatedAt: string;
  /** When the first attempt started running; the deployment timeout counts from the current attempt's start. */
  startedAt: string | null;
  attemptStartedAt: string | null;
  finishedAt: string | null;
  /**
   * Webhook events of the status changes this write makes (webhooks.ts): the store keeps them in its
   * outbox in the same transaction or batch as the record (see `DeploymentStore.listOutbox`; a store
   * may leave out those of an org without a webhook) and returns and reads records without them, so
   * each event is written once.
   */
  outbox?: OutboxEvent[];
  /** Opaque version set by the store; every write is conditional on it. */
  etag: string;
}

/**
 * The token behind a deployment. `tokenId`: `tok_` + the first 12 hex characters of the token's
 * SHA-256 (what the service stores of a token anyway); `tokenName`: the name given in
 * DEPLOY_API_TOKENS (`orgId/name:token`), null when none was.
 */
export interface DeploymentCreator {
  tokenId: string;
  tokenName: string | null;
}

/** The message the API puts on the queue: "run attempt N of deployment X". The record is the truth. */
export interface JobMessage {
  /** Absent on deployment jobs (and on every message written before app jobs existed). */
  kind?: 'deployment';
  deploymentId: string;
  orgId: string;
  attempt: number;
  /** W3C trace context of the API request, so API and worker telemetry share one operation. */
  traceparent: string | null;
}

/**
 * App deletion (issue 12): "remove everything app(s) of this project own" — resumable and idempotent,
 * on the project's queue session so it runs after (and never beside) the project's deployments.
 * `environment` null: every environment of the project.
 */
export interface AppJobMessage {
  kind: 'delete-app';
  orgId: string;
  projectId: string;
  environment: Environment | null;
  requestedAt: string;
  traceparent: string | null;
}

/** Everything the queue carries. */
export type QueueMessage = JobMessage | AppJobMessage;

export function emptySteps(): Record<StepName, StepState> {
  const steps = {} as Record<StepName, StepState>;
  for (const step of STEPS) {
    steps[step] = { status: 'pending', startedAt: null, finishedAt: null, error: null, output: {} };
  }
  return steps;
}

export interface NewDeployment {
  id: string;
  orgId: string;
  projectId: string;
  userId: string;
  projectName: string | null;
  environment: Environment;
  appName: string;
  spec: DeploymentSpec;
  source: SourceSummary;
  idempotency: { key: string; requestHash: string } | null;
  createdBy?: DeploymentCreator | null;
}

export function newDeploymentRecord(input: NewDeployment, now: Date): DeploymentRecord {
  const timestamp = now.toISOString();
  return addStatusEvent(null, {
    ...input,
    status: 'queued',
    currentStep: null,
    progress: 0,
    steps: emptySteps(),
    attempt: 1,
    lease: 0,
    cancelRequested: false,
    result: { image: null, revision: null, url: null },
    error: null,
    publishedAt: null,
    createdAt: timestamp,
    updatedAt: timestamp,
    startedAt: null,
    attemptStartedAt: null,
    finishedAt: null,
    etag: '',
  }, timestamp);
}

export function jobFor(record: DeploymentRecord, traceparent: string | null): JobMessage {
  return { deploymentId: record.id, orgId: record.orgId, attempt: record.attempt, traceparent };
}

/** Step weights for progress: building dominates the wall time of a deployment. */
const STEP_WEIGHTS: Record<StepName, number> = { validate: 5, sync: 10, sandbox: 10, build: 45, deploy: 25, cleanup: 5 };

/** 0-100; completed (and skipped) steps count fully, the running one half. */
export function progressOf(steps: Record<StepName, StepState>): number {
  let done = 0;
  for (const step of STEPS) {
    const state = steps[step];
    if (isStepDone(state.status)) done += STEP_WEIGHTS[step];
    else if (state.status === 'in_progress') done += STEP_WEIGHTS[step] / 2;
  }
  return Math.min(100, Math.round(done));
}

/** What a step usually takes when no recent deployment says otherwise (local builds of small apps). */
export const DEFAULT_STEP_MS: Record<StepName, number> = { validate: 500, sync: 1_000, sandbox: 1_000, build: 20_000, deploy: 3_000, cleanup: 500 };

/**
 * Progress as of `now`: completed steps count fully, the running one by the time it has run against
 * what that step usually takes (`expectedMs`, e.g. the median of recent deployments), up to 95% of
 * its weight — so a long build moves instead of standing at one number. Never lower than a read a
 * moment before: the running step's share only grows, and stays below what its completion adds.
 */
export function progressAt(steps: Record<StepName, StepState>, now: Date, expectedMs: Partial<Record<StepName, number>> = {}): number {
  let done = 0;
  for (const step of STEPS) {
    const state = steps[step];
    if (isStepDone(state.status)) done += STEP_WEIGHTS[step];
    else if (state.status === 'in_progress' && state.startedAt !== null) {
      const expected = Math.max(1, expectedMs[step] ?? DEFAULT_STEP_MS[step]);
      const elapsed = Math.max(0, now.getTime() - Date.parse(state.startedAt));
      // 1 - e^(-t/T): about 63% of the weight at the usual duration, approaching (never passing) 95%.
      done += STEP_WEIGHTS[step] * Math.min(0.95, 1 - Math.exp(-elapsed / expected));
    }
  }
  return Math.min(100, Math.floor(done));
}

/** The first step that is not done (completed or skipped): where an attempt (re)starts. Null when all are done. */
export function firstUnfinishedStep(steps: Record<StepName, StepState>): StepName | null {
  return STEPS.find((step) => !isStepDone(steps[step].status)) ?? null;
}
