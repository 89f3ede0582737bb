import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import type { ApiClient, DeploymentStatus } from '../api.ts';
import { ApiError, EXIT, UsageError } from '../errors.ts';
import { follow, TERMINAL } from '../follow.ts';
import type { Io } from '../output.ts';
import { formatLine, ProgressReporter } from '../output.ts';
import type { FollowOptions } from './deploy.ts';
import { finish, followAccepted } from './deploy.ts';

const DEPLOYMENT_ID = /^dep_[a-z2-7]{26}$/;

export interface AppView {
  appName: string;
  projectId: string;
  environment: string;
  url: string | null;
  status: string;
  liveDeploymentId: string | null;
  updatedAt: string;
}

/**
 * Operations that need endpoints a service may not have yet (apps, rollback, env variables, app
 * deletion): a 404 for the route itself is said plainly instead of "not found".
 */
async function needsEndpoint<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof ApiError && error.status === 404 && /^No route /.test(error.message)) {
      throw new ApiError(404, 'NOT_SUPPORTED', `this Zepid Deploy service has no ${what} endpoint (${error.message}); it needs a newer version of the service`);
    }
    throw error;
  }
}

function out(io: Io, json: boolean, value: unknown, text: () => string): void {
  io.stdout.write(json ? `${JSON.stringify(value)}\n` : text());
}

export async function status(api: ApiClient, io: Io, id: string, json: boolean): Promise<number> {
  const view = await api.status(id);
  out(io, json, view, () => {
    const lines = [`${view.deploymentId}  ${view.projectId} (${view.environment})  ${view.status}${view.currentStep ? ` · ${view.currentStep} ${view.progress}%` : ''}`];
    if (view.kind !== undefined) {
      const of = view.rollbackOf ? ` of ${view.rollbackOf}` : view.redeployOf ? ` (redeploy of ${view.redeployOf})` : '';
      const who = view.createdBy ? `; started by ${view.createdBy.tokenName ?? view.createdBy.tokenId}` : '';
      lines.push(`kind: ${view.kind}${of}${who}`);
    }
    if (view.url) lines.push(`url: ${view.url}`);
    if (view.error) lines.push(`error: ${view.errorCode ?? ''} ${view.error}`);
    for (const [step, state] of Object.entries(view.steps ?? {})) lines.push(`  ${step.padEnd(9)} ${state.status}${state.error ? `: ${state.error}` : ''}`);
    return `${lines.join('\n')}\n`;
  });
  return view.status === 'failed' || view.status === 'cancelled' ? EXIT.failed : EXIT.ok;
}

async function appsOf(api: ApiClient): Promise<AppView[]> {
  const apps: AppView[] = [];
  let cursor: string | null = null;
  do {
    const page: { apps: AppView[]; nextCursor?: string | null } = await needsEndpoint('apps list (GET /apps)', () =>
      api.request('GET', `/apps?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`),
    );
    apps.push(...page.apps);
    cursor = page.nextCursor ?? null;
  } while (cursor !== null);
  return apps;
}

export async function ls(api: ApiClient, io: Io, json: boolean): Promise<number> {
  const apps = await appsOf(api);
  out(io, json, { apps }, () =>
    apps.length === 0 ? 'no apps\n' : `${apps.map((app) => `${app.appName}  ${app.status}  ${app.url ?? '-'}  ${app.liveDeploymentId ?? '-'}`).join('\n')}\n`,
  );
  return EXIT.ok;
}

/** `logs <deploymentId|app>`: an app means its live deployment (or, while it deploys, the newest). */
async function deploymentOf(api: ApiClient, target: string): Promise<string> {
  if (DEPLOYMENT_ID.test(target)) return target;
  const app = (await appsOf(api)).find((candidate) => candidate.appName === target);
  if (app === undefined) throw new UsageError(`${target} is neither a deployment id (dep_…) nor one of your apps (zepid ls)`);
  if (app.liveDeploymentId === null) throw new UsageError(`${target} has no live deployment`);
  return app.liveDeploymentId;
}

export async function logs(api: ApiClient, io: Io, target: string, options: { follow: boolean; json: boolean; timeoutMs: number }): Promise<number> {
  const id = await deploymentOf(api, target);
  if (!options.follow) {
    const lines = await api.logs(id);
    for (const line of lines) io.stdout.write(options.json ? `${JSON.stringify(line)}\n` : `${line.timestamp} ${formatLine(line).trimStart()}\n`);
    return EXIT.ok;
  }
  const reporter = new ProgressReporter(io, { json: options.json, logs: true });
  try {
    const result = await follow(api, id, (event) => reporter.event(event), Date.now() + options.timeoutMs);
    return finish(io, options.json, result.status, result.timedOut);
  } finally {
    reporter.stop();
  }
}

export async function cancel(api: ApiClient, io: Io, id: string, json: boolean): Promise<number> {
  const answer = await api.request<{ status?: string; message?: string }>('POST', `/deploy/${encodeURIComponent(id)}/cancel`);
  out(io, json, answer, () => `${answer.message ?? `cancel requested for ${id}`}\n`);
  return EXIT.ok;
}

export async function rollback(api: ApiClient, io: Io, id: string, options: { snapshot: boolean; json: boolean }): Promise<number> {
  const answer = await needsEndpoint('rollback (POST /deploy/:id/rollback)', () =>
    api.request<{ deploymentId: string }>('POST', `/deploy/${encodeURIComponent(id)}/rollback`, options.snapshot ? { env: 'snapshot' } : undefined),
  );
  out(io, options.json, answer, () => `rolling back to ${id}: ${answer.deploymentId}\n`);
  return EXIT.ok;
}

/**
 * `zepid redeploy <deploymentId>`: the service builds that deployment's stored source again, as a
 * new deployment with the app's current env values (POST /deploy/:id/redeploy); followed like deploy.
 */
export async function redeploy(api: ApiClient, io: Io, id: string, options: FollowOptions & { logs: boolean }): Promise<number> {
  if (!DEPLOYMENT_ID.test(id)) throw new UsageError(`${id} is not a deployment id (dep_ and 26 characters: zepid status, zepid ls)`);
  const reporter = new ProgressReporter(io, { json: options.json, logs: options.logs });
  const accepted = await needsEndpoint('redeploy (POST /deploy/:id/redeploy)', () =>
    api.request<{ deploymentId: string }>('POST', `/deploy/${encodeURIComponent(id)}/redeploy`, undefined, { 'idempotency-key': randomUUID() }),
  );
  if (options.json) io.stdout.write(`${JSON.stringify({ type: 'accepted', deploymentId: accepted.deploymentId, redeployOf: id })}\n`);
  else reporter.print(`redeploying ${id}: its source is built again → ${accepted.deploymentId}`);
  return followAccepted(api, io, reporter, accepted.deploymentId, options);
}

export async function env(api: ApiClient, io: Io, args: { action: string; project: string; pairs: string[]; environment?: string; json: boolean }): Promise<number> {
  const query = args.environment ? `?environment=${encodeURIComponent(args.environment)}` : '';
  const base = `/projects/${encodeURIComponent(args.project)}/env`;
  const what = 'env variables (/projects/:projectId/env)';
  if (args.action === 'ls') {
    const answer = await needsEndpoint(what, () => api.request<{ variables?: { name: string; updatedAt?: string }[] }>('GET', `${base}${query}`));
    out(io, args.json, answer, () => `${(answer.variables ?? []).map((variable) => variable.name).join('\n')}\n`);
    return EXIT.ok;
  }
  const set: Record<string, string | null> = {};
  for (const pair of args.pairs) {
    if (args.action === 'rm') set[pair] = null;
    else {
      const eq = pair.indexOf('=');
      if (eq <= 0) throw new UsageError(`zepid env set takes KEY=VALUE, got ${JSON.stringify(pair)}`);
      set[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
  }
  if (Object.keys(set).length === 0) throw new UsageError(`zepid env ${args.action} needs at least one ${args.action === 'rm' ? 'NAME' : 'KEY=VALUE'}`);
  const body: Record<string, unknown> = { set };
  if (args.environment) body.environment = args.environment;
  const answer = await needsEndpoint(what, () => api.request<{ deploymentId?: string | null; message?: string }>('PATCH', base, body));
  // The service's message says what happens: a restart without building, a rebuild (build-scoped variable), or nothing yet.
  out(io, args.json, answer, () => `${answer.message ?? `env updated${answer.deploymentId ? `; restarting with ${answer.deploymentId}` : ''}`}\n`);
  return EXIT.ok;
}

export async function rm(api: ApiClient, io: Io, args: { project: string; environment?: string; yes: boolean; json: boolean; confirm: (question: string) => Promise<string> }): Promise<number> {
  if (!args.yes) {
    const answer = await args.confirm(`Delete ${args.project}${args.environment ? ` (${args.environment})` : ' in every environment'}, its deployments, images and env variables? Type the project id to confirm: `);
    if (answer.trim() !== args.project) {
      io.stderr.write('not deleted\n');
      return EXIT.usage;
    }
  }
  const query = args.environment ? `?environment=${encodeURIComponent(args.environment)}` : '';
  const answer = await needsEndpoint('app deletion (DELETE /projects/:projectId)', () => api.request<unknown>('DELETE', `/projects/${encodeURIComponent(args.project)}${query}`));
  out(io, args.json, answer, () => `deleting ${args.project}\n`);
  return EXIT.ok;
}

/** `open <deploymentId|app>`: prints the URL, and opens it in a browser when asked and one is known. */
export async function open(api: ApiClient, io: Io, target: string, launch: boolean): Promise<number> {
  let view: DeploymentStatus | AppView;
  if (DEPLOYMENT_ID.test(target)) view = await api.status(target);
  else {
    const app = (await appsOf(api)).find((candidate) => candidate.appName === target);
    if (app === undefined) throw new UsageError(`${target} is neither a deployment id (dep_…) nor one of your apps (zepid ls)`);
    view = app;
  }
  if (!view.url) {
    io.stderr.write(`${target} has no URL${'status' in view && !TERMINAL.has(view.status) ? ' yet' : ''}\n`);
    return EXIT.failed;
  }
  io.stdout.write(`${view.url}\n`);
  if (launch) {
    const opener = process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? 'explorer' : 'xdg-open';
    spawn(opener, [view.url], { stdio: 'ignore', detached: true }).on('error', () => io.stderr.write(`no ${opener} here: open the URL yourself\n`)).unref();
  }
  return EXIT.ok;
}
