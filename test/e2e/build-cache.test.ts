import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Service } from './support.ts';
import { getApp, startLocalService, waitFor } from './support.ts';
import type { Toolbox } from './templates.ts';
import { filesOf, removeDir, viteReactTs } from './templates.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const TOKENS = { orgA: 'build-cache-token-org-a-0123456789abcdef', orgB: 'build-cache-token-org-b-0123456789abcdef' };

interface Status {
  status: string;
  url: string | null;
  error: string | null;
  errorCode: string | null;
}

/**
 * The dependency cache through the whole service (`npm start`, as root: uid isolation, so the two
 * organizations' builds run as different uids): a real create-vite react-ts app with npm's own
 * lockfile, deployed, then deployed again with one source file changed (restored, install skipped);
 * the same lockfile in another organization and a changed lockfile install as usual.
 */
describe('dependency cache, real Vite app end to end', () => {
  let work: string;
  let service: Service;
  let api: string;
  let box: Toolbox;
  let app: string;
  const timings: Record<string, number> = {};

  const deploy = async (org: keyof typeof TOKENS, name: string, projectId: string, dir: string): Promise<Status & { id: string; logs: string[] }> => {
    const headers = { authorization: `Bearer ${TOKENS[org]}`, 'content-type': 'application/json' };
    const started = performance.now();
    const posted = await fetch(`${api}/deploy`, { method: 'POST', headers, body: JSON.stringify({ projectId, organizationId: org, userId: 'e2e', files: await filesOf(dir) }) });
    const body = (await posted.json()) as { deploymentId: string };
    expect(posted.status, JSON.stringify(body)).toBe(202);
    let last: Status | null = null;
    await waitFor(`${name} to finish`, async () => {
      last = (await (await fetch(`${api}/deploy/${body.deploymentId}/status`, { headers })).json()) as Status;
      return ['completed', 'failed', 'cancelled'].includes(last.status);
    }, 240_000);
    const status = last as unknown as Status;
    if (status.status === 'completed' && status.url !== null) {
      const url = status.url;
      await waitFor(`${name} to answer`, async () => (await getApp(url).catch(() => ({ status: 0 }))).status === 200, 30_000);
    }
    timings[name] = Math.round(performance.now() - started);
    const logs = (await (await fetch(`${api}/deploy/${body.deploymentId}/logs`, { headers })).json()) as { logs: { message: string }[] };
    return { ...status, id: body.deploymentId, logs: logs.logs.map((line) => line.message) };
  };

  const expectCompleted = (status: Status & { logs: string[] }) => {
    expect(status.status, `${status.errorCode ?? ''} ${status.error ?? ''}\n${status.logs.slice(-30).join('\n')}`).toBe('completed');
  };
  const restoredFrom = (logs: string[]) => logs.map((line) => /^dependencies restored from the cache of (\S+) \(key [0-9a-f]{12}: node_modules, moved in\) in [\d.]+ s; install skipped/.exec(line)?.[1]).find((id) => id !== undefined) ?? null;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'zepid-build-cache-'));
    await chmod(work, 0o755);
    const dataDir = join(work, 'data');
    const npmCache = join(root, '.cache', 'npm');
    const path = `${dirname(process.execPath)}:${process.env.PATH ?? ''}`;
    box = { dir: join(work, 'projects'), env: { ...(process.env as Record<string, string>), PATH: path, npm_config_cache: npmCache, npm_config_update_notifier: 'false' } };
    await mkdir(box.dir);
    app = await viteReactTs(box);
    // npm's own lockfile: the cache is keyed by it (without one it is not used).
    execFileSync('npm', ['install', '--package-lock-only', '--no-audit', '--no-fund'], { cwd: app, env: box.env, stdio: ['ignore', 'pipe', 'pipe'], timeout: 180_000 });
    // The builds' npm cache, seeded from the clone's as the frameworks run does (hard links).
    ({ service, api } = await startLocalService({
      dataDir,
      nodeDir: dirname(process.execPath),
      seedNpmCache: npmCache,
      env: {
        DEPLOY_API_TOKENS: `orgA:${TOKENS.orgA},orgB:${TOKENS.orgB}`,
        // Without uid isolation (not root) the two organizations need this; as root they are isolated.
        LOCAL_SINGLE_TENANT: 'false',
      },
      timeoutMs: 60_000,
    }));
  }, 300_000);

  afterAll(async () => {
    await service?.stop();
    console.log(`dependency cache, POST to a URL that answers (ms): ${JSON.stringify(timings)}`);
    await removeDir(work);
  }, 60_000);

  it('restores node_modules for a source change in the same organization, never for another organization or a changed lockfile', async () => {
    const first = await deploy('orgA', 'first', 'site', app);
    expectCompleted(first);
    expect(first.logs).toContain('$ npm ci');
    expect(first.logs.some((line) => /^dependency cache: saved node_modules for later builds of this organization/.test(line)), first.logs.join('\n')).toBe(true);

    // One source file changed.
    const appFile = join(app, 'src', 'App.tsx');
    await writeFile(appFile, (await readFile(appFile, 'utf8')).replace('</h1>', ' (changed)</h1>'));
    const second = await deploy('orgA', 'source-changed', 'site', app);
    expectCompleted(second);
    expect(restoredFrom(second.logs), second.logs.join('\n')).toBe(first.id);
    expect(second.logs).toContain('$ npm ci  (skipped: dependencies restored from the cache)');
    expect(second.logs).not.toContain('$ npm ci');
    const home = await getApp(second.url ?? '');
    const script = /src="(\/assets\/index-[\w-]+\.js)"/.exec(home.body)?.[1] ?? '';
    expect((await getApp(new URL(script, second.url ?? '').href)).body).toContain('(changed)');

    // The same files in organization B, and organization A with a changed lockfile, side by side.
    const changed = join(work, 'projects', 'lock-changed');
    execFileSync('cp', ['-a', app, changed]);
    for (const file of ['package.json', 'package-lock.json']) {
      const path = join(changed, file);
      const text = await readFile(path, 'utf8');
      // The project's own version, in the manifest and twice in the lockfile: npm ci accepts it, the lockfile's bytes differ.
      await writeFile(path, text.replaceAll('"version": "0.0.0"', '"version": "0.0.1"'));
    }
    expect(await readFile(join(changed, 'package-lock.json'), 'utf8')).not.toBe(await readFile(join(app, 'package-lock.json'), 'utf8'));
    const [otherOrg, lockChanged] = await Promise.all([deploy('orgB', 'other-org', 'site', app), deploy('orgA', 'lock-changed', 'site', changed)]);
    for (const status of [otherOrg, lockChanged]) {
      expectCompleted(status);
      expect(restoredFrom(status.logs), status.logs.join('\n')).toBeNull();
      expect(status.logs).toContain('$ npm ci');
    }
    expect(otherOrg.logs.some((line) => /^dependency cache: no entry for key [0-9a-f]{12} in this organization/.test(line))).toBe(true);
  }, 600_000);
});
