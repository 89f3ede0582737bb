import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Service } from './support.ts';
import { getApp, startLocalService, waitFor } from './support.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

interface Status {
  status: string;
  url: string | null;
  image: string | null;
  revision: string | null;
  reuse: { buildFrom: string | null; revisionKept: boolean };
}

/** The app processes the worker started, by deployment, from its process registry. */
async function revisionProcesses(dataDir: string): Promise<{ pid: number; deploymentId: string }[]> {
  const groups = JSON.parse(await readFile(join(dataDir, 'processes.json'), 'utf8')) as { pid: number; deploymentId: string; purpose: string }[];
  return groups.filter((group) => group.purpose === 'revision').map(({ pid, deploymentId }) => ({ pid, deploymentId }));
}

/**
 * Build reuse with the real processes: the static sample deployed twice reuses the first build and
 * keeps the first revision (same process, nothing restarted), and a changed file builds again.
 */
describe('end to end: build reuse on the embedded defaults', () => {
  let dataDir: string;
  let service: Service;
  let api: string;
  let token: string;

  const request = (path: string, init: RequestInit = {}) =>
    fetch(`${api}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, ...(init.body === undefined ? {} : { 'content-type': 'application/json' }) } });
  const deployAndSettle = async (body: unknown): Promise<{ id: string; status: Status; log: string }> => {
    const created = await request('/deploy', { method: 'POST', body: JSON.stringify(body) });
    expect(created.status).toBe(202);
    const { deploymentId: id } = (await created.json()) as { deploymentId: string };
    let status: Status | null = null;
    await waitFor(`deployment ${id} to finish`, async () => {
      status = (await (await request(`/deploy/${id}/status`)).json()) as Status;
      return ['completed', 'failed', 'cancelled'].includes(status.status);
    }, 60_000);
    const log = await (await request(`/deploy/${id}/logs`, { headers: { accept: 'text/plain' } })).text();
    return { id, status: status as unknown as Status, log };
  };

  beforeAll(async () => {
    ({ service, api, token, dataDir } = await startLocalService({ dataDirPrefix: 'zepid-e2e-reuse-' }));
  }, 60_000);

  afterAll(async () => {
    await service.stop();
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
  });

  it('reuses the first build and keeps its revision for the same static sample, and builds again for a changed file', async () => {
    const sample = JSON.parse(await readFile(join(root, 'examples', 'static-site.json'), 'utf8')) as { files: { path: string; content: string }[] };
    const first = await deployAndSettle(sample);
    expect(first.status.status, first.log).toBe('completed');
    expect(first.log).not.toContain('reusing the image');
    expect(first.status.reuse).toEqual({ buildFrom: null, revisionKept: false });
    // A static site is no process: the router serves its files itself.
    const firstProcesses = await revisionProcesses(dataDir);
    expect(firstProcesses).toEqual([]);

    const second = await deployAndSettle(sample);
    expect(second.status.status, second.log).toBe('completed');
    expect(second.log).toContain(`reusing the image built by ${first.id} (same source sha256:`);
    expect(second.log).not.toMatch(/sandbox ready|build context: \d+ files/);
    expect(second.status.reuse).toEqual({ buildFrom: first.id, revisionKept: true });
    expect(second.status.image).toBe(first.status.image);
    expect(second.status.url).toBe(first.status.url);
    // Nothing restarted: the first revision, the same process, still serves.
    expect(second.status.revision).toBe(first.status.revision);
    expect(second.log).toContain(`revision ${first.status.revision ?? ''} already serves this image with the same settings and env values: traffic stays on it; nothing restarted`);
    expect(await revisionProcesses(dataDir)).toEqual(firstProcesses);
    expect((await getApp(second.status.url ?? '')).body).toContain('Hello from Zepid Deploy');

    const files = sample.files.map((file) => (file.path === 'index.html' ? { ...file, content: file.content.replace('Hello from Zepid Deploy', 'Changed') } : file));
    const third = await deployAndSettle({ ...sample, files });
    expect(third.status.status, third.log).toBe('completed');
    expect(third.log).not.toContain('reusing the image');
    expect(third.status.reuse).toEqual({ buildFrom: null, revisionKept: false });
    expect(third.status.image).not.toBe(first.status.image);
    expect((await getApp(third.status.url ?? '')).body).toContain('Changed');
    expect(third.status.revision).not.toBe(first.status.revision);
    // The first build's image stays: the previous revision (the first one, kept) runs from it, for rollback.
    expect(await readFile(join(first.status.image ?? '', 'index.html'), 'utf8')).toContain('Hello from Zepid Deploy');
  }, 120_000);
});
