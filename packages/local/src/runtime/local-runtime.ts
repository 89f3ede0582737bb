import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { BuildPlan, DependencyHealth, Logger, LogSink, RevisionInfo, RevisionSpec, Runtime, SecretStore, ServingTarget } from '@zepid/core';
import { DeployError, probe, revisionSuffix, STATIC_ROOTS } from '@zepid/core';
import { sandboxEnv } from '../builder/sandbox-env.ts';
import type { Isolation } from '../builder/isolation.ts';
import type { SpawnedGroup } from '../process/process-group.ts';
import { spawnGroup, stopGroup } from '../process/process-group.ts';
import type { ProcessRegistry } from '../process/registry.ts';
import type { LocalRouter } from './router.ts';

const STATIC_SERVER = join(dirname(fileURLToPath(import.meta.url)), 'static-server.ts');

export interface LocalRuntimeOptions {
  statePath: string;
  revisionsDir: string;
  npmCache: string;
  router: LocalRouter;
  secrets: SecretStore;
  registry: ProcessRegistry;
  logger: Logger;
  readyTimeoutMs: number;
  isolation: Isolation;
  /** The worker's Node and npm as user commands reach them (the builder's toolchain): first on an app's PATH. */
  nodeBin: string;
}

/** What is needed to start a revision again after a worker restart. */
interface RevisionRecord {
  revision: string;
  deploymentId: string;
  image: string;
  plan: Pick<BuildPlan, 'kind' | 'start'>;
}

interface AppState {
  live: RevisionRecord;
  /** Kept for rollback; its image is kept too. */
  previous: RevisionRecord | null;
}

interface Running {
  group: SpawnedGroup;
  port: number;
  app: string;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** One HTTP GET; true when anything below 500 answers. */
function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const request = httpRequest({ host: '127.0.0.1', port, path: '/', method: 'GET', timeout: 1000 }, (response) => {
      response.resume();
      resolve((response.statusCode ?? 500) < 500);
    });
    request.on('timeout', () => request.destroy());
    request.on('error', () => resolve(false));
    request.end();
  });
}

/**
 * Local runtime: each revision is a process group listening on a free port (given as PORT), behind
 * the local router. A new revision gets traffic only once it answers HTTP; then the previous one is
 * stopped. State (live and previous revision per app) is kept in a file so a worker restart starts
 * each app's live revision again.
 */
export class LocalRuntime implements Runtime {
  private readonly options: LocalRuntimeOptions;
  private state: Record<string, AppState> = {};
  private readonly running = new Map<string, Running>();
  private saving: Promise<void> = Promise.resolve();

  constructor(options: LocalRuntimeOptions) {
    this.options = options;
  }

  async start(): Promise<void> {
    await mkdir(this.options.revisionsDir, { recursive: true });
    try {
      this.state = JSON.parse(await readFile(this.options.statePath, 'utf8')) as Record<string, AppState>;
    } catch {
      this.state = {};
    }
    await this.options.router.start();
    // Bring back every app's live revision; one that no longer starts is logged, not fatal.
    await Promise.all(
      Object.entries(this.state).map(async ([app, appState]) => {
        try {
          const port = await this.launch(app, appState.live, () => undefined, AbortSignal.timeout(this.options.readyTimeoutMs));
          this.options.router.set(app, port);
          this.options.logger.info({ app, revision: appState.live.revision, port }, 'revision restarted');
        } catch (error) {
          this.options.logger.error({ err: error, app, revision: appState.live.revision }, 'could not restart revision');
        }
      }),
    );
  }

  async close(): Promise<void> {
    await this.options.router.close();
    await Promise.all([...this.running.keys()].map((revision) => this.stop(revision)));
  }

  health(): Promise<DependencyHealth> {
    return probe(() => Promise.resolve(this.options.router.listeningPort));
  }

  /** Names of running revisions, per app (for tests and diagnostics). */
  runningRevisions(): { app: string; revision: string; pid: number; port: number }[] {
    return [...this.running].map(([revision, run]) => ({ app: run.app, revision, pid: run.group.pid, port: run.port }));
  }

  async deploy(spec: RevisionSpec): Promise<RevisionInfo> {
    const revision = `${spec.appName}--${revisionSuffix(spec.deploymentId)}`;
    const url = this.options.router.hostUrl(spec.appName);
    const current = this.state[spec.appName];
    if (spec.customDomain !== null) spec.log(`custom domain ${spec.customDomain} is not served in local mode; use ${url}`, 'warn');
    // A redelivered job after the switch: the revision is already live.
    if (current?.live.revision === revision && this.running.has(revision)) {
      return { revision, url, previousRevision: current.previous?.revision ?? null, dnsRecords: [] };
    }
    const record: RevisionRecord = { revision, deploymentId: spec.deploymentId, image: spec.image, plan: { kind: spec.plan.kind, start: spec.plan.start } };
    const port = await this.launch(spec.appName, record, spec.log, spec.signal);
    spec.log(`revision ${revision} answers on port ${port}; switching traffic`);

    const previous = current?.live.revision === revision ? current.previous : (current?.live ?? null);
    const dropped = current?.previous ?? null;
    this.options.router.set(spec.appName, port);
    this.state[spec.appName] = { live: record, previous };
    await this.saveState();
    if (previous !== null) await this.stop(previous.revision);
    // Keep the live and the previous image (for rollback); older ones go, unless a revision still
    // uses them: a reused build shares one image between deployments, and across environments.
    if (dropped !== null && dropped.revision !== previous?.revision && dropped.revision !== revision && !this.imageInUse(dropped.image)) {
      await rm(dropped.image, { recursive: true, force: true });
    }
    return { revision, url, previousRevision: previous?.revision ?? null, dnsRecords: [] };
  }

  /**
   * The app's live revision, with its process running, routed to and answering HTTP. A custom domain
   * plays no part: local mode never serves one.
   */
  async isServing(target: ServingTarget, signal: AbortSignal): Promise<boolean> {
    const run = this.running.get(target.revision);
    if (this.state[target.appName]?.live.revision !== target.revision || run === undefined) return false;
    if (this.options.router.target(target.appName) !== run.port) return false;
    if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new DeployError('CANCELLED', 'Deploy stopped');
    return answers(run.port);
  }

  /** Whether the live or previous revision of any app runs from `image`. */
  private imageInUse(image: string): boolean {
    return Object.values(this.state).some((app) => app.live.image === image || app.previous?.image === image);
  }

  async rollback(target: { deploymentId: string; appName: string; revision: string; previousRevision: string | null }, log: LogSink): Promise<void> {
    const appState = this.state[target.appName];
    if (appState?.live.revision === target.revision) {
      const previous = appState.previous;
      if (previous !== null && previous.revision === target.previousRevision && existsSync(previous.image)) {
        const port = await this.launch(target.appName, previous, log, AbortSignal.timeout(this.options.readyTimeoutMs));
        this.options.router.set(target.appName, port);
        this.state[target.appName] = { live: previous, previous: null };
        log(`traffic back on ${previous.revision}`);
      } else {
        this.options.router.remove(target.appName);
        delete this.state[target.appName];
        log(`no earlier revision to go back to; ${target.appName} stopped`);
      }
      await this.saveState();
    }
    await this.stop(target.revision);
  }

  private async launch(app: string, record: RevisionRecord, log: LogSink, signal: AbortSignal): Promise<number> {
    await this.stop(record.revision);
    const port = await freePort();
    const home = join(this.options.revisionsDir, record.revision, 'home');
    await mkdir(home, { recursive: true });
    await this.options.isolation.handOver(home);
    const variables = await this.options.secrets.get(record.deploymentId);
    // HOST and HOSTNAME: frameworks that honour them (Nuxt, SvelteKit, Astro, Next standalone) listen on loopback, reachable only through the router.
    const env = sandboxEnv({
      home,
      npmCache: this.options.npmCache,
      nodeBin: this.options.nodeBin,
      variables,
      extra: { PORT: String(port), NODE_ENV: 'production', HOST: '127.0.0.1', HOSTNAME: '127.0.0.1' },
    });
    const command = record.plan.start ?? `node ${JSON.stringify(STATIC_SERVER)} ${JSON.stringify(staticRoot(record.image))}`;
    const output: string[] = [];
    let logged = 0;
    const group = spawnGroup(command, {
      cwd: record.image,
      env,
      wrap: this.options.isolation.wrap,
      onLine: (line) => {
        output.push(line);
        if (output.length > 20) output.shift();
        // The first lines of a new revision go to the deployment log; later ones are the app's business.
        if (logged < 50) {
          logged += 1;
          log(`[app] ${line}`);
        }
      },
    });
    this.options.registry.add({ pid: group.pid, startTime: group.startTime, deploymentId: record.deploymentId, purpose: 'revision' });
    this.running.set(record.revision, { group, port, app });
    let exited = false;
    void group.exited.then(
      () => {
        exited = true;
        this.options.registry.remove(group.pid);
        if (this.running.get(record.revision)?.group === group) this.running.delete(record.revision);
      },
      () => {
        exited = true;
      },
    );

    const deadline = AbortSignal.any([signal, AbortSignal.timeout(this.options.readyTimeoutMs)]);
    // Most apps answer within a fraction of a second: look every 10 ms at first, then every 100 ms.
    const started = performance.now();
    while (!(await answers(port))) {
      if (exited) {
        throw new DeployError('START_FAILED', `The app exited before answering HTTP on its PORT. Last lines:\n${output.join('\n')}`);
      }
      if (deadline.aborted) {
        await this.stop(record.revision);
        if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new DeployError('CANCELLED', 'Deploy stopped');
        throw new DeployError(
          'DEPLOY_UNHEALTHY',
          `The app did not answer HTTP on PORT ${port} within ${Math.round(this.options.readyTimeoutMs / 1000)} s. Last lines:\n${output.join('\n')}`,
        );
      }
      await sleep(performance.now() - started < 2000 ? 10 : 100);
    }
    return port;
  }

  private async stop(revision: string): Promise<void> {
    const run = this.running.get(revision);
    if (run === undefined) return;
    this.running.delete(revision);
    await stopGroup(run.group, 3000);
    this.options.registry.remove(run.group.pid);
  }

  /**
   * Writes the state file, one write at a time: two apps deploying at once used to share one
   * temporary name, and the second rename found it gone (ENOENT). Each write takes the state as it
   * is when its turn comes, so the last one on disk is the newest.
   */
  private saveState(): Promise<void> {
    const write = this.saving.then(async () => {
      await mkdir(dirname(this.options.statePath), { recursive: true });
      const temporary = `${this.options.statePath}.${process.pid}.tmp`;
      await writeFile(temporary, JSON.stringify(this.state, null, 2));
      await rename(temporary, this.options.statePath);
    });
    this.saving = write.catch(() => undefined);
    return write;
  }
}

/** The first conventional output directory holding an index.html, else the image root. */
function staticRoot(image: string): string {
  for (const candidate of STATIC_ROOTS) {
    if (existsSync(join(image, candidate, 'index.html'))) return join(image, candidate);
  }
  return image;
}
