import { spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Service } from './support.ts';
import { getApp, startLocalService, waitFor } from './support.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
/** Screenshots of each page, kept as CI artifacts (ci.yml uploads the folder). */
const shots = join(root, 'test-artifacts', 'dashboard');

/** Debian's Chromium, as root on a machine without a network: the flags of the machine's notes. */
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];

describe('dashboard in headless Chromium against npm start', () => {
  let dataDir: string;
  let work: string;
  let service: Service;
  let token: string;
  let api: string;
  let browser: Browser;
  let page: Page;
  /** The static site deployed by the CLI in the second test. */
  let staticId = '';
  const consoleErrors: string[] = [];
  const pageErrors: string[] = [];

  const zepid = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [join(root, 'apps', 'cli', 'bin', 'zepid.js'), ...args], {
        env: { PATH: process.env.PATH ?? '', HOME: work, CI: 'true', ZEPID_API_URL: api, ZEPID_TOKEN: token },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'zepid-dashboard-work-'));
    await mkdir(shots, { recursive: true });
    ({ service, api, token, dataDir } = await startLocalService({ dataDirPrefix: 'zepid-e2e-dashboard-', env: { OBJECT_UPLOAD_WINDOW_MS: '1000' } }));
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(message.text());
    });
    page.on('pageerror', (error) => pageErrors.push(error.message));
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await service.stop();
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
    await rm(work, { recursive: true, force: true, maxRetries: 3 });
  });

  it('is served with a policy that allows its own files and same-origin calls only', async () => {
    const response = await fetch(`${api}/dashboard`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const csp = response.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("connect-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('unsafe');
    let bytes = 0;
    for (const file of ['dashboard', 'dashboard/app.js', 'dashboard/style.css']) bytes += (await (await fetch(`${api}/${file}`)).arrayBuffer()).byteLength;
    console.log(`dashboard size: ${bytes} bytes in 3 files, uncompressed`);
  });

  it('signs in with a typed token, then shows a deployment made by the CLI go from queued to completed without reloading', async () => {
    await page.goto(`${api}/dashboard`);
    await page.getByLabel('API token').waitFor();
    await page.screenshot({ path: join(shots, '1-sign-in.png') });
    await page.getByLabel('API token').fill('zpd_wrong');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'refused' }).waitFor();

    await page.getByLabel('API token').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('Organization local').waitFor();

    const site = join(work, 'static-site');
    await cp(join(root, 'examples', 'static-site'), site, { recursive: true });
    const deployed = await zepid(['deploy', site, '--detach']);
    expect(deployed.code, deployed.stderr).toBe(0);
    const id = deployed.stdout.trim();
    staticId = id;

    const row = page.locator(`#deployments tr[data-id="${id}"]`);
    await row.waitFor({ timeout: 15_000 });
    await row.locator('td.status', { hasText: 'completed' }).waitFor({ timeout: 30_000 });
    const appRow = page.locator('#apps tbody tr', { hasText: 'static-site' });
    const url = await appRow.getByRole('link').getAttribute('href');
    expect(url).toMatch(/^http:\/\/static-site-[a-z0-9]{6}-development\.localhost:\d+\/$/);
    expect((await getApp(url ?? '')).body).toContain('Hello from Zepid Deploy');
    await page.screenshot({ path: join(shots, '2-apps-and-deployments.png'), fullPage: true });
  });

  it('lists the apps from GET /apps; after v2 goes live, rolls back to v1 from its page and the URL serves v1 again (issue 12)', async () => {
    expect(staticId).not.toBe('');
    // The service has GET /apps: no note about deriving apps from deployments.
    expect(await page.locator('#apps-note').textContent()).toBe('');
    const appRow = page.locator('#apps tbody tr', { hasText: 'static-site' });
    await appRow.locator('td', { hasText: staticId }).waitFor();
    await appRow.locator('td.status', { hasText: 'live' }).waitFor();
    // v2 of the site goes live; rolling back to v1 (staticId) must put v1's content back at the URL.
    const url = (await appRow.getByRole('link').getAttribute('href')) ?? '';
    const site = join(work, 'static-site');
    const v1 = await readFile(join(site, 'index.html'), 'utf8');
    await writeFile(join(site, 'index.html'), v1.replace('Hello from Zepid Deploy', 'Version two of the site'));
    const v2 = await zepid(['deploy', site]);
    expect(v2.code, v2.stderr).toBe(0);
    expect((await getApp(url)).body).toContain('Version two of the site');
    await appRow.locator('td.status', { hasText: 'live' }).waitFor();

    await page.getByRole('button', { name: new RegExp(`^Open ${staticId}`) }).click();
    const detail = page.locator('#detail');
    await detail.getByRole('heading', { name: new RegExp(staticId) }).waitFor();
    const rollback = detail.getByRole('button', { name: 'Roll back to this' });
    await page.locator('#detail-summary .status', { hasText: 'completed' }).waitFor();
    expect(await rollback.isEnabled()).toBe(true);
    await rollback.click();
    // The new deployment opens: a rollback to the one we were on, which goes live.
    await detail.getByRole('heading', { name: new RegExp(`rollback to ${staticId}`) }).waitFor({ timeout: 15_000 });
    await page.locator('#detail-summary .status', { hasText: 'completed' }).waitFor({ timeout: 60_000 });
    const title = (await detail.getByRole('heading').first().textContent()) ?? '';
    const rollbackId = /dep_[a-z2-7]{26}/.exec(title)?.[0] ?? '';
    expect(rollbackId).not.toBe(staticId);
    const status = (await (await fetch(`${api}/deploy/${rollbackId}/status`, { headers: { authorization: `Bearer ${token}` } })).json()) as Record<string, unknown>;
    expect(status).toMatchObject({ kind: 'rollback', rollbackOf: staticId, status: 'completed', canRollback: true });
    const apps = (await (await fetch(`${api}/apps`, { headers: { authorization: `Bearer ${token}` } })).json()) as { apps: { projectId: string; liveDeploymentId: string }[] };
    expect(apps.apps.find((app) => app.projectId === 'static-site')?.liveDeploymentId).toBe(rollbackId);
    const served = await getApp(url);
    expect(served.body).toContain('Hello from Zepid Deploy');
    expect(served.body).not.toContain('Version two of the site');
    // The deployments table says what each did and who started it: the dev token is named `dev`.
    const rolledRow = page.locator(`#deployments tr[data-id="${rollbackId}"]`);
    expect(await rolledRow.locator('td.kind').textContent()).toBe('rollback');
    expect(await rolledRow.locator('td.creator').textContent()).toBe('dev');
    expect(await page.locator(`#deployments tr[data-id="${staticId}"] td.kind`).textContent()).toBe('build');
    await page.screenshot({ path: join(shots, '3-rollback.png'), fullPage: true });
  });

  it('opens a deployment with its steps and log, and cancels a running one', async () => {
    const slow = join(work, 'slow');
    await mkdir(slow, { recursive: true });
    await writeFile(join(slow, 'package.json'), JSON.stringify({ name: 'dashboard-slow', scripts: { build: 'echo compiling; sleep 30', start: 'node -e 0' } }));
    const deployed = await zepid(['deploy', slow, '--detach']);
    expect(deployed.code, deployed.stderr).toBe(0);
    const id = deployed.stdout.trim();

    await page.getByRole('button', { name: new RegExp(`^Open ${id}`) }).click({ timeout: 15_000 });
    const detail = page.locator('#detail');
    await detail.getByRole('heading', { name: new RegExp(id) }).waitFor();
    await page.locator('#log', { hasText: 'compiling' }).waitFor({ timeout: 30_000 });
    await page.screenshot({ path: join(shots, '4-deployment-log.png'), fullPage: true });

    await detail.getByRole('button', { name: 'Cancel' }).click();
    await page.locator('#detail-summary .status', { hasText: 'cancelled' }).waitFor({ timeout: 30_000 });
    await page.locator(`#deployments tr[data-id="${id}"] td.status`, { hasText: 'cancelled' }).waitFor({ timeout: 15_000 });
    expect(await detail.getByRole('button', { name: 'Retry' }).isEnabled()).toBe(true);
  });

  it('keeps the session on reload, signs in from #token= without keeping it in the address, and fits a phone-sized window', async () => {
    await page.reload();
    await page.getByText('Organization local').waitFor();

    const phone = await browser.newPage({ viewport: { width: 375, height: 740 } });
    await phone.goto(`${api}/dashboard#token=${token}`);
    await phone.getByText('Organization local').waitFor();
    expect(new URL(phone.url()).hash).toBe('');
    await phone.locator('#deployments tbody tr').first().waitFor();
    // Wide tables scroll inside their own box; the page itself never scrolls sideways.
    expect(await phone.evaluate('document.documentElement.scrollWidth')).toBeLessThanOrEqual(375);
    await phone.screenshot({ path: join(shots, '5-phone.png'), fullPage: true });
    await phone.close();
    // Nothing the page did was refused by its own Content-Security-Policy, and no script error. (Failed
    // loads are expected: the wrong token typed on purpose, and endpoints an older service lacks.)
    expect(consoleErrors.filter((text) => /Content Security Policy|Refused/i.test(text))).toEqual([]);
    expect(pageErrors).toEqual([]);
  });

  it('opens an app: sets and removes an env variable (names only; the live app restarts, no build), then deletes the app behind a typed confirmation (issue 12)', async () => {
    await page.getByRole('button', { name: /^Open app static-site-/ }).click();
    const panel = page.locator('#app-detail');
    await panel.getByRole('heading', { name: /static-site/ }).first().waitFor();
    await panel.getByLabel('Name').fill('GREETING');
    await panel.getByLabel('Value').fill('dashboard-secret-value-41c9');
    await panel.getByRole('button', { name: 'Set' }).click();
    await panel.locator('#env tbody tr', { hasText: 'GREETING' }).waitFor({ timeout: 15_000 });
    expect(await panel.locator('#env').textContent()).not.toContain('dashboard-secret-value-41c9');
    // The restart is a config deployment: it opens, and completes without a build.
    await page.locator('#detail-title', { hasText: 'env restart' }).waitFor({ timeout: 15_000 });
    await page.locator('#detail-summary .status', { hasText: 'completed' }).waitFor({ timeout: 60_000 });
    expect(await page.locator('#steps').textContent()).toContain('build: skipped');
    await page.screenshot({ path: join(shots, '6-app-env.png'), fullPage: true });
    await panel.getByRole('button', { name: 'Remove GREETING' }).click();
    await panel.locator('#env tbody tr', { hasText: 'GREETING' }).waitFor({ state: 'detached', timeout: 15_000 });

    const appRow = page.locator('#apps tbody tr', { hasText: 'static-site' });
    const url = (await appRow.getByRole('link').getAttribute('href')) ?? '';
    await panel.getByLabel(/type its project id/).fill('not-this');
    await panel.getByRole('button', { name: 'Delete app' }).click();
    await panel.locator('#app-result', { hasText: 'Type static-site to confirm' }).waitFor();
    await panel.getByLabel(/type its project id/).fill('static-site');
    await panel.getByRole('button', { name: 'Delete app' }).click();
    await panel.locator('#app-result', { hasText: 'is being deleted' }).waitFor({ timeout: 15_000 });
    // Live from GET /events: the app leaves the list once the delete job has removed it, and its URL stops serving.
    await appRow.waitFor({ state: 'detached', timeout: 60_000 });
    await waitFor('the deleted app\'s URL to stop serving it', async () => !(await getApp(url).catch(() => ({ body: '' }))).body.includes('Hello from Zepid Deploy'), 30_000);
    const apps = (await (await fetch(`${api}/apps`, { headers: { authorization: `Bearer ${token}` } })).json()) as { apps: { projectId: string }[] };
    expect(apps.apps.some((app) => app.projectId === 'static-site')).toBe(false);
    expect(consoleErrors.filter((text) => /Content Security Policy|Refused/i.test(text))).toEqual([]);
    expect(pageErrors).toEqual([]);
  }, 180_000);

  it('redeploys a deployment from its page: a new build of its stored source (really built, not the earlier image) goes live, shown with its kind and who started it (issue 14)', async () => {
    const site = join(work, 'redeploy-site');
    await cp(join(root, 'examples', 'static-site'), site, { recursive: true });
    const first = await zepid(['deploy', site]);
    expect(first.code, first.stderr).toBe(0);
    const url = first.stdout.trim();
    const appRow = page.locator('#apps tbody tr', { hasText: 'redeploy-site' });
    await appRow.locator('td.status', { hasText: 'live' }).waitFor({ timeout: 15_000 });
    const firstId = ((await appRow.locator('td').nth(4).textContent()) ?? '').trim();
    expect(firstId).toMatch(/^dep_[a-z2-7]{26}$/);
    const firstRow = page.locator(`#deployments tr[data-id="${firstId}"]`);
    expect(await firstRow.locator('td.kind').textContent()).toBe('build');
    expect(await firstRow.locator('td.creator').textContent()).toBe('dev');

    await page.getByRole('button', { name: new RegExp(`^Open ${firstId}`) }).click();
    const detail = page.locator('#detail');
    await detail.getByRole('heading', { name: new RegExp(firstId) }).waitFor();
    await page.locator('#detail-summary .status', { hasText: 'completed' }).waitFor();
    const redeploy = detail.getByRole('button', { name: 'Redeploy' });
    expect(await redeploy.isEnabled()).toBe(true);
    // Keyboard: the button takes focus and Enter presses it.
    await redeploy.focus();
    await page.keyboard.press('Enter');
    await detail.getByRole('heading', { name: new RegExp(`redeploy of ${firstId}`) }).waitFor({ timeout: 15_000 });
    const title = (await detail.getByRole('heading').first().textContent()) ?? '';
    const redeployId = /dep_[a-z2-7]{26}/.exec(title)?.[0] ?? '';
    expect(redeployId).not.toBe(firstId);
    await page.locator('#detail-summary .status', { hasText: 'completed' }).waitFor({ timeout: 60_000 });
    await page.locator('#log', { hasText: `redeploy of ${firstId}: building its source again` }).waitFor({ timeout: 15_000 });

    // Live without reloading: the new row (kind and who), and the app's live deployment.
    const row = page.locator(`#deployments tr[data-id="${redeployId}"]`);
    await row.locator('td.status', { hasText: 'completed' }).waitFor({ timeout: 15_000 });
    expect(await row.locator('td.kind').textContent()).toBe('build (redeploy)');
    expect(await row.locator('td.creator').textContent()).toBe('dev');
    await appRow.locator('td', { hasText: redeployId }).waitFor({ timeout: 15_000 });
    const status = (await (await fetch(`${api}/deploy/${redeployId}/status`, { headers: { authorization: `Bearer ${token}` } })).json()) as {
      kind: string;
      redeployOf: string;
      status: string;
      url: string;
      reuse: { buildFrom: string | null };
      steps: Record<string, { status: string }>;
      createdBy: { tokenId: string; tokenName: string };
    };
    expect(status).toMatchObject({ kind: 'build', redeployOf: firstId, status: 'completed', url, createdBy: { tokenName: 'dev' } });
    // It built: the build step ran, and no earlier image was taken.
    expect(status.steps.build?.status).toBe('completed');
    expect(status.reuse.buildFrom).toBeNull();
    expect(JSON.stringify(status)).not.toContain(token);
    expect((await getApp(url)).body).toContain('Hello from Zepid Deploy');
    await page.screenshot({ path: join(shots, '7-redeploy.png'), fullPage: true });
    expect(consoleErrors.filter((text) => /Content Security Policy|Refused/i.test(text))).toEqual([]);
    expect(pageErrors).toEqual([]);
  }, 120_000);

  it('GET /docs renders Swagger UI (swagger-ui-dist) with the API\'s own operations from /openapi.json', async () => {
    const docs = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const errors: string[] = [];
    docs.on('pageerror', (error) => errors.push(error.message));
    try {
      await docs.goto(`${api}/docs`);
      expect(new URL(docs.url()).pathname).toBe('/docs/');
      await docs.locator('.opblock-summary-path', { hasText: '/deploy/{id}/events' }).first().waitFor({ timeout: 20_000 });
      expect(await docs.locator('.opblock').count()).toBeGreaterThan(20);
      await expect(docs.locator('.info .title').textContent()).resolves.toContain('API');
      await docs.screenshot({ path: join(shots, '8-api-docs.png') });
      expect(errors).toEqual([]);
    } finally {
      await docs.close();
    }
  }, 60_000);
});
