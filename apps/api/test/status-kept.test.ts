import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { DeploymentEvent } from '@zepid/core';
import { apply } from '@zepid/core';
import { localPaths } from '@zepid/local';
import type { Harness } from './harness.ts';
import { auth, createHarness, staticBody } from './harness.ts';

/**
 * GET /deploy/:id/status keeps the answer of a deployment that ended a while ago and, on the
 * embedded database, sends it again without reading the store while the database's commit mark
 * (`writeMark`) has not moved. What must hold whatever the cache does: a write committed by another
 * process (the worker, another API replica) is in the very next answer, and another org's token
 * never gets the kept answer (404).
 */
const writer = join(import.meta.dirname, 'fixtures', 'write-record.ts');

/** Applies `event` to the deployment from a process of its own (the real store on the same database file). */
function writeFromAnotherProcess(h: Harness, id: string, event: DeploymentEvent): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [writer, localPaths(h.dataDir).database, 'org_456', id, JSON.stringify(event)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`writer exited ${String(code)}: ${stderr}`))));
  });
}

describe('kept status answers', () => {
  const harnesses: Harness[] = [];
  afterEach(async () => {
    for (const h of harnesses.splice(0).reverse()) await h.close();
  });

  async function failedAMinuteAgo(h: Harness): Promise<string> {
    const posted = await h.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: staticBody() });
    expect(posted.statusCode, posted.body).toBe(202);
    const id = posted.json<{ deploymentId: string }>().deploymentId;
    const queued = await h.adapters.store.get({ orgId: 'org_456', deploymentId: id });
    if (queued === null) throw new Error('no record');
    // Ended a minute ago: its log is final, so its answer is kept.
    await h.adapters.store.replace(apply(queued, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'first failure', step: 'build' } }, new Date(Date.now() - 60_000)));
    return id;
  }

  const statusOf = async (h: Harness, id: string, org: Parameters<typeof auth>[0] = 'org_456') => {
    const response = await h.app.inject({ url: `/deploy/${id}/status`, headers: auth(org) });
    return { code: response.statusCode, body: response.body, json: () => response.json<{ status: string; error: string | null; attempt: number }>() };
  };

  it('a write by another process is in the next answer; unchanged, the kept answer is sent without a store read', async () => {
    const h = await createHarness();
    harnesses.push(h);
    const id = await failedAMinuteAgo(h);
    const first = await statusOf(h, id);
    expect(first.code).toBe(200);
    expect(first.json()).toMatchObject({ status: 'failed', error: 'first failure' });

    // Nothing written since: the kept bytes, and the store is not asked (the commit mark did not move).
    const etagOf = vi.spyOn(h.adapters.store, 'etagOf');
    const get = vi.spyOn(h.adapters.store, 'get');
    const again = await statusOf(h, id);
    expect(again.body).toBe(first.body);
    expect(etagOf).not.toHaveBeenCalled();
    expect(get).not.toHaveBeenCalled();
    // Another org's token: the record is looked up by that org, so 404, never the kept answer.
    const foreign = await statusOf(h, id, 'org_other');
    expect(foreign.code).toBe(404);
    expect(foreign.body).not.toContain('first failure');
    expect(get).toHaveBeenCalledTimes(1);
    expect(get.mock.calls[0]?.[0]).toEqual({ orgId: 'org_other', deploymentId: id });

    // Another process retries it: the next poll sees the new attempt at once.
    await writeFromAnotherProcess(h, id, { type: 'retried' });
    const stored = await h.adapters.store.get({ orgId: 'org_456', deploymentId: id });
    expect(stored?.status).toBe('queued');
    etagOf.mockClear();
    const retried = await statusOf(h, id);
    expect(retried.json()).toMatchObject({ status: 'queued', attempt: 2, error: null });
    expect(etagOf).toHaveBeenCalledTimes(1);

    // …and fails it again a minute ago: a new kept answer, for the new version only.
    await writeFromAnotherProcess(h, id, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'second failure', step: 'build' } });
    const refailed = await statusOf(h, id);
    expect(refailed.json()).toMatchObject({ status: 'failed', error: 'second failure', attempt: 2 });
    expect((await statusOf(h, id)).body).toBe(refailed.body);
    expect((await statusOf(h, id, 'org_other')).code).toBe(404);
  });

  it('a write by another replica (its own connection) or a write to another record is seen; a deletion answers 404', async () => {
    const one = await createHarness();
    harnesses.push(one);
    const two = await createHarness({ dataDir: one.dataDir });
    harnesses.push(two);
    const id = await failedAMinuteAgo(one);
    const kept = await statusOf(one, id);
    expect(kept.json()).toMatchObject({ status: 'failed', error: 'first failure' });

    // A write to another record moves the mark: the etag is read again, and the kept answer still holds.
    const other = await two.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: staticBody({ projectId: 'elsewhere' }) });
    expect(other.statusCode).toBe(202);
    const etagOf = vi.spyOn(one.adapters.store, 'etagOf');
    expect((await statusOf(one, id)).body).toBe(kept.body);
    expect(etagOf).toHaveBeenCalledTimes(1);

    // The other replica retries it through the API: replica one answers with the new attempt.
    const retry = await two.app.inject({ method: 'POST', url: `/deploy/${id}/retry`, headers: auth('org_456') });
    expect(retry.statusCode, retry.body).toBe(202);
    expect((await statusOf(one, id)).json()).toMatchObject({ status: 'queued', attempt: 2 });

    // Deleted by the other replica's connection: 404 on the next poll.
    const record = await two.adapters.store.get({ orgId: 'org_456', deploymentId: id });
    if (record === null) throw new Error('no record');
    await two.adapters.store.replace(apply(record, { type: 'failed', error: { code: 'BUILD_FAILED', message: 'third failure', step: 'build' } }, new Date(Date.now() - 60_000)));
    expect((await statusOf(one, id)).json()).toMatchObject({ status: 'failed', error: 'third failure' });
    await two.adapters.store.delete({ orgId: 'org_456', deploymentId: id });
    expect((await statusOf(one, id)).code).toBe(404);
  });
});
