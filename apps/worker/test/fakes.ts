import type { AppRef } from '@zepid/core';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BuildJob, BuiltImage, Builder, DependencyHealth, LogSink, RevisionInfo, RevisionSpec, Runtime, ServingTarget } from '@zepid/core';
import type { DeployError } from '@zepid/core';

type Behaviour = 'ok' | 'hang' | { fail: DeployError } | { delayMs: number };

/** Waits for `ms` or the signal, whichever first; rejects with the signal's reason. */
async function work(behaviour: Behaviour, signal: AbortSignal): Promise<void> {
  if (behaviour === 'ok') return;
  if (typeof behaviour === 'object' && 'fail' in behaviour) throw behaviour.fail;
  const ms = behaviour === 'hang' ? 3_600_000 : behaviour.delayMs;
  await sleep(ms, undefined, { signal });
}

/** A builder that records calls and does what each test tells it, honouring the job's signal. */
export class FakeBuilder implements Builder {
  readonly estimatedDuration = 'instant';
  /** Tests change it to play a new builder version. */
  identity = 'fake-builder 1';
  readonly calls: string[] = [];
  sandboxes = new Set<string>();
  images = new Set<string>();
  behaviour: { sandbox: Behaviour; build: Behaviour } = { sandbox: 'ok', build: 'ok' };
  /** Lines the build prints, as a real build's output would be. */
  output: string[] = ['building…'];
  /** The last job build() was given (its fence, for the lease tests). */
  lastJob: BuildJob | null = null;
  /** Which deployments are inside build() right now, to check per-project serialisation. */
  readonly active = new Set<string>();
  maxActive = 0;

  start(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
  health(): Promise<DependencyHealth> {
    return Promise.resolve({ status: 'healthy', latencyMs: 0 });
  }

  async createSandbox(job: BuildJob): Promise<Record<string, string>> {
    this.calls.push(`createSandbox ${job.deploymentId}`);
    this.sandboxes.add(job.deploymentId);
    await work(this.behaviour.sandbox, job.signal);
    return { sandbox: `sb-${job.deploymentId}` };
  }

  async build(job: BuildJob): Promise<BuiltImage> {
    this.calls.push(`build ${job.deploymentId}`);
    this.lastJob = job;
    this.active.add(job.deploymentId);
    this.maxActive = Math.max(this.maxActive, this.active.size);
    try {
      for (const line of this.output) job.log(line);
      await work(this.behaviour.build, job.signal);
      this.images.add(job.deploymentId);
      return { image: `img-${job.deploymentId}`, digest: 'sha256:abc' };
    } finally {
      this.active.delete(job.deploymentId);
    }
  }

  imageExists(image: BuiltImage): Promise<boolean> {
    this.calls.push(`imageExists ${image.image}`);
    return Promise.resolve(this.images.has(image.image.replace(/^img-/, '')));
  }

  deleteSandbox(deploymentId: string): Promise<void> {
    this.calls.push(`deleteSandbox ${deploymentId}`);
    this.sandboxes.delete(deploymentId);
    return Promise.resolve();
  }

  deleteImage(deploymentId: string): Promise<void> {
    this.calls.push(`deleteImage ${deploymentId}`);
    this.images.delete(deploymentId);
    return Promise.resolve();
  }
}

/** A runtime that keeps "live revision per app" in memory. */
export class FakeRuntime implements Runtime {
  readonly calls: string[] = [];
  /** What each deploy was asked for (attempt, deadline…). */
  readonly specs: RevisionSpec[] = [];
  readonly live = new Map<string, string>();
  /** Revisions that crashed: still live (the traffic is on them) but not serving. */
  readonly crashed = new Set<string>();
  behaviour: Behaviour = 'ok';

  start(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
  health(): Promise<DependencyHealth> {
    return Promise.resolve({ status: 'healthy', latencyMs: 0 });
  }

  async deploy(spec: RevisionSpec): Promise<RevisionInfo> {
    this.calls.push(`deploy ${spec.deploymentId}`);
    this.specs.push(spec);
    await work(this.behaviour, spec.signal);
    // As the real runtimes do: traffic moves only while the run holds its lease.
    if (!(await spec.fence(`switching traffic to ${spec.deploymentId}`))) throw spec.signal.reason;
    const revision = `${spec.appName}--${spec.deploymentId.slice(4, 10)}`;
    const previousRevision = this.live.get(spec.appName) ?? null;
    this.live.set(spec.appName, revision);
    return { revision, url: `https://${spec.appName}.example`, previousRevision, dnsRecords: [] };
  }

  isServing(target: ServingTarget): Promise<boolean> {
    this.calls.push(`isServing ${target.revision}`);
    return Promise.resolve(this.live.get(target.appName) === target.revision && !this.crashed.has(target.revision));
  }

  rollback(target: { appName: string; revision: string; previousRevision: string | null }, _log: LogSink): Promise<void> {
    this.calls.push(`rollback ${target.revision}`);
    if (this.live.get(target.appName) === target.revision) {
      if (target.previousRevision === null) this.live.delete(target.appName);
      else this.live.set(target.appName, target.previousRevision);
    }
    return Promise.resolve();
  }

  /** Apps removed (removeApp calls, repeats included). */
  readonly removed: string[] = [];

  // As the port says (and the local runtime and Container Apps do): the app's revisions stop and it
  // stops serving; no error when it is already gone.
  removeApp(app: AppRef, _options: { signal: AbortSignal; log: LogSink }): Promise<void> {
    this.calls.push(`removeApp ${app.appName}`);
    this.removed.push(app.appName);
    this.live.delete(app.appName);
    return Promise.resolve();
  }
}
