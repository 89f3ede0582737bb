import type { AppRef } from '../app.ts';
import type { BuildPlan } from '../build-plan.ts';
import type { ContainerSize } from '../deployment.ts';
import type { Environment } from '../glossary.ts';
import type { LeaseCheck } from '../lease.ts';
import type { LogSink } from './builder.ts';
import type { HealthReporting, Lifecycle } from './lifecycle.ts';

export interface RevisionSpec {
  deploymentId: string;
  orgId: string;
  projectId: string;
  appName: string;
  environment: Environment;
  image: string;
  imageDigest: string | null;
  plan: BuildPlan;
  containerSize: ContainerSize | null;
  customDomain: string | null;
  /** Values come from the secret store (locally) or as Key Vault references (Azure), never from here. */
  envVariableNames: readonly string[];
  /** The attempt deploying; a retry starts its own revision (Azure: a revision suffix per attempt). */
  attempt: number;
  /**
   * When the step must have returned (epoch ms), so it records what it did before the attempt's
   * timeout stops it: waits for health and for a certificate end by then. Unset: the runtime's own limits.
   */
  deadline?: number | undefined;
  /** Aborted on cancel, timeout, shutdown or a lost lease (`isLeaseLost(signal.reason)`). */
  signal: AbortSignal;
  log: LogSink;
  /**
   * Asked before every side effect (creating the revision, moving traffic, stopping or deactivating a
   * revision, and in Azure every ARM request made for the deployment): false means another delivery
   * owns the deployment now — its revision may be the very one this call would stop — so do nothing more.
   */
  fence: LeaseCheck;
  /**
   * Rollback (issue 12): the revision the rolled-back deployment ran, which may still exist. When it
   * does and its template matches this spec (same image, settings and env references), the runtime
   * reactivates it and moves the traffic to it (Azure) instead of creating a new revision; otherwise it
   * starts a new revision from `image` as usual. Unset: always a new revision.
   */
  reactivateRevision?: string | null | undefined;
}

export interface DnsRecord {
  type: 'CNAME' | 'TXT' | 'A';
  name: string;
  value: string;
}

export interface RevisionInfo {
  revision: string;
  url: string;
  /** The revision that served traffic before; compensation moves traffic back to it. */
  previousRevision: string | null;
  /** Records the user must add before the custom domain can be bound. */
  dnsRecords: DnsRecord[];
}

/** A revision the deploy step would keep for an identical redeploy, and the domain it must serve. */
export interface ServingTarget {
  appName: string;
  revision: string;
  /** When set, the revision counts as serving only if this domain is bound to the app (Azure; locally domains are not served). */
  customDomain: string | null;
}

export interface RollbackTarget {
  deploymentId: string;
  appName: string;
  revision: string;
  previousRevision: string | null;
  fence: LeaseCheck;
}

/**
 * Runtime: the deploy step. Starts a new revision of `<project>-<environment>`, waits until it is
 * healthy, then moves all traffic to it; if it never gets healthy, traffic stays where it was and
 * the step fails with DEPLOY_UNHEALTHY. Local: a child process behind a router. Azure: a Container
 * Apps revision. Leaves out: ARM models, pollers, process handles.
 */
export interface Runtime extends Lifecycle, HealthReporting {
  deploy(spec: RevisionSpec): Promise<RevisionInfo>;
  /**
   * Whether `revision` serves the app right now: it has all the traffic and is up (local: the app's
   * live revision, its process running and answering HTTP; Azure: the traffic on it, provisioned,
   * running and healthy). The deploy step keeps such a revision for an identical redeploy instead of
   * starting a new one; a dead or unhealthy one is replaced. Changes nothing. An error means "not
   * sure": the deploy step starts a new revision.
   */
  isServing(target: ServingTarget, signal: AbortSignal): Promise<boolean>;
  /** Compensation: traffic back to `previousRevision` (or none), and `revision` stopped. Idempotent. `fence` as in RevisionSpec. */
  rollback(target: RollbackTarget, log: LogSink): Promise<void>;
  /**
   * App deletion (issue 12): stops every revision of the app and removes the app itself (Azure: the
   * Container App and its managed certificates; locally: the processes and the router's route), so its
   * URL stops answering. Idempotent: no error when already gone. Images are the builder's (deleteImage).
   */
  removeApp(app: AppRef, options: { signal: AbortSignal; log: LogSink }): Promise<void>;
}
