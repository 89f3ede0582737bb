/**
 * Glossary of Zepid Deploy v3. These words, and only these, are used in code, logs, API fields and docs.
 *
 * - deployment: one request to put a project's source live; id `dep_…` (random, URL-safe, 128 bits).
 * - project / organization (org): the thing deployed, and the tenant that owns it. Every deployment
 *   belongs to one org; no token of another org can see or touch it.
 * - step: one of six stages, in order: validate, sync, sandbox, build, deploy, cleanup.
 * - attempt: one run of the workflow for a deployment; a retry is a new attempt of the same deployment.
 * - source: the files of a deployment, addressed by a digest of their content.
 * - build context: the source packed as tar.gz, or plain tar locally (plus a generated Dockerfile when it has none).
 * - image: what the build produces; in Azure an ACR reference pinned by digest, locally a directory.
 * - revision: one running version of a project's app (a Container Apps revision; locally a process).
 * - app: one project in one environment, what has a URL: where its revisions run (`<project>-<environment>`,
 *   its `appName`, which is its id). An app's env variables (names; values in the secrets port) and its
 *   deletion are kept in an app record (app.ts).
 * - deployment kind: `build` (source → image → revision), `rollback` (an earlier deployment's image
 *   back live, no build), `config` (the live image restarted with new env values, no build).
 * - app env: an app's current env variable values (secrets port, `putAppEnv`), what its next deployment
 *   runs with when the request sends none. Each deployment keeps its own copy (`put`).
 * - env scope: `runtime` (read by the running app: a change restarts the live image, a `config`
 *   deployment) or `build` (read by the build, e.g. `VITE_*`: a change builds the live source again).
 * - rollback: putting an earlier completed deployment's image back live as a new `rollback` deployment;
 *   possible while image retention keeps that image (`canRollback`). Not the compensation of a failed
 *   deployment (`Runtime.rollback`), which only undoes what that deployment made.
 * - job / message: what the API puts on the queue to ask the worker to run an attempt.
 * - live deployment: the deployment whose revision takes an app's traffic now. It only moves forward:
 *   a deployment older than the app's live one never takes the traffic; it ends `superseded`.
 * - lease: a delivery's hold on a deployment, an epoch in the record (`lease`) bumped by the etag write
 *   that starts the delivery's run. A run that finds the epoch moved on makes no further side effect.
 */

export const STEPS = ['validate', 'sync', 'sandbox', 'build', 'deploy', 'cleanup'] as const;
export type StepName = (typeof STEPS)[number];

/**
 * `superseded`: the deployment was not put live because a newer deployment of the same app already is
 * (the live deployment only moves forward); what it built was removed.
 */
export const DEPLOYMENT_STATUSES = ['queued', 'in_progress', 'completed', 'failed', 'cancelled', 'superseded'] as const;
export type DeploymentStatus = (typeof DEPLOYMENT_STATUSES)[number];

/** Statuses from which a deployment never moves again on its own. */
export const TERMINAL_STATUSES: readonly DeploymentStatus[] = ['completed', 'failed', 'cancelled', 'superseded'];
/** Statuses that count against an org's active-deployment limit. */
export const ACTIVE_STATUSES: readonly DeploymentStatus[] = ['queued', 'in_progress'];

/**
 * `skipped`: the step does not apply to this deployment and did nothing (a `rollback` or `config`
 * deployment builds nothing: sync, sandbox and build are skipped). It counts as done, like completed.
 */
export const STEP_STATUSES = ['pending', 'in_progress', 'completed', 'skipped', 'failed', 'cancelled'] as const;
export type StepStatus = (typeof STEP_STATUSES)[number];

export const ENVIRONMENTS = ['development', 'staging', 'production'] as const;
export type Environment = (typeof ENVIRONMENTS)[number];

/** Whether a step is done: completed, or skipped because it does not apply. */
export function isStepDone(status: StepStatus): boolean {
  return status === 'completed' || status === 'skipped';
}

export function isTerminal(status: DeploymentStatus): boolean {
  return TERMINAL_STATUSES.includes(status);
}
