import { randomUUID } from 'node:crypto';
import { appendFile } from 'node:fs/promises';
import type { ApiClient, DeploymentStatus } from '../api.ts';
import { ApiError, EXIT, UsageError } from '../errors.ts';
import type { SourceFile } from '../files.ts';
import { defaultProjectId, fileContent, walkProject } from '../files.ts';
import { follow } from '../follow.ts';
import type { Io } from '../output.ts';
import { ProgressReporter } from '../output.ts';

export interface DeployOptions {
  dir: string;
  project?: string;
  environment?: string;
  envVars: string[];
  user: string;
  detach: boolean;
  json: boolean;
  /** Milliseconds to follow before giving up with exit 124 (the deployment goes on). */
  timeoutMs: number;
  logs: boolean;
  /** SIGINT/SIGTERM while following cancels the deployment (a CI job cancelled or timed out), instead of leaving it running. */
  cancelOnAbort: boolean;
  /** GitHub Actions' step-output file (GITHUB_OUTPUT): deployment-id and url are appended to it. */
  githubOutput?: string;
}

interface FileEntry {
  path: string;
  sha256: string;
  content?: string;
  encoding?: 'utf8' | 'base64';
}

interface Accepted {
  deploymentId: string;
  status: string;
  statusUrl: string;
}

export function parseEnvVars(values: readonly string[]): Record<string, string> | undefined {
  if (values.length === 0) return undefined;
  const vars: Record<string, string> = {};
  for (const pair of values) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--env-var takes KEY=VALUE, got ${JSON.stringify(pair)}`);
    vars[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return vars;
}

/**
 * Sends every file by its SHA-256 first; the service answers SOURCE_FILES_MISSING with the ones it has
 * not stored for this organization, and only those are sent again with their content. An unchanged
 * redeploy therefore uploads no file content at all.
 */
async function submit(api: ApiClient, base: Record<string, unknown>, files: readonly SourceFile[]): Promise<{ accepted: Accepted; uploaded: number }> {
  const entries: FileEntry[] = files.map((file) => ({ path: file.path, sha256: file.sha256 }));
  const byPath = new Map(files.map((file) => [file.path, file]));
  let uploaded = 0;
  // Twice at most: a file stored between the two requests by another deploy is fine; one removed by
  // cleanup between them (unused for 24 h) is sent on the second round.
  for (let round = 0; ; round++) {
    try {
      const accepted = await api.request<Accepted>('POST', '/deploy', { ...base, files: entries }, { 'idempotency-key': randomUUID() });
      return { accepted, uploaded };
    } catch (error) {
      if (!(error instanceof ApiError) || error.code !== 'SOURCE_FILES_MISSING' || round >= 2) throw error;
      const missing = (error.details as { missing?: { path: string }[] } | undefined)?.missing ?? [];
      if (missing.length === 0) throw error;
      for (const { path } of missing) {
        const file = byPath.get(path);
        const entry = entries.find((candidate) => candidate.path === path);
        if (file === undefined || entry === undefined) throw error;
        Object.assign(entry, await fileContent(file));
        uploaded += file.size;
      }
    }
  }
}

export async function deploy(api: ApiClient, io: Io, options: DeployOptions): Promise<number> {
  const { files } = await walkProject(options.dir);
  const projectId = options.project ?? (await defaultProjectId(options.dir));
  // The token names the organization; GET /status says which (and proves the token before any upload).
  const { organizationId } = await api.request<{ organizationId: string }>('GET', '/status');
  const base: Record<string, unknown> = { projectId, organizationId, userId: options.user };
  if (options.environment !== undefined) base.environment = options.environment;
  const envVariables = parseEnvVars(options.envVars);
  if (envVariables !== undefined) base.envVariables = envVariables;

  const reporter = new ProgressReporter(io, { json: options.json, logs: options.logs });
  const { accepted, uploaded } = await submit(api, base, files);
  const summary = { deploymentId: accepted.deploymentId, projectId, files: files.length, uploadedBytes: uploaded, requestBytes: api.sentBytes };
  if (options.json) io.stdout.write(`${JSON.stringify({ type: 'accepted', ...summary })}\n`);
  else reporter.print(`deploying ${projectId}: ${files.length} files, ${uploaded === 0 ? 'no file content uploaded (all stored before)' : `${uploaded} bytes of file content uploaded`} → ${accepted.deploymentId}`);

  return followAccepted(api, io, reporter, accepted.deploymentId, options);
}

export type FollowOptions = Pick<DeployOptions, 'detach' | 'json' | 'timeoutMs' | 'cancelOnAbort' | 'githubOutput'>;

/**
 * After a deployment was accepted (`deploy`, `redeploy`): prints its id and returns with --detach,
 * else follows it to its end and returns the exit code (0 live, 1 failed or cancelled, 124 timed out).
 */
export async function followAccepted(api: ApiClient, io: Io, reporter: ProgressReporter, id: string, options: FollowOptions): Promise<number> {
  if (options.githubOutput) await appendFile(options.githubOutput, `deployment-id=${id}\n`);
  if (options.detach) {
    if (!options.json) io.stdout.write(`${id}\n`);
    return EXIT.ok;
  }

  const stopOnSignal = options.cancelOnAbort ? cancelOnSignal(api, io, id) : () => undefined;
  let result: { status: DeploymentStatus; timedOut: boolean };
  try {
    result = await follow(api, id, (event) => reporter.event(event), Date.now() + options.timeoutMs);
  } finally {
    stopOnSignal();
    reporter.stop();
  }
  if (options.githubOutput && result.status.url) await appendFile(options.githubOutput, `url=${result.status.url}\n`);
  return finish(io, options.json, result.status, result.timedOut);
}

/**
 * Until the returned function is called, SIGINT or SIGTERM cancels the deployment and ends the CLI
 * with 130/143. What a CI runner sends when a job is cancelled or runs out of time.
 */
function cancelOnSignal(api: ApiClient, io: Io, id: string): () => void {
  const handlers = (['SIGINT', 'SIGTERM'] as const).map((signal) => {
    const handler = (): void => {
      io.stderr.write(`${signal}: cancelling ${id}\n`);
      api
        .request('POST', `/deploy/${encodeURIComponent(id)}/cancel`)
        .catch((error: unknown) => io.stderr.write(`could not cancel ${id}: ${(error as Error).message}\n`))
        .finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
    };
    process.once(signal, handler);
    return [signal, handler] as const;
  });
  return () => {
    for (const [signal, handler] of handlers) process.off(signal, handler);
  };
}

/** The last word of `deploy` and `logs -f`: the URL on success, the error otherwise, and the exit code. */
export function finish(io: Io, json: boolean, status: DeploymentStatus, timedOut: boolean): number {
  const code = timedOut ? EXIT.timeout : status.status === 'completed' ? EXIT.ok : EXIT.failed;
  if (json) {
    io.stdout.write(`${JSON.stringify({ type: 'result', timedOut, ...status })}\n`);
    return code;
  }
  if (timedOut) {
    io.stderr.write(`timed out following ${status.deploymentId} (${status.status}${status.currentStep ? `, ${status.currentStep}` : ''}); it goes on: zepid status ${status.deploymentId}\n`);
  } else if (status.status === 'completed') {
    io.stderr.write(`✓ ${status.deploymentId} is live\n`);
    io.stdout.write(`${status.url ?? ''}\n`);
  } else {
    io.stderr.write(`✗ ${status.deploymentId} ${status.status}${status.errorCode ? ` (${status.errorCode})` : ''}${status.error ? `: ${status.error}` : ''}\n`);
  }
  return code;
}
