import { spawn } from 'node:child_process';
import { chmod, copyFile, link, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Service } from './support.ts';
import { freePort, getApp, startLocalService, waitFor } from './support.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const isRoot = process.getuid?.() === 0;
const SECRET = 'org-b-very-secret-42';
const TOKENS = { orgA: 'org-a-token-0123456789abcdef', orgB: 'org-b-token-0123456789abcdef' };
// A range of its own: another service on this machine (a colleague's test run) hands out the default one.
const FIRST_UID = 1_500_000_000 + Math.floor(Math.random() * 1000) * 1000;
const inRange = (uid: number) => uid >= FIRST_UID && uid < FIRST_UID + 1000;

interface Status {
  status: string;
  url: string | null;
  error: string | null;
  errorCode: string | null;
  logs: string[];
}

interface Found {
  pid: number;
  uid: number;
  listed: number[];
  environ: number[];
  cmdline: number[];
  cwd: number[];
  signalled: number[];
  needleFound: boolean;
  otherUids: (number | null)[];
  verdict: string;
}

/** Processes whose environment holds `text` (the test runs as root and may read every one), with their uid. */
async function processesHolding(text: string): Promise<{ pid: number; uid: number }[]> {
  const found: { pid: number; uid: number }[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const environ = await readFile(`/proc/${name}/environ`, 'latin1').catch(() => '');
    if (!environ.includes(text)) continue;
    const status = await readFile(`/proc/${name}/status`, 'utf8').catch(() => '');
    found.push({ pid: Number(name), uid: Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]) });
  }
  return found;
}

/**
 * Issue 15: tenants of one local service cannot see or signal each other. Two organizations deploy
 * through a started service (npm start, as root like CI): org B's app holds a secret env value, org
 * A's app and org A's build walk /proc and try every other process's environ, cmdline, cwd/ and
 * kill(pid, 0), and find nothing of org B. A build that allocates past the memory limit fails with
 * a message naming the limit while the other apps keep answering.
 */
describe.runIf(isRoot)('local tenants are isolated from each other (uid isolation, as root)', () => {
  let dataDir: string;
  let nodeDir: string;
  let service: Service;
  let api: string;
  const bPids: number[] = [];
  let bUid = -1;
  let bUrl = '';
  let aUrl = '';
  const needle = Buffer.from(SECRET).toString('base64');

  const call = async <T>(org: keyof typeof TOKENS, method: string, path: string, body?: unknown): Promise<{ status: number; json: T }> => {
    const response = await fetch(`${api}${path}`, {
      method,
      headers: { authorization: `Bearer ${TOKENS[org]}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: response.status, json: (await response.json()) as T };
  };
  const deployAndSettle = async (org: keyof typeof TOKENS, body: Record<string, unknown>): Promise<Status & { id: string }> => {
    const accepted = await call<{ deploymentId: string }>(org, 'POST', '/deploy', { organizationId: org, userId: 'tester', ...body });
    expect(accepted.status).toBe(202);
    const id = accepted.json.deploymentId;
    let last: Status | null = null;
    await waitFor(
      `deployment ${id} to finish`,
      async () => {
        last = (await call<Status>(org, 'GET', `/deploy/${id}/status`)).json;
        return ['completed', 'failed', 'cancelled'].includes(last.status);
      },
      90_000,
    );
    return { ...(last as unknown as Status), id };
  };
  const probeFile = async () => ({ path: 'probe.mjs', content: await readFile(join(root, 'test/e2e/fixtures/tenant-probe.mjs'), 'utf8') });

  beforeAll(async () => {
    // The worker's node lives under /root (0700 here): give tenants a node they can run, as a link
    // (or copy) in a directory anyone may enter. What the builder does about its own node is not this test's business.
    nodeDir = await mkdtemp(join(tmpdir(), 'zepid-node-'));
    await chmod(nodeDir, 0o755);
    await link(process.execPath, join(nodeDir, 'node')).catch(() => copyFile(process.execPath, join(nodeDir, 'node')));
    await chmod(join(nodeDir, 'node'), 0o755);
    ({ service, api, dataDir } = await startLocalService({
      dataDirPrefix: 'zepid-tenants-',
      env: {
        DEPLOY_API_TOKENS: `orgA:${TOKENS.orgA},orgB:${TOKENS.orgB}`,
        // Node reserves ~1.5 GiB of address space of its own: 2 GiB leaves it a few hundred MiB.
        LOCAL_LIMIT_MEMORY_MB: '2048',
        LOCAL_UID_RANGE: `${FIRST_UID}-${FIRST_UID + 999}`,
      },
      timeoutMs: 60_000,
    }));
  }, 90_000);

  afterAll(async () => {
    await service.stop();
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
    await rm(nodeDir, { recursive: true, force: true });
  });

  it("org B's app runs as its own uid, holding the secret in its environment; its image is its own", async () => {
    const status = await deployAndSettle('orgB', {
      projectId: 'billing',
      envVariables: { NODE: join(nodeDir, 'node'), DB_PASSWORD: SECRET },
      startCommand: '"$NODE" server.js',
      files: [{ path: 'server.js', content: "require('node:http').createServer((q, r) => r.end('org B ok')).listen(Number(process.env.PORT), '127.0.0.1');\n" }],
    });
    expect(status.status, status.logs.join('\n')).toBe('completed');
    bUrl = status.url ?? '';
    expect((await getApp(bUrl)).body).toBe('org B ok');
    const holders = await processesHolding(SECRET);
    expect(holders.length).toBeGreaterThan(0);
    bPids.push(...holders.map((holder) => holder.pid));
    bUid = holders[0]?.uid ?? -1;
    expect(new Set(holders.map((holder) => holder.uid))).toEqual(new Set([bUid]));
    expect(inRange(bUid), `uid ${bUid}`).toBe(true);
    const image = await stat(join(dataDir, 'images', status.id));
    expect({ uid: image.uid, mode: (image.mode & 0o777).toString(8) }).toEqual({ uid: bUid, mode: '750' });
  });

  it("a build of org A, running while org B's app runs, finds nothing of org B; nor does org A's app, and it cannot signal org B", async () => {
    expect(bPids.length).toBeGreaterThan(0);
    const status = await deployAndSettle('orgA', {
      projectId: 'curious',
      envVariables: { NODE: join(nodeDir, 'node'), B_PIDS: bPids.join(',') },
      // The build probes, writes found.json into its output (the image) and prints it; the app serves it.
      buildCommand: `"$NODE" probe.mjs build "$B_PIDS" '${needle}'`,
      startCommand: '"$NODE" probe.mjs serve',
      files: [await probeFile()],
    });
    expect(status.status, status.logs.join('\n')).toBe('completed');
    aUrl = status.url ?? '';
    const fromBuild = JSON.parse((await getApp(`${aUrl}found`)).body) as Found;
    const fromApp = JSON.parse((await getApp(`${aUrl}probe?pids=${bPids.join(',')}&needle=${encodeURIComponent(needle)}`)).body) as Found;
    console.log(`org A's build: ${fromBuild.verdict}\norg A's app: ${fromApp.verdict}`);
    for (const found of [fromBuild, fromApp]) {
      const ofB = (pids: number[]) => pids.filter((pid) => bPids.includes(pid));
      expect({ listed: ofB(found.listed), environ: ofB(found.environ), cmdline: ofB(found.cmdline), cwd: ofB(found.cwd), signalled: ofB(found.signalled) }).toEqual({
        listed: [],
        environ: [],
        cmdline: [],
        cwd: [],
        signalled: [],
      });
      expect(found.needleFound).toBe(false);
      expect(found.verdict).toMatch(/^found nothing of any other tenant/);
      // Its own processes it does reach (the probe works), as its own uid: not org B's, not root.
      expect(found.environ.length + found.cmdline.length).toBeGreaterThan(0);
      expect(found.uid).not.toBe(bUid);
      expect(inRange(found.uid), `uid ${found.uid}`).toBe(true);
    }
    // The build and the app of one app share its uid; the build's log says what it found.
    expect(fromBuild.uid).toBe(fromApp.uid);
    const log = await (await fetch(`${api}/deploy/${status.id}/logs`, { headers: { authorization: `Bearer ${TOKENS.orgA}`, accept: 'text/plain' } })).text();
    expect(log).toContain('probe from the build: {');
    expect(log).not.toContain(SECRET);
  });

  it("another environment of org A's project runs the reused image as its own uid, through the project's group", async () => {
    const aDevUid = (JSON.parse((await getApp(`${aUrl}probe`)).body) as Found).uid;
    const status = await deployAndSettle('orgA', {
      projectId: 'curious',
      environment: 'production',
      envVariables: { NODE: join(nodeDir, 'node'), B_PIDS: bPids.join(',') },
      buildCommand: `"$NODE" probe.mjs build "$B_PIDS" '${needle}'`,
      startCommand: '"$NODE" probe.mjs serve',
      files: [await probeFile()],
    });
    expect(status.status, status.logs.join('\n')).toBe('completed');
    expect(status.logs.join('\n')).toContain('reusing the image built by');
    const production = JSON.parse((await getApp(`${status.url ?? ''}probe`)).body) as Found;
    expect(production.uid).not.toBe(aDevUid);
    expect(production.verdict).toMatch(/^found nothing of any other tenant/);
    // found.json was written by the development build, in an image only the project's group may read.
    expect((JSON.parse((await getApp(`${status.url ?? ''}found`)).body) as Found).uid).toBe(aDevUid);
  });

  it('a build allocating beyond the memory limit fails with a message naming it, and the other apps keep answering', async () => {
    const status = await deployAndSettle('orgA', {
      projectId: 'hungry',
      envVariables: { NODE: join(nodeDir, 'node') },
      // allocUnsafe leaves pages untouched: were there no limit, this would cost address space, not RAM.
      buildCommand: '"$NODE" -e "const kept = []; for (let mib = 256; mib <= 8192; mib += 256) { kept.push(Buffer.allocUnsafe(256 * 1024 * 1024)); console.log(\'allocated \' + mib + \' MiB\'); }"',
      startCommand: '"$NODE" -e "0"',
      files: [{ path: 'README.md', content: 'hungry\n' }],
    });
    expect(status.status).toBe('failed');
    expect(status.errorCode).toBe('BUILD_FAILED');
    expect(status.error).toContain('ran into the memory limit (LOCAL_LIMIT_MEMORY_MB=2048');
    expect((await getApp(bUrl)).body).toBe('org B ok');
    expect((await getApp(aUrl)).body).toBe('probe ready');
  });
});

/** Where the worker cannot switch uids, the service refuses several organizations unless told on purpose. */
describe('several organizations without uid isolation', () => {
  const runApi = async (env: Record<string, string>): Promise<{ code: number | null; output: string; listening: boolean }> => {
    const dataDir = await mkdtemp(join(tmpdir(), 'zepid-single-tenant-'));
    const port = await freePort();
    const child = spawn(process.execPath, [join(root, 'apps/api/src/server.ts')], {
      cwd: root,
      env: { ...process.env, DATA_DIR: dataDir, PORT: String(port), LOG_LEVEL: 'warn', DEPLOY_API_TOKENS: `orgA:${TOKENS.orgA},orgB:${TOKENS.orgB}`, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    let listening = false;
    try {
      await waitFor('the API to exit or answer', async () => child.exitCode !== null || (listening = (await fetch(`http://127.0.0.1:${port}/health/live`).catch(() => null))?.ok === true), 30_000);
    } finally {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      await rm(dataDir, { recursive: true, force: true });
    }
    return { code: listening ? null : child.exitCode, output, listening };
  };

  it('refuses to start with two organizations, naming LOCAL_SINGLE_TENANT; starts when it is false', async () => {
    const refused = await runApi({ LOCAL_BUILD_ISOLATION: 'none' });
    expect(refused.listening).toBe(false);
    expect(refused.code).toBe(78);
    expect(refused.output).toContain('LOCAL_SINGLE_TENANT: DEPLOY_API_TOKENS names 2 organizations, but local builds and apps cannot be isolated');
    const accepted = await runApi({ LOCAL_BUILD_ISOLATION: 'none', LOCAL_SINGLE_TENANT: 'false' });
    expect(accepted.listening).toBe(true);
  });
});
