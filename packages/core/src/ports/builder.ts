import type { BuildPlan } from '../build-plan.ts';
import type { HealthReporting, Lifecycle } from './lifecycle.ts';

/** Where a step writes progress lines for the deployment's log. Secret values are masked by the sink. */
export type LogSink = (message: string, level?: 'info' | 'warn' | 'error') => void;

export interface BuildJob {
  deploymentId: string;
  orgId: string;
  projectId: string;
  appName: string;
  plan: BuildPlan;
  /** Where the sync step put the build context. */
  contextUri: string;
  /** Names of the deployment's env variables (the builder reads values from the secret store if it passes them). */
  envVariableNames: readonly string[];
  signal: AbortSignal;
  log: LogSink;
}

export interface BuiltImage {
  /** Local image directory, or `<registry>/<repository>:<tag>` in Azure. */
  image: string;
  /** Content digest of what was pushed (`sha256:…`); the runtime pins the revision to it. */
  digest: string | null;
}

/**
 * Builder: the sandbox and build steps. Local: a work dir with install/build commands. Azure: an ACI
 * container group `build-<deploymentId>` running kaniko, pushing to ACR.
 *
 * Every method is idempotent by deployment id: a redelivered job calls them again and must find,
 * not duplicate, what an earlier attempt made. Leaves out: SDK clients, container group models.
 */
export interface Builder extends Lifecycle, HealthReporting {
  /** Typical wall time of a build, for the API's `estimatedDuration`. */
  readonly estimatedDuration: string;
  /** sandbox step: creates (or finds) the isolated place the build runs; returns what it created. */
  createSandbox(job: BuildJob): Promise<Record<string, string>>;
  /** build step: runs the build to its end and returns the image. A non-zero exit is BUILD_FAILED. */
  build(job: BuildJob): Promise<BuiltImage>;
  /** Removes the sandbox; no error when it is already gone. */
  deleteSandbox(deploymentId: string): Promise<void>;
  /** Compensation of the build step: removes the image when the builder can. */
  deleteImage(deploymentId: string, image: string): Promise<void>;
}
