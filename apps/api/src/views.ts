import type { BuildPlan, DeploymentRecord, DnsRecord, StepName } from '@zepid/core';
import { kindOf, progressAt, STEPS } from '@zepid/core';
import { canRollback } from './apps.ts';
import type { DeploymentSummary, StatusView } from './schemas.ts';

/** The deployment as clients see it: the v1 status shape plus v3 fields; never env values or internals. */
export function statusView(
  record: DeploymentRecord,
  logs: string[],
  stepMs: Partial<Record<StepName, number>> = {},
  builder?: DeploymentRecord | null,
): StatusView {
  const steps = {} as StatusView['steps'];
  for (const step of STEPS) {
    const state = record.steps[step];
    steps[step] = {
      status: state.status,
      startedAt: state.startedAt,
      finishedAt: state.finishedAt,
      error: state.error,
      timestamp: state.finishedAt ?? state.startedAt,
    };
  }
  return {
    ...summaryView(record, stepMs, builder),
    cancelRequested: record.cancelRequested,
    steps,
    logs,
    image: record.result.image,
    revision: record.result.revision,
    reuse: {
      buildFrom: record.steps.build.status === 'completed' && typeof record.steps.build.output.reusedFrom === 'string' ? record.steps.build.output.reusedFrom : null,
      revisionKept: record.steps.deploy.status === 'completed' && record.steps.deploy.output.kept === true,
    },
    build: buildViewOf(record),
    dnsRecords: dnsRecordsOf(record),
    startedAt: record.startedAt,
    timestamp: record.updatedAt,
  };
}

/** The plan validate recorded; the build step's output names the static directory it found when the plan left it open. */
function buildViewOf(record: DeploymentRecord): StatusView['build'] {
  const raw = record.steps.validate.output.plan;
  if (typeof raw !== 'string') return null;
  let plan: Partial<BuildPlan>;
  try {
    plan = JSON.parse(raw) as Partial<BuildPlan>;
  } catch {
    return null;
  }
  if (plan.kind === undefined) return null;
  const found = record.steps.build.output.outputDir;
  return {
    kind: plan.kind,
    // Plans recorded before the framework table have no framework.
    framework: plan.framework ?? (plan.kind === 'dockerfile' ? 'dockerfile' : 'node'),
    packageManager: plan.packageManager === undefined || plan.packageManager === null ? null : (plan.packageManager.tool ?? plan.packageManager.name),
    packageManagerReason: plan.packageManager?.reason ?? null,
    install: plan.install ?? null,
    build: plan.build ?? null,
    start: plan.start ?? null,
    outputDir: typeof found === 'string' ? found : (plan.outputDir ?? null),
  };
}

function dnsRecordsOf(record: DeploymentRecord): DnsRecord[] {
  const raw = record.steps.deploy.output.dnsRecords;
  if (typeof raw !== 'string') return [];
  try {
    return JSON.parse(raw) as DnsRecord[];
  } catch {
    return [];
  }
}

/**
 * The fields a list shows of each deployment; the status view adds steps, logs and the rest. While it
 * runs, progress moves with the running step's time against `stepMs` (what steps took lately).
 * `builder`: the deployment that built its image when another one did (apps.ts, buildersOf), for `canRollback`.
 */
export function summaryView(record: DeploymentRecord, stepMs: Partial<Record<StepName, number>> = {}, builder?: DeploymentRecord | null): DeploymentSummary {
  return {
    deploymentId: record.id,
    projectId: record.projectId,
    environment: record.environment,
    status: record.status,
    kind: kindOf(record),
    rollbackOf: record.rollbackOf ?? null,
    imageOf: record.imageOf ?? null,
    redeployOf: record.redeployOf ?? null,
    createdBy: record.createdBy ?? null,
    canRollback: canRollback(record, builder),
    currentStep: record.currentStep,
    progress: record.status === 'in_progress' ? progressAt(record.steps, new Date(), stepMs) : record.progress,
    attempt: record.attempt,
    source: {
      digest: record.source.digest,
      fileCount: record.source.fileCount,
      bytes: record.source.bytes,
      // Records from before content-addressed source have no counts: each stored its whole source.
      storedFiles: record.source.storedFiles ?? record.source.fileCount,
      storedBytes: record.source.storedBytes ?? record.source.bytes,
    },
    url: record.result.url,
    error: record.error?.message ?? null,
    errorCode: record.error?.code ?? null,
    createdAt: record.createdAt,
    finishedAt: record.finishedAt,
  };
}

/** The 202 answer of the endpoints that queue a deployment (POST /deploy, cancel, retry, rollback). */
export function acceptedView(record: DeploymentRecord, message: string, estimatedDuration: string) {
  return {
    success: true as const,
    deploymentId: record.id,
    status: record.status,
    attempt: record.attempt,
    message,
    timestamp: new Date().toISOString(),
    estimatedDuration,
    statusUrl: `/deploy/${record.id}/status`,
  };
}
