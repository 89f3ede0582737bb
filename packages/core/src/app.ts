import type { DeploymentRecord } from './deployment.ts';
import type { Environment } from './glossary.ts';

/**
 * Apps and what is done to them once they are live (issue 12: rollback, env variables, deletion).
 *
 * - app: one project in one environment, what has a URL; `appName` (`<project>-<environment>`) is its id.
 * - live deployment: the deployment whose revision takes the app's traffic (the newest completed one).
 * - deployment kind: `build` (a POST /deploy: source → image → revision), `rollback` (an earlier
 *   deployment's image back live, no build), `config` (the live image restarted with new env values,
 *   no build).
 */

export const DEPLOYMENT_KINDS = ['build', 'rollback', 'config'] as const;
export type DeploymentKind = (typeof DEPLOYMENT_KINDS)[number];

/** Records written before kinds existed have none: they are builds. */
export function kindOf(record: Pick<DeploymentRecord, 'kind'>): DeploymentKind {
  return record.kind ?? 'build';
}

export const APP_STATUSES = ['live', 'deploying', 'failed', 'deleting'] as const;
export type AppStatus = (typeof APP_STATUSES)[number];

/** Identifies an app within an org; `appName` is derived from the other three (naming.ts). */
export interface AppRef {
  orgId: string;
  projectId: string;
  environment: Environment;
  appName: string;
}

/**
 * Where an env variable is used. `runtime`: read by the running app only, so a change restarts the
 * live image with the new value (a `config` deployment). `build`: read by the build too (e.g. Vite's
 * `VITE_*`, Next's `NEXT_PUBLIC_*`, inlined into the bundle), so a change needs a new build of the
 * live source (a `build` deployment).
 */
export const ENV_SCOPES = ['runtime', 'build'] as const;
export type EnvScope = (typeof ENV_SCOPES)[number];

/** One env variable of an app, as stored beside the app: never its value (that is in the secrets port). */
export interface AppEnvVariable {
  name: string;
  scope: EnvScope;
  updatedAt: string;
}

/**
 * What the service keeps about an app besides its deployments: its env variables (names and scopes;
 * values in the secrets port) and whether it is being deleted. Created by the first write that needs
 * it (first env change, first deployment or deletion, as the store decides); absent for an app never
 * touched that way. Written conditionally on `etag` like deployment records.
 */
export interface AppRecord extends AppRef {
  env: AppEnvVariable[];
  /** When the env variables last changed; null when never set. */
  envUpdatedAt: string | null;
  /** Set by DELETE /projects/:projectId: new deployments are refused (409) and a delete job removes everything. */
  deletingSince: string | null;
  /**
   * Set by the delete job (conditionally on `etag`) just before it sends telemetry `AppDeleted`, so a
   * redelivery of the job does not send it again: at most once per deletion (a crash between this
   * write and the send loses the event rather than doubling it). Absent on records written before.
   */
  deletionAnnouncedAt?: string | null;
  /**
   * Held while an API replica changes the app's env values (reads them, edits them, stores the whole
   * set again): taken and given back by conditional writes of this record, so changes from any number
   * of replicas are made one at a time. `until`: when a holder that never gave it back (a replica that
   * died) loses it. Absent or null: free.
   */
  envLock?: { owner: string; until: string } | null;
  createdAt: string;
  updatedAt: string;
  /** Opaque version set by the store. */
  etag: string;
}

/** Images of an app's most recent completed deployments that cleanup never removes (besides the live one's): rollback needs them. */
export const DEFAULT_KEEP_IMAGES_PER_APP = 5;
