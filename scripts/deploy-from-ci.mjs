#!/usr/bin/env node
/* global AbortSignal, Buffer, console, fetch, process, setTimeout, URL */
// Deploys a directory through the Zepid Deploy API and waits for the result: packs the files
// (base64), POSTs /deploy, polls GET /deploy/:id/status printing the step and progress, and exits
// 0 only when the deployment completed. Plain JavaScript, no dependencies: copy it into any
// repository and run it with Node 18 or later (.github/workflows/zepid-deploy.yml does).
//
// Settings (environment variables):
//   ZEPID_API_URL          base URL of the API, e.g. https://deploy.example.com      (required)
//   ZEPID_TOKEN            API token of the organization                               (required)
//   ZEPID_PROJECT_ID       project id                                                  (required)
//   ZEPID_ORGANIZATION_ID  organization id, the token's                                (required)
//   ZEPID_USER_ID          who asked; GITHUB_ACTOR, else "ci"
//   ZEPID_ENVIRONMENT      development, staging or production; production by default
//   ZEPID_DIRECTORY        directory to deploy; "." by default
//   ZEPID_TIMEOUT_MINUTES  how long to wait for the result (1-100); 30 by default
//   ZEPID_POLL_SECONDS     seconds between status checks; 5 by default
//   ZEPID_CANCEL_ON_ABORT  "false" keeps the deployment running when this job is cancelled or times out
// `--dry-run` lists what would be sent and stops before calling the API.
//
// Exit codes: 0 completed; 1 failed, cancelled, timed out or refused by the API; 2 bad settings or
// files over the limits (nothing was sent).
import { createHash, randomUUID } from 'node:crypto';
import { appendFileSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';

// The API's limits (packages/core/src/limits.ts); checked here so a too-big upload fails in
// seconds with the file named, instead of after the upload.
const LIMITS = {
  files: 2000,
  fileBytes: 5 * 1024 * 1024,
  sourceBytes: 12 * 1024 * 1024,
  bodyBytes: 16 * 1024 * 1024,
  pathLength: 512,
  pathSegmentLength: 255,
  pathDepth: 32,
};
const ALWAYS_SKIPPED = new Set(['.git', 'node_modules']);
const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
const ENVIRONMENTS = new Set(['development', 'staging', 'production']);

class UsageError extends Error {}

// --------------------------------------------------------------------------------------------
// Settings
// --------------------------------------------------------------------------------------------

function readSettings(env, argv) {
  const problems = [];
  const required = (name) => {
    const value = env[name]?.trim();
    if (!value) problems.push(`${name} is required`);
    return value ?? '';
  };
  const number = (name, fallback, min, max) => {
    const raw = env[name]?.trim();
    if (!raw) return fallback;
    const value = Number(raw);
    if (!Number.isFinite(value) || value < min || value > max) problems.push(`${name} must be a number from ${min} to ${max} (got ${JSON.stringify(raw)})`);
    return value;
  };
  const dryRun = argv.includes('--dry-run');
  const settings = {
    apiUrl: dryRun ? env.ZEPID_API_URL?.trim() ?? '' : required('ZEPID_API_URL'),
    token: dryRun ? '' : required('ZEPID_TOKEN'),
    projectId: required('ZEPID_PROJECT_ID'),
    organizationId: required('ZEPID_ORGANIZATION_ID'),
    userId: env.ZEPID_USER_ID?.trim() || env.GITHUB_ACTOR?.trim() || 'ci',
    environment: env.ZEPID_ENVIRONMENT?.trim() || 'production',
    directory: resolve(env.ZEPID_DIRECTORY?.trim() || '.'),
    timeoutMs: number('ZEPID_TIMEOUT_MINUTES', 30, 1, 100) * 60_000,
    pollMs: number('ZEPID_POLL_SECONDS', 5, 0.1, 300) * 1000,
    cancelOnAbort: env.ZEPID_CANCEL_ON_ABORT?.trim().toLowerCase() !== 'false',
    dryRun,
  };
  if (!ENVIRONMENTS.has(settings.environment)) problems.push(`ZEPID_ENVIRONMENT must be development, staging or production (got ${JSON.stringify(settings.environment)})`);
  if (settings.apiUrl) {
    try {
      const url = new URL(settings.apiUrl);
      if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error('not http(s)');
      // Tokens travel in a header: plain http only to this machine.
      if (url.protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(url.hostname)) problems.push('ZEPID_API_URL must be https (http only for localhost)');
      settings.apiUrl = url.href.replace(/\/+$/, '');
    } catch {
      problems.push(`ZEPID_API_URL is not a URL (got ${JSON.stringify(settings.apiUrl)})`);
    }
  }
  if (problems.length > 0) throw new UsageError(problems.join('\n'));
  return settings;
}

// --------------------------------------------------------------------------------------------
// Packing
// --------------------------------------------------------------------------------------------

/** A .zepidignore pattern (gitignore syntax: *, **, ?, leading / anchors, trailing / for directories, ! re-includes). */
function compilePattern(line) {
  let pattern = line;
  const negate = pattern.startsWith('!');
  if (negate) pattern = pattern.slice(1);
  const directoryOnly = pattern.endsWith('/');
  if (directoryOnly) pattern = pattern.slice(0, -1);
  // A pattern with a slash (other than a trailing one) is relative to the root; otherwise it
  // matches a name at any depth.
  const anchored = pattern.includes('/');
  if (pattern.startsWith('/')) pattern = pattern.slice(1);
  let source = '';
  for (let i = 0; i < pattern.length; i += 1) {
    const char = pattern[i];
    if (char === '*' && pattern[i + 1] === '*') {
      const slashAfter = pattern[i + 2] === '/';
      source += slashAfter ? '(?:.*/)?' : '.*';
      i += slashAfter ? 2 : 1;
    } else if (char === '*') source += '[^/]*';
    else if (char === '?') source += '[^/]';
    else source += char.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  const regex = new RegExp(anchored ? `^${source}$` : `(?:^|/)${source}$`);
  return { negate, directoryOnly, regex };
}

function readIgnoreRules(root) {
  let text;
  try {
    text = readFileSync(join(root, '.zepidignore'), 'utf8');
  } catch {
    return [];
  }
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map(compilePattern);
}

/** gitignore semantics: the last matching rule decides. */
function isIgnored(rules, path, isDirectory) {
  let ignored = false;
  for (const rule of rules) {
    if (rule.directoryOnly && !isDirectory) continue;
    if (rule.regex.test(path)) ignored = !rule.negate;
  }
  return ignored;
}

// Control and invisible format characters, which the API refuses in paths.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\p{Cf}]/u;

function pathProblem(path) {
  if (path.length > LIMITS.pathLength) return `path longer than ${LIMITS.pathLength} characters`;
  if (CONTROL.test(path)) return 'control character in the path';
  if (path.includes('\\')) return 'backslash in the path';
  const segments = path.split('/');
  if (segments.length > LIMITS.pathDepth) return `deeper than ${LIMITS.pathDepth} directories`;
  if (segments.some((segment) => segment.length > LIMITS.pathSegmentLength)) return `a path segment longer than ${LIMITS.pathSegmentLength} characters`;
  return null;
}

/** Every file to send, in a stable order, or every reason it cannot be sent. */
function collectFiles(root) {
  const rules = readIgnoreRules(root);
  const files = [];
  const problems = [];
  const skipped = [];
  let total = 0;
  const walk = (directory) => {
    const entries = readdirSync(directory, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      const absolute = join(directory, entry.name);
      const path = relative(root, absolute).split(sep).join('/');
      if (entry.isDirectory()) {
        if (ALWAYS_SKIPPED.has(entry.name) || isIgnored(rules, path, true)) continue;
        walk(absolute);
        continue;
      }
      if (isIgnored(rules, path, false)) continue;
      // Links could point outside the project; other special files have no content to send.
      if (!entry.isFile()) {
        skipped.push(`${path} (${entry.isSymbolicLink() ? 'symbolic link' : 'not a regular file'})`);
        continue;
      }
      const size = lstatSync(absolute).size;
      const problem = pathProblem(path) ?? (size > LIMITS.fileBytes ? `${formatBytes(size)}, over the ${formatBytes(LIMITS.fileBytes)} per-file limit` : null);
      if (problem !== null) {
        problems.push(`${path}: ${problem}`);
        continue;
      }
      total += size;
      files.push({ path, absolute, size });
    }
  };
  walk(root);
  if (files.length + problems.length > LIMITS.files) problems.push(`${files.length + problems.length} files; at most ${LIMITS.files} may be sent (list the rest in .zepidignore)`);
  if (total > LIMITS.sourceBytes) problems.push(`${formatBytes(total)} in all; at most ${formatBytes(LIMITS.sourceBytes)} may be sent (list large files in .zepidignore)`);
  if (files.length === 0 && problems.length === 0) problems.push('no files to send');
  return { files, problems, skipped, total };
}

function formatBytes(bytes) {
  if (bytes >= 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${bytes} B`;
}

// --------------------------------------------------------------------------------------------
// API
// --------------------------------------------------------------------------------------------

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** Transient answers worth another try: the network, 429, 5xx. */
function isTransient(status) {
  return status === undefined || status === 408 || status === 429 || status >= 500;
}

function retryAfterMs(response, fallbackMs) {
  const header = response?.headers.get('retry-after');
  const seconds = header === null || header === undefined ? Number.NaN : Number(header);
  return Number.isFinite(seconds) && seconds >= 0 ? Math.min(seconds * 1000, 60_000) : fallbackMs;
}

async function call(settings, method, path, body, { attempts = 5, headers = {} } = {}) {
  let delay = 1000;
  for (let attempt = 1; ; attempt += 1) {
    let response;
    let error;
    try {
      response = await fetch(`${settings.apiUrl}${path}`, {
        method,
        headers: { authorization: `Bearer ${settings.token}`, accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
        body,
        signal: AbortSignal.timeout(120_000),
      });
    } catch (caught) {
      error = caught;
    }
    const status = response?.status;
    if (response !== undefined && !isTransient(status)) {
      const text = await response.text();
      let json = null;
      try {
        json = JSON.parse(text);
      } catch {
        // Not JSON (a proxy's error page): reported by status below.
      }
      return { status, json, text };
    }
    if (attempt >= attempts) {
      const reason = response === undefined ? error?.cause?.message ?? error?.message ?? 'no answer' : `HTTP ${status}`;
      throw new Error(`${method} ${path}: ${reason} after ${attempts} attempts`);
    }
    await response?.body?.cancel();
    const wait = retryAfterMs(response, delay);
    console.log(`  ${method} ${path}: ${response === undefined ? 'no answer' : `HTTP ${status}`}; retrying in ${Math.round(wait / 1000)} s`);
    await sleep(wait);
    delay = Math.min(delay * 2, 30_000);
  }
}

function describeError(result) {
  const json = result.json;
  if (json && typeof json === 'object') {
    const details = Array.isArray(json.details) ? json.details.slice(0, 10).map((d) => `\n    ${d.field ?? ''}: ${d.message ?? JSON.stringify(d)}`).join('') : '';
    return `HTTP ${result.status} ${json.error ?? ''}: ${json.message ?? ''}${details}`;
  }
  return `HTTP ${result.status}: ${result.text.slice(0, 300)}`;
}

/** A key that is the same when this very job retries, and new for a new run or attempt. */
function idempotencyKey(env, settings) {
  const parts = env.GITHUB_RUN_ID
    ? ['github', env.GITHUB_REPOSITORY, env.GITHUB_RUN_ID, env.GITHUB_RUN_ATTEMPT, env.GITHUB_JOB, settings.projectId, settings.environment]
    : ['ci', randomUUID()];
  const key = parts.join(':');
  return key.length <= 255 ? key : `sha256:${createHash('sha256').update(key).digest('hex')}`;
}

function writeGitHubOutputs(env, values) {
  if (env.GITHUB_OUTPUT) appendFileSync(env.GITHUB_OUTPUT, Object.entries(values).map(([k, v]) => `${k}=${v}\n`).join(''));
}

function writeSummary(env, markdown) {
  if (env.GITHUB_STEP_SUMMARY) appendFileSync(env.GITHUB_STEP_SUMMARY, `${markdown}\n`);
}

/** Prints the log lines not printed yet: status returns the last lines, which overlap between polls. */
function newLogLines(previous, current) {
  if (previous.length === 0) return current;
  const last = previous[previous.length - 1];
  const at = current.lastIndexOf(last);
  return at === -1 ? current : current.slice(at + 1);
}

// --------------------------------------------------------------------------------------------
// Main
// --------------------------------------------------------------------------------------------

async function main(env, argv) {
  const settings = readSettings(env, argv);
  const { files, problems, skipped, total } = collectFiles(settings.directory);
  for (const line of skipped) console.log(`skipped ${line}`);
  if (problems.length > 0) throw new UsageError(`Cannot deploy ${settings.directory}:\n  ${problems.slice(0, 50).join('\n  ')}`);
  console.log(`${files.length} files, ${formatBytes(total)} from ${settings.directory}`);
  if (settings.dryRun) {
    for (const file of files) console.log(`  ${file.path} (${formatBytes(file.size)})`);
    return 0;
  }

  const body = JSON.stringify({
    projectId: settings.projectId,
    organizationId: settings.organizationId,
    userId: settings.userId,
    environment: settings.environment,
    files: files.map((file) => ({ path: file.path, content: readFileSync(file.absolute).toString('base64'), encoding: 'base64' })),
  });
  if (Buffer.byteLength(body) > LIMITS.bodyBytes) {
    throw new UsageError(`The request would be ${formatBytes(Buffer.byteLength(body))}; the API accepts ${formatBytes(LIMITS.bodyBytes)} (base64 adds a third): list large files in .zepidignore`);
  }

  const created = await call(settings, 'POST', '/deploy', body, { headers: { 'idempotency-key': idempotencyKey(env, settings) } });
  if (created.status !== 202 && created.status !== 200) {
    console.error(`The API refused the deployment: ${describeError(created)}`);
    return 1;
  }
  const deploymentId = created.json?.deploymentId;
  if (typeof deploymentId !== 'string') {
    console.error(`The API answered ${created.status} without a deploymentId`);
    return 1;
  }
  console.log(`deployment ${deploymentId} queued (${settings.environment})`);
  writeGitHubOutputs(env, { 'deployment-id': deploymentId });

  const statusPath = `/deploy/${encodeURIComponent(deploymentId)}/status`;
  let finished = false;
  const cancel = async (why) => {
    if (finished || !settings.cancelOnAbort) return;
    console.log(`${why}: cancelling ${deploymentId} (ZEPID_CANCEL_ON_ABORT=false keeps it running)`);
    await call(settings, 'POST', `/deploy/${encodeURIComponent(deploymentId)}/cancel`, '{}', { attempts: 2 }).catch(() => undefined);
  };
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => {
      void cancel(`${signal} received`).finally(() => process.exit(1));
    });
  }

  const deadline = Date.now() + settings.timeoutMs;
  let shown = '';
  let logs = [];
  for (;;) {
    const result = await call(settings, 'GET', statusPath, undefined, { attempts: 8 });
    if (result.status !== 200 || result.json === null) {
      console.error(`Reading the status failed: ${describeError(result)}`);
      return 1;
    }
    const status = result.json;
    for (const line of newLogLines(logs, Array.isArray(status.logs) ? status.logs : [])) console.log(`    | ${line}`);
    if (Array.isArray(status.logs)) logs = status.logs;
    const line = `[${String(status.progress ?? 0).padStart(3)}%] ${status.status}${status.currentStep ? ` - ${status.currentStep}` : ''}`;
    if (line !== shown) {
      console.log(line);
      shown = line;
    }
    if (TERMINAL.has(status.status)) {
      finished = true;
      if (status.status === 'completed') {
        console.log(`completed: ${status.url ?? '(no URL)'}`);
        writeGitHubOutputs(env, { url: status.url ?? '' });
        writeSummary(env, `### Deployed ${settings.projectId} (${settings.environment})\n\n${status.url ?? ''}\n\nDeployment \`${deploymentId}\``);
        return 0;
      }
      const reason = status.status === 'failed' ? `${status.errorCode ?? 'FAILED'}: ${status.error ?? 'no message'}` : 'cancelled';
      console.error(`deployment ${deploymentId} ${status.status}: ${reason}`);
      writeSummary(env, `### Deployment of ${settings.projectId} ${status.status}\n\n${reason}\n\nDeployment \`${deploymentId}\``);
      return 1;
    }
    if (Date.now() >= deadline) {
      console.error(`deployment ${deploymentId} is still ${status.status} after ${settings.timeoutMs / 60_000} minutes`);
      await cancel('timed out');
      return 1;
    }
    await sleep(settings.pollMs);
  }
}

main(process.env, process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(error instanceof UsageError ? error.message : `deploy-from-ci: ${error.message}`);
    process.exit(error instanceof UsageError ? 2 : 1);
  },
);
