import type { AppRef } from '@zepid/core';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BuildPlan, DependencyHealth, LeaseCheck, Logger, LogSink, RevisionInfo, RevisionSpec, RollbackTarget, Runtime, SecretStore, ServingTarget } from '@zepid/core';
import { DeployError, probe, revisionSuffix } from '@zepid/core';
import { sandboxEnv } from '../builder/sandbox-env.ts';
import type { Isolation } from '../builder/isolation.ts';
import type { SpawnedGroup } from '../process/process-group.ts';
import { spawnGroup, stopGroup } from '../process/process-group.ts';
import { addressInUse, allInterfacesWarning, listeningSockets, wrongPortMessage } from '../process/listening.ts';
import type { ProcessRegistry } from '../process/registry.ts';
import type { LocalRouter, RouteTarget } from './router.ts';
import { StaticSite } from './static-site.ts';

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
  /** How long an app may listen on other ports and not on PORT before its start fails (WRONG_PORT_GRACE_MS). */
  wrongPortGraceMs?: number;
}

/**
 * An app that listens on ports of its own and not on PORT for this long fails its start (an app
 * may open another port, e.g. for metrics, before PORT: it has this long to open PORT too).
 */
export const WRONG_PORT_GRACE_MS = 5000;

/** What is needed to start a revision again after a worker restart. */
interface RevisionRecord {
  revision: string;
  deploymentId: string;
  /** Whose app it is: decides the uid it runs as (isolation.ts). */
  orgId: string;
  projectId: string;
  image: string;
  /** `framework` names the fix in a wrong-port message (absent in state files written before it was kept). */
  plan: Pick<BuildPlan, 'kind' | 'start'> & Partial<Pick<BuildPlan, 'framework'>>;
}

interface AppState {
  live: RevisionRecord;
  /** Kept for rollback; its image is kept too. */
  previous: RevisionRecord | null;
}

/** A running revision: an app's process group, or a static site the router serves itself. */
type Running = { app: string; group: SpawnedGroup; port: number } | { app: string; site: StaticSite; cacheDir: string };

/** A port free on loopback now (the kernel's pick, released at once). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** One HTTP GET of `/`; true when anything below 500 answers (an app's own 404 at `/` is its business). */
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
 * Local runtime: each revision of an app is a process group listening on a free port (given as PORT),
 * behind the local router; a static site's revision is its output, served by the router itself. A
 * new revision gets traffic only once it is healthy (an app: HTTP below 500 at `/`; a static site:
 * `/` answers 200); then the previous one is stopped. State (live and previous revision per app) is kept in a file so a worker restart starts
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
          const target = await this.launch(app, appState.live, () => undefined, AbortSignal.timeout(this.options.readyTimeoutMs));
          this.options.router.set(app, target);
          this.options.logger.info({ app, revision: appState.live.revision, ...('port' in target ? { port: target.port } : { static: true }) }, 'revision restarted');
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

  /** Running revisions, per app (for tests and diagnostics); a static site has no process (pid null). */
  runningRevisions(): { app: string; revision: string; pid: number | null; port: number | null }[] {
    return [...this.running].map(([revision, run]) => ({ app: run.app, revision, pid: 'group' in run ? run.group.pid : null, port: 'port' in run ? run.port : null }));
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
    const record: RevisionRecord = {
      revision,
      deploymentId: spec.deploymentId,
      orgId: spec.orgId,
      projectId: spec.projectId,
      image: spec.image,
      plan: { kind: spec.plan.kind, start: spec.plan.start, framework: spec.plan.framework },
    };
    // Revisions are named after the deployment: a run that lost its lease would restart the owner's.
    if (!(await spec.fence(`starting revision ${revision}`))) throw stopped(spec.signal);
    const target = await this.launch(spec.appName, record, spec.log, spec.signal, spec.fence);
    if (!(await spec.fence(`switching the traffic of ${spec.appName} to ${revision}`))) throw stopped(spec.signal);
    spec.log(
      'port' in target
        ? `revision ${revision} answers on port ${target.port}; switching traffic`
        : `revision ${revision}: ${target.site.fileCount} files served by the router, / answers 200; switching traffic`,
    );

    const previous = current?.live.revision === revision ? current.previous : (current?.live ?? null);
    this.options.router.set(spec.appName, target);
    this.state[spec.appName] = { live: record, previous };
    await this.saveState();
    if (previous !== null) await this.stop(previous.revision);
    // Images are never removed here: a rollback may need any of the app's last KEEP_IMAGES_PER_APP
    // (the worker's image retention removes the others, and marks them so the API refuses them).
    return { revision, url, previousRevision: previous?.revision ?? null, dnsRecords: [] };
  }

  /**
   * The app's live revision, with its process running, routed to and answering HTTP. A custom domain
   * plays no part: local mode never serves one.
   */
  async isServing(target: ServingTarget, signal: AbortSignal): Promise<boolean> {
    const run = this.running.get(target.revision);
    if (this.state[target.appName]?.live.revision !== target.revision || run === undefined) return false;
    const routed = this.options.router.target(target.appName);
    if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new DeployError('CANCELLED', 'Deploy stopped');
    if ('site' in run) return routed !== undefined && 'site' in routed && routed.site === run.site && siteIsHealthy(run.site);
    if (routed === undefined || !('port' in routed) || routed.port !== run.port) return false;
    return answers(run.port);
  }

  async rollback(target: RollbackTarget, log: LogSink): Promise<void> {
    if (!(await target.fence(`rolling ${target.appName} back from ${target.revision}`))) return;
    const appState = this.state[target.appName];
    if (appState?.live.revision === target.revision) {
      const previous = appState.previous;
      if (previous !== null && previous.revision === target.previousRevision && existsSync(previous.image)) {
        const routeTarget = await this.launch(target.appName, previous, log, AbortSignal.timeout(this.options.readyTimeoutMs));
        this.options.router.set(target.appName, routeTarget);
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

  private async launch(app: string, record: RevisionRecord, log: LogSink, signal: AbortSignal, fence?: LeaseCheck): Promise<RouteTarget> {
    // A state file written before per-app uids has no owner for the revision, and its image belongs to
    // the single sandbox user of then: refuse to start it rather than guess whose uid it should get.
    if (typeof (record as Partial<RevisionRecord>).orgId !== 'string') {
      throw new DeployError('START_FAILED', `${record.revision} was deployed before each app had a uid of its own; deploy ${app} again`);
    }
    await this.stop(record.revision);
    if (record.plan.start === null) return this.openStatic(app, record, log);
    const port = await freePort();
    const tenant = await this.options.isolation.tenant({ orgId: record.orgId, projectId: record.projectId, appName: app });
    // A fresh HOME at every start, like a container's filesystem: root only ever hands over a tree
    // it has just made, never one the tenant wrote into.
    const dir = join(this.options.revisionsDir, record.revision);
    await rm(dir, { recursive: true, force: true });
    const home = join(dir, 'home');
    await mkdir(home, { recursive: true });
    await tenant.handOver(dir);
    const variables = await this.options.secrets.get(record.deploymentId);
    const npmCache = await tenant.privateDir(this.options.npmCache);
    // HOST and HOSTNAME: frameworks that honour them (Nuxt, SvelteKit, Astro, Next standalone) listen on loopback, reachable only through the router.
    // FASTIFY_ADDRESS: `fastify start` (fastify-cli, the start script `fastify generate` writes) reads its
    // address from it (fastify-cli's README, options table) and otherwise takes 0.0.0.0 wherever it
    // finds /.dockerenv or Kubernetes, as on this service's own container hosts.
    const env = sandboxEnv({
      home,
      npmCache,
      nodeBin: this.options.nodeBin,
      variables,
      extra: { PORT: String(port), NODE_ENV: 'production', HOST: '127.0.0.1', HOSTNAME: '127.0.0.1', FASTIFY_ADDRESS: '127.0.0.1' },
    });
    const command = record.plan.start;
    const output: string[] = [];
    let logged = 0;
    const group = spawnGroup(command, {
      cwd: record.image,
      env,
      wrap: tenant.wrap,
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
        const current = this.running.get(record.revision);
        if (current !== undefined && 'group' in current && current.group === group) this.running.delete(record.revision);
      },
      () => {
        exited = true;
      },
    );

    const deadline = AbortSignal.any([signal, AbortSignal.timeout(this.options.readyTimeoutMs)]);
    // Only the process this launch started, and not when the run lost its lease: by then the
    // owning delivery may run this very revision (same name), started after this one.
    const stopThisLaunch = async () => {
      const running = this.running.get(record.revision);
      if (running !== undefined && 'group' in running && running.group === group && (fence === undefined || (await fence(`stopping revision ${record.revision}`).catch(() => true)))) {
        await this.stop(record.revision);
      }
    };
    // Most apps answer within a fraction of a second: look every 10 ms at first, then every 100 ms.
    // Once a second, which ports the app listens on: one that listens on other ports and not on
    // PORT for WRONG_PORT_GRACE_MS (Koa's README app and Hono's Node template listen on 3000) fails
    // then, saying what to change, rather than when the ready timeout runs out.
    const started = performance.now();
    let lookedAt = started;
    let elsewhereSince: number | null = null;
    let elsewhere: number[] = [];
    while (!(await answers(port))) {
      if (exited) {
        const hit = this.options.isolation.limitHit(output);
        const taken = addressInUse(output, port);
        const why = hit !== null ? `: ${hit}` : taken !== null ? `: ${wrongPortMessage(record.plan.framework ?? '', port, [taken])}` : '';
        throw new DeployError('START_FAILED', `The app exited before answering HTTP on its PORT${why}. Last lines:\n${output.join('\n')}`);
      }
      const now = performance.now();
      if (now - lookedAt >= 1000) {
        lookedAt = now;
        const ports = (await listeningSockets(group.pid).catch(() => [])).map((socket) => socket.port);
        elsewhere = ports.includes(port) ? [] : ports;
        elsewhereSince = elsewhere.length === 0 ? null : (elsewhereSince ?? now);
        if (elsewhereSince !== null && now - elsewhereSince >= (this.options.wrongPortGraceMs ?? WRONG_PORT_GRACE_MS)) {
          await stopThisLaunch();
          throw new DeployError('START_FAILED', `${wrongPortMessage(record.plan.framework ?? '', port, elsewhere)} Last lines:\n${output.join('\n')}`);
        }
      }
      if (deadline.aborted) {
        await stopThisLaunch();
        if (signal.aborted) throw stopped(signal);
        if (elsewhere.length > 0) throw new DeployError('START_FAILED', `${wrongPortMessage(record.plan.framework ?? '', port, elsewhere)} Last lines:\n${output.join('\n')}`);
        throw new DeployError(
          'DEPLOY_UNHEALTHY',
          `The app did not answer HTTP on PORT ${port} within ${Math.round(this.options.readyTimeoutMs / 1000)} s. Last lines:\n${output.join('\n')}`,
        );
      }
      await sleep(performance.now() - started < 2000 ? 10 : 100);
    }
    const warning = allInterfacesWarning(record.plan.framework ?? '', port, await listeningSockets(group.pid).catch(() => []));
    if (warning !== null) log(warning);
    return { port };
  }

  /**
   * A static revision: its output, walked and precompressed once, served by the router. Healthy
   * only when `/` answers 200: a site without an index.html (e.g. a server framework's project
   * mistaken for a static one) must not go live answering 404s.
   */
  private async openStatic(app: string, record: RevisionRecord, log: LogSink): Promise<RouteTarget> {
    const root = staticRoot(record.image);
    const cacheDir = join(this.options.revisionsDir, record.revision, 'compressed');
    let site: StaticSite;
    try {
      site = await StaticSite.open(root, cacheDir);
    } catch (error) {
      throw new DeployError('START_FAILED', `Could not read the static site's files: ${(error as Error).message}`);
    }
    if (!siteIsHealthy(site)) {
      await rm(cacheDir, { recursive: true, force: true });
      throw new DeployError(
        'DEPLOY_UNHEALTHY',
        `The static site does not answer / with 200: its output has no index.html at its root (${site.fileCount} files). Build the site into its output directory, or give a startCommand to run a server.`,
      );
    }
    this.running.set(record.revision, { app, site, cacheDir });
    log(`static site: ${site.fileCount} files; gzip and brotli copies made`);
    // _redirects / _headers: what applies, and every rule left out (outside the supported subset) and why.
    if (site.ruleCounts.redirects + site.ruleCounts.headers + site.ruleWarnings.length > 0) {
      log(`static site rules: ${site.ruleCounts.redirects} redirects, ${site.ruleCounts.headers} header rules`);
    }
    for (const warning of site.ruleWarnings) log(`static site rules: ${warning}`, 'warn');
    return { site };
  }

  private async stop(revision: string): Promise<void> {
    const run = this.running.get(revision);
    if (run === undefined) return;
    this.running.delete(revision);
    if ('site' in run) {
      await rm(run.cacheDir, { recursive: true, force: true });
      return;
    }
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

  /**
   * App deletion: the route goes first (the URL stops answering), then every revision of the app is
   * stopped, its state entry and its revision dirs (HOME, static caches) removed. Images are the
   * builder's. Idempotent: an app already gone, or never started here, is no error.
   */
  async removeApp(app: AppRef, options: { signal: AbortSignal; log: LogSink }): Promise<void> {
    this.options.router.remove(app.appName);
    const revisions = [...this.running].filter(([, run]) => run.app === app.appName).map(([revision]) => revision);
    for (const revision of revisions) await this.stop(revision);
    if (this.state[app.appName] !== undefined) {
      delete this.state[app.appName];
      await this.saveState();
    }
    const own = new RegExp(`^${app.appName.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}--d[0-9a-f]{10}(-a[0-9]+)?$`);
    const dirs = (await readdir(this.options.revisionsDir).catch(() => [] as string[])).filter((name) => own.test(name));
    for (const dir of dirs) await rm(join(this.options.revisionsDir, dir), { recursive: true, force: true });
    options.log(`${app.appName} removed: route gone, ${revisions.length} revision(s) stopped, ${dirs.length} revision dir(s) removed`);
  }
}

function siteIsHealthy(site: StaticSite): boolean {
  return site.answer('GET', '/', {}).status === 200;
}

/**
 * Where a static image's site is. A static image is its build output (index.html at its root), but
 * images stored by earlier builders hold the whole project with the output in a conventional
 * directory; those come first so a project's source index.html (Vite's) is never served.
 */
const LEGACY_OUTPUT_DIRS = ['dist', 'build', 'out', 'public'];
function staticRoot(image: string): string {
  for (const candidate of LEGACY_OUTPUT_DIRS) {
    if (existsSync(join(image, candidate, 'index.html'))) return join(image, candidate);
  }
  return image;
}

function stopped(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new DeployError('CANCELLED', 'Deploy stopped');
}
