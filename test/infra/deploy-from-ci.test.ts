import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { repoPath } from './repo-files.ts';

// scripts/deploy-from-ci.mjs against a fake API on loopback: what it sends, what it prints, and
// its exit code for each way a deployment can end.

const SCRIPT = repoPath('scripts', 'deploy-from-ci.mjs');
const DEPLOYMENT_ID = 'dep_abcdefghijklmnopqrstuvwxyz';

interface Received {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

interface FakeApi {
  url: string;
  received: Received[];
  close(): Promise<void>;
}

/** Answers POST /deploy with 202, then each status poll with the next of `statuses`. */
async function fakeApi(statuses: Record<string, unknown>[], postStatus = 202, postBody: unknown = { success: true, deploymentId: DEPLOYMENT_ID, status: 'queued' }): Promise<FakeApi> {
  const received: Received[] = [];
  let poll = 0;
  const server: Server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      received.push({ method: request.method ?? '', url: request.url ?? '', headers: request.headers, body: Buffer.concat(chunks).toString('utf8') });
      response.setHeader('content-type', 'application/json');
      if (request.method === 'POST' && request.url === '/deploy') {
        response.statusCode = postStatus;
        response.end(JSON.stringify(postBody));
      } else if (request.method === 'GET' && request.url === `/deploy/${DEPLOYMENT_ID}/status`) {
        const status = statuses[Math.min(poll, statuses.length - 1)];
        poll += 1;
        response.end(JSON.stringify({ deploymentId: DEPLOYMENT_ID, logs: [], ...status }));
      } else {
        response.statusCode = request.url?.endsWith('/cancel') ? 200 : 404;
        response.end('{}');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function run(env: Record<string, string>, args: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [SCRIPT, ...args], {
      // Only what the test gives: no GITHUB_* from the machine running the tests.
      env: { PATH: process.env.PATH ?? '', ZEPID_POLL_SECONDS: '0.1', ZEPID_TIMEOUT_MINUTES: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('scripts/deploy-from-ci.mjs', () => {
  let project: string;
  let api: FakeApi | null = null;

  beforeEach(() => {
    project = mkdtempSync(join(tmpdir(), 'zepid-ci-'));
    mkdirSync(join(project, 'src'));
    mkdirSync(join(project, 'node_modules', 'dep'), { recursive: true });
    mkdirSync(join(project, '.git'));
    mkdirSync(join(project, 'dist'));
    writeFileSync(join(project, 'package.json'), '{"name":"app","scripts":{"start":"node src/index.js"}}');
    writeFileSync(join(project, 'src', 'index.js'), 'console.log("hi")\n');
    writeFileSync(join(project, 'logo.bin'), Buffer.from([0, 255, 1, 254]));
    writeFileSync(join(project, 'node_modules', 'dep', 'index.js'), 'x');
    writeFileSync(join(project, '.git', 'HEAD'), 'ref: refs/heads/main');
    writeFileSync(join(project, 'dist', 'bundle.js'), 'x');
    writeFileSync(join(project, 'debug.log'), 'x');
    writeFileSync(join(project, '.zepidignore'), '# build output\ndist/\n*.log\n');
    symlinkSync('/etc/hostname', join(project, 'outside'));
  });

  afterEach(async () => {
    await api?.close();
    api = null;
    rmSync(project, { recursive: true, force: true });
  });

  const settings = (url: string) => ({
    ZEPID_API_URL: url,
    ZEPID_TOKEN: 'token-of-the-org-0123456789',
    ZEPID_PROJECT_ID: 'my-app',
    ZEPID_ORGANIZATION_ID: 'org_1',
    ZEPID_USER_ID: 'ci-user',
    ZEPID_ENVIRONMENT: 'staging',
    ZEPID_DIRECTORY: project,
  });

  it('sends the project (minus .git, node_modules and .zepidignore matches), follows the steps, exits 0 when completed', async () => {
    api = await fakeApi([
      { status: 'queued', currentStep: null, progress: 0 },
      { status: 'in_progress', currentStep: 'build', progress: 40, logs: ['building'] },
      { status: 'completed', currentStep: null, progress: 100, url: 'https://my-app.example.net' },
    ]);
    const result = await run({ ...settings(api.url), GITHUB_OUTPUT: join(project, 'out.txt') });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('[ 40%] in_progress - build');
    expect(result.stdout).toContain('| building');
    expect(result.stdout).toContain('completed: https://my-app.example.net');
    expect(result.stdout).toContain('skipped outside (symbolic link)');

    const post = api.received.find((request) => request.method === 'POST');
    expect(post?.headers.authorization).toBe('Bearer token-of-the-org-0123456789');
    expect(post?.headers['idempotency-key']).toMatch(/^ci:[0-9a-f-]{36}$/);
    const body = JSON.parse(post?.body ?? '{}') as { projectId: string; organizationId: string; userId: string; environment: string; files: { path: string; content: string; encoding: string }[] };
    expect(body).toMatchObject({ projectId: 'my-app', organizationId: 'org_1', userId: 'ci-user', environment: 'staging' });
    expect(body.files.map((file) => file.path)).toEqual(['.zepidignore', 'logo.bin', 'package.json', 'src/index.js']);
    expect(body.files.every((file) => file.encoding === 'base64')).toBe(true);
    expect(Buffer.from(body.files[1]?.content ?? '', 'base64')).toEqual(Buffer.from([0, 255, 1, 254]));
  });

  it('exits 1 with the error code when the deployment fails', async () => {
    api = await fakeApi([{ status: 'failed', currentStep: 'build', progress: 40, errorCode: 'BUILD_FAILED', error: 'npm run build exited with 1' }]);
    const result = await run(settings(api.url));
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('BUILD_FAILED: npm run build exited with 1');
  });

  it('exits 1 when the API refuses the deployment, naming the fields', async () => {
    api = await fakeApi([], 400, { success: false, error: 'VALIDATION_ERROR', message: 'Invalid body', details: [{ field: 'projectId', message: 'bad' }] });
    const result = await run(settings(api.url));
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('VALIDATION_ERROR');
    expect(result.stderr).toContain('projectId: bad');
  });

  it('refuses a file over 5 MiB before sending anything (exit 2)', async () => {
    api = await fakeApi([]);
    writeFileSync(join(project, 'big.bin'), Buffer.alloc(5 * 1024 * 1024 + 1));
    const result = await run(settings(api.url));
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('big.bin: 5.0 MiB, over the 5.0 MiB per-file limit');
    expect(api.received).toEqual([]);
  });

  it('refuses incomplete settings (exit 2)', async () => {
    const result = await run({ ZEPID_DIRECTORY: project, ZEPID_API_URL: 'http://example.com' });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('ZEPID_TOKEN is required');
    expect(result.stderr).toContain('ZEPID_PROJECT_ID is required');
    expect(result.stderr).toContain('ZEPID_API_URL must be https');
  });
});
