import type { BuildPlan } from '../build-plan.ts';
import type { LeaseCheck } from '../lease.ts';
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
  /** Aborted on cancel, timeout, shutdown or a lost lease (`isLeaseLost(signal.reason)`). */
  signal: AbortSignal;
  log: LogSink;
  /**
   * Asked before every side effect on the sandbox (create, delete, and in Azure every ARM request made
   * for the job): false means another delivery owns the deployment now, so do nothing more — in
   * particular do not delete the sandbox on the way out (see lease.ts).
   */
  fence: LeaseCheck;
}

export interface BuiltImage {
  /** Local image directory, or `<registry>/<repository>:<tag>` in Azure. */
  image: string;
  /** Content digest of what was pushed (`sha256:…`); the runtime pins the revision to it. */
  digest: string | null;
  /** Where the build left the site or the server it runs (relative to the project), when the builder knows. */
  outputDir?: string | null;
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
  /**
   * What, besides the source and the build plan, decides the image a build produces: the builder's
   * version and toolchain (local: builder version and Node; Azure: kaniko image and registry). It is
   * part of the build key, so a change of builder never reuses an image the old one built. Not secret.
   */
  readonly identity: string;
  /**
   * Build reuse: whether an image an earlier deployment built is still there to run (local: its
   * directory; Azure: its manifest in ACR, by digest). A cheap check, made before a build is skipped.
   * A failure to tell throws; the caller then builds.
   */
  imageExists(image: BuiltImage, signal: AbortSignal): Promise<boolean>;
  /** sandbox step: creates (or finds) the isolated place the build runs; returns what it created. */
  createSandbox(job: BuildJob): Promise<Record<string, string>>;
  /** build step: runs the build to its end and returns the image. A non-zero exit is BUILD_FAILED. */
  build(job: BuildJob): Promise<BuiltImage>;
  /** Removes the sandbox; no error when it is already gone. */
  deleteSandbox(deploymentId: string): Promise<void>;
  /**
   * Compensation of the build step: removes the image when the builder can. Never called for an
   * image reused from an earlier deployment: that one belongs to the deployment that built it.
   */
  deleteImage(deploymentId: string, image: string): Promise<void>;
}
