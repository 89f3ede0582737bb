import { createHash } from 'node:crypto';
import { readdir, readFile, rm } from 'node:fs/promises';
import { basename, join, relative } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Service } from './support.ts';
import { getApp, processAlive, startLocalService, waitFor } from './support.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

interface Status {
  status: string;
  url: string | null;
  image: string | null;
  revision: string | null;
  kind?: string;
  steps: Record<string, { status: string }>;
}

/** Revision processes the worker started, from its process registry. */
async function revisionProcesses(dataDir: string): Promise<{ pid: number; deploymentId: string }[]> {
  const groups = JSON.parse(await readFile(join(dataDir, 'processes.json'), 'utf8').catch(() => '[]')) as { pid: number; deploymentId: string; purpose: string }[];
  return groups.filter((group) => group.purpose === 'revision').map(({ pid, deploymentId }) => ({ pid, deploymentId }));
}

/** The tenant_ids keys (kind, org, name) of the app's uid and its project's gid, read from the service's database. */
function tenantKeysIn(dataDir: string, projectId: string, appName: string): string[][] {
  const db = new DatabaseSync(join(dataDir, 'zepid.db'), { readOnly: true });
  try {
    const keys = (db.prepare('SELECT key FROM tenant_ids').all() as { key: string }[]).map((row) => row.key.split('\u0000'));
    return keys.filter(([kind, , name]) => (kind === 'project' && name === projectId) || (kind === 'app' && name === appName));
  } finally {
    db.close();
  }
}

/** Every path under `dir`, relative to it. */
async function walk(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.map((entry) => relative(dir, join(entry.parentPath, entry.name)));
}

/**
 * Issue 12 with the real processes on the embedded defaults (SQLite, local builds, local apps, uid
 * isolation when run as root): deploy v1 and v2 of the node-server example, roll back to v1 (no
 * build; measured: from the 202 to v1 answering at the URL), change an env value through the REST
 * form and the seed 004 form (no build; the old process is gone), then delete the project (the URL
 * stops answering, nothing of the app is left in the data dir, its deployments answer 404).
 */
describe('end to end: rollback, env changes and deletion on the embedded defaults', () => {
  let dataDir: string;
  let service: Service;
  let api: string;
  let token: string;

  const request = (path: string, init: RequestInit = {}) =>
    fetch(`${api}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, ...(init.body === undefined ? {} : { 'content-type': 'application/json' }) } });
  const tenantKeys = (projectId: string, appName: string) => tenantKeysIn(dataDir, projectId, appName);
  const statusOf = async (id: string) => (await (await request(`/deploy/${id}/status`)).json()) as Status;
  const settle = async (id: string): Promise<{ status: Status; log: string }> => {
    let status: Status | null = null;
    await waitFor(`deployment ${id} to finish`, async () => {
      status = await statusOf(id);
      return ['completed', 'failed', 'cancelled', 'superseded'].includes(status.status);
    }, 90_000);
    const log = await (await request(`/deploy/${id}/logs`, { headers: { accept: 'text/plain' } })).text();
    return { status: status as unknown as Status, log };
  };
  const accepted = async (response: Response): Promise<Record<string, unknown>> => {
    const body = (await response.json()) as Record<string, unknown>;
    expect(response.status, JSON.stringify(body)).toBe(202);
    return body;
  };
  /** Milliseconds from now until `url` answers with a body containing `text` (polled every 10 ms). */
  const timeUntilServes = async (url: string, text: string, timeoutMs = 30_000): Promise<number> => {
    const started = performance.now();
    await waitFor(`${url} to serve ${text}`, async () => (await getApp(url).catch(() => ({ status: 0, body: '' }))).body.includes(text), timeoutMs);
    return performance.now() - started;
  };

  beforeAll(async () => {
    // The delete job waits OBJECT_UPLOAD_WINDOW_MS before deleting the app's source objects: short here.
    ({ service, api, token, dataDir } = await startLocalService({ dataDirPrefix: 'zepid-e2e-appops-', env: { OBJECT_UPLOAD_WINDOW_MS: '500' } }));
  }, 120_000);

  afterAll(async () => {
    await service.stop();
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
  });

  it('rolls back to v1 without building, restarts with new env values without building, and deletes everything', async () => {
    const sample = JSON.parse(await readFile(join(root, 'examples', 'node-server.json'), 'utf8')) as { projectId: string; files: { path: string; content: string }[] };
    const projectId = 'appops-e2e';
    const version = (tag: string) => ({
      ...sample,
      projectId,
      envVariables: { GREETING: 'Hello' },
      files: sample.files.map((file) => (file.path === 'server.js' ? { ...file, content: file.content.replace('from a Node app', `from version ${tag}`) } : file)),
    });

    const v1 = (await accepted(await request('/deploy', { method: 'POST', body: JSON.stringify(version('v1')) }))).deploymentId as string;
    const one = await settle(v1);
    expect(one.status.status, one.log).toBe('completed');
    const url = one.status.url ?? '';
    expect((await getApp(url)).body).toContain('Hello from version v1');
    const v2 = (await accepted(await request('/deploy', { method: 'POST', body: JSON.stringify(version('v2')) }))).deploymentId as string;
    const two = await settle(v2);
    expect(two.status.status, two.log).toBe('completed');
    expect((await getApp(url)).body).toContain('Hello from version v2');
    const images = await readdir(join(dataDir, 'images'));
    expect(images.sort()).toEqual([v1, v2].sort());

    // Rollback to v1: no build, v1 answers at the same URL shortly after the 202.
    const rollbackAnswer = await accepted(await request(`/deploy/${v1}/rollback`, { method: 'POST', body: '{}' }));
    const answeredAt = Date.now();
    const rollbackMs = await timeUntilServes(url, 'Hello from version v1');
    const rollback = await settle(rollbackAnswer.deploymentId as string);
    expect(rollback.status.status, rollback.log).toBe('completed');
    expect(rollbackAnswer).toMatchObject({ kind: 'rollback', rollbackOf: v1 });
    expect([rollback.status.steps.sync?.status, rollback.status.steps.sandbox?.status, rollback.status.steps.build?.status]).toEqual(['skipped', 'skipped', 'skipped']);
    expect(rollback.log).not.toMatch(/\$ npm|build context: \d+ files|sandbox ready/);
    expect(rollback.status.image).toBe(one.status.image);
    expect(await readdir(join(dataDir, 'images'))).toEqual(images);
    // Reported figure (the issue asks for it); bounded generously, not a benchmark.
    // Where the time goes: the worker's part (202 → the app's start command spawned) and the app's own start.
    const lines = (JSON.parse(rollback.log) as { logs: { timestamp: string; step: string | null; message: string }[] }).logs;
    const at = (match: (line: { step: string | null; message: string }) => boolean) => Date.parse(lines.find(match)?.timestamp ?? '');
    const launching = at((line) => line.step === 'deploy');
    const answering = at((line) => line.message.includes('switching traffic'));
    console.log(
      `rollback: v1 served ${Math.round(rollbackMs)} ms after the 202 (202 → deploy step: ${launching - answeredAt} ms; the app's start command until it answered: ${answering - launching} ms)`,
    );
    expect(rollbackMs).toBeLessThan(30_000);

    // Env change (REST form): the app prints the new value; no build; the old process is gone.
    const before = await revisionProcesses(dataDir);
    expect(before).toHaveLength(1);
    const change = await accepted(await request(`/projects/${projectId}/env/GREETING`, { method: 'PUT', body: JSON.stringify({ value: 'Bonjour' }) }));
    expect(change).toMatchObject({ kind: 'config' });
    const config = await settle(change.deploymentId as string);
    expect(config.status.status, config.log).toBe('completed');
    expect(config.status.steps.build?.status).toBe('skipped');
    expect((await getApp(url)).body).toContain('Bonjour from version v1');
    expect(config.log).not.toContain('Bonjour');
    await waitFor('the old revision process to exit', () => before.every(({ pid }) => !processAlive(pid)), 10_000);
    expect((await revisionProcesses(dataDir)).map((group) => group.deploymentId)).toEqual([change.deploymentId]);
    expect(await readdir(join(dataDir, 'images'))).toEqual(images);

    // The same through seed 004's form (uuid = appName).
    const appName = new URL(url).hostname.replace(/\.localhost$/, '');
    const seedChange = await accepted(await request('/env', { method: 'POST', body: JSON.stringify({ uuid: appName, key: 'GREETING', value: 'Hola' }) }));
    const seeded = await settle(seedChange.deploymentId as string);
    expect(seeded.status.status, seeded.log).toBe('completed');
    expect(seeded.status.steps.build?.status).toBe('skipped');
    expect((await getApp(url)).body).toContain('Hola from version v1');
    expect((await revisionProcesses(dataDir)).map((group) => group.deploymentId)).toEqual([seedChange.deploymentId]);
    expect(await readdir(join(dataDir, 'images'))).toEqual(images);

    // Delete: the URL stops answering, nothing of the app is left, its deployments answer 404.
    const digests = [...new Set(['v1', 'v2'].flatMap((tag) => version(tag).files.map((file) => createHash('sha256').update(file.content).digest('hex'))))];
    const storedObjects = async () => (await walk(join(dataDir, 'artifacts', 'objects'))).map((path) => basename(path));
    expect((await storedObjects()).filter((name) => digests.includes(name)).sort()).toEqual([...digests].sort());
    // Run as root (uid isolation), the app holds a uid and its project a gid (tenant_ids in the embedded database).
    const isolated = process.getuid?.() === 0;
    if (isolated) expect(tenantKeys(projectId, appName).map(([kind]) => kind).sort()).toEqual(['app', 'project']);
    const ids = [v1, v2, rollbackAnswer.deploymentId as string, change.deploymentId as string, seedChange.deploymentId as string];
    const deleted = await accepted(await request(`/projects/${projectId}`, { method: 'DELETE' }));
    expect(deleted).toMatchObject({ projectId, apps: [appName], status: 'deleting' });
    await waitFor('the app to stop answering', async () => (await getApp(url).catch(() => ({ status: 0, body: '' }))).status === 404, 30_000);
    await waitFor('its deployments to answer 404', async () => {
      const answers = await Promise.all(ids.map(async (id) => (await request(`/deploy/${id}/status`)).status));
      return answers.every((status) => status === 404);
    }, 30_000);
    await waitFor('GET /apps to list it no more', async () => {
      const listed = (await (await request('/apps')).json()) as { apps: { appName: string }[] };
      return !listed.apps.some((app) => app.appName === appName);
    }, 30_000);
    // A second DELETE is harmless.
    expect([202, 404]).toContain((await request(`/projects/${projectId}`, { method: 'DELETE' })).status);
    expect(await revisionProcesses(dataDir)).toEqual([]);
    const left = (await walk(dataDir)).filter((path) => ids.some((id) => path.includes(id)) || path.includes(appName));
    expect(left).toEqual([]);
    // Nor any source object only it used (content-addressed files under artifacts/objects/<org key>/), at once, not after the sweep's grace.
    expect((await storedObjects()).filter((name) => digests.some((digest) => name.startsWith(digest)))).toEqual([]);
    expect(await readFile(join(dataDir, 'runtime.json'), 'utf8')).not.toContain(appName);
    expect(await readdir(join(dataDir, 'images'))).toEqual([]);
    expect(await readdir(join(dataDir, 'revisions'))).toEqual([]);
    // Run as root, each app has its own uid and npm cache (cache/npm/<uid>): freed with the app, and
    // the project's gid with its last app.
    if (isolated) {
      expect(await readdir(join(dataDir, 'cache', 'npm'))).toEqual([]);
      expect(tenantKeys(projectId, appName)).toEqual([]);
    }
  }, 300_000);
});
