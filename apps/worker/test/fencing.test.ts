import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeploymentRecord } from '@zepid/core';
import { DeployError, jobFor, systemClock, updateDeployment } from '@zepid/core';
import { deployStep } from '../src/steps/deploy.ts';
import { steps } from '../src/steps/index.ts';
import { Workflow } from '../src/workflow.ts';
import type { WorkerHarness } from './harness.ts';
import { createWorkerHarness, eventually } from './harness.ts';

/** A workflow on the harness's adapters whose worker log (pino, warn and up) the test can read. */
function workflowWithLog(h: WorkerHarness): { workflow: Workflow; lines: () => string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const workflow = new Workflow({ adapters: h.adapters, steps, settings: { deploymentTimeoutMs: 60_000 }, logger: pino({ level: 'warn' }, stream), clock: systemClock, cancelPollMs: 20 });
  return { workflow, lines: () => lines };
}

const delivery = (signal: AbortSignal, deliveryCount = 1) => ({ deliveryCount, maxDeliveryCount: 5, signal });

describe('fencing: a run that lost its deployment makes no further side effect', () => {
  let h: WorkerHarness;
  afterEach(async () => {
    await h.close();
  });

  it('another delivery takes the deployment over during the build: the old run deletes nothing, writes nothing, and logs what it skipped', async () => {
    h = await createWorkerHarness();
    h.builder.behaviour.build = 'hang';
    const { workflow, lines } = workflowWithLog(h);
    const record = await h.submit();
    const run = workflow.run(jobFor(record, null), delivery(new AbortController().signal));
    await eventually(() => h.get(record), (current) => current.steps.build.status === 'in_progress');
    // What a second delivery's first write does (lease 1 → 2), e.g. after this worker stalled past its lock.
    const taken = await updateDeployment(h.adapters.store, { orgId: record.orgId, deploymentId: record.id }, () => [{ type: 'attempt_started' }]);
    expect(taken.lease).toBe(2);
    expect(await run).toEqual({ action: 'none' });
    // Nothing undone: the sandbox and the build belong to the new owner now.
    expect(h.builder.calls.filter((call) => call.startsWith('delete'))).toEqual([]);
    const after = await h.get(record);
    expect(after.etag).toBe(taken.etag);
    expect(after.steps.build.status).toBe('in_progress');
    // The fence the builder holds answers false from now on, and says what was skipped.
    expect(await h.builder.lastJob?.fence('deleting build container group build-x')).toBe(false);
    const log = lines().join('');
    expect(log).toContain('lease lost: another delivery owns this deployment now');
    expect(log).toContain('lease lost: skipped deleting build container group build-x');
  });

  it('a lost job lock stops the run without compensation, even before anyone took the deployment over', async () => {
    h = await createWorkerHarness();
    h.builder.behaviour.build = 'hang';
    const { workflow, lines } = workflowWithLog(h);
    const record = await h.submit();
    const lock = new AbortController();
    const run = workflow.run(jobFor(record, null), delivery(lock.signal));
    await eventually(() => h.get(record), (current) => current.steps.build.status === 'in_progress');
    const before = await h.get(record);
    lock.abort('lost');
    expect(await run).toEqual({ action: 'none' });
    expect(h.builder.calls.filter((call) => call.startsWith('delete'))).toEqual([]);
    expect((await h.get(record)).etag).toBe(before.etag);
    expect(await h.builder.lastJob?.fence('recreating the work dir')).toBe(false);
    expect(lines().join('')).toContain('the job lock was lost');
  });

  it('a takeover during the deploy step: the old run does not move traffic or roll back', async () => {
    h = await createWorkerHarness();
    const { workflow } = workflowWithLog(h);
    const first = await h.submit();
    expect((await workflow.run(jobFor(first, null), delivery(new AbortController().signal))).action).toBe('complete');
    const liveBefore = h.runtime.live.get(first.appName);
    h.runtime.behaviour = { delayMs: 500 };
    const second = await h.submit({ files: { 'index.html': '<h1>v2</h1>' } });
    const run = workflow.run(jobFor(second, null), delivery(new AbortController().signal));
    await eventually(() => Promise.resolve(h.runtime.calls), (calls) => calls.includes(`deploy ${second.id}`));
    await updateDeployment(h.adapters.store, { orgId: second.orgId, deploymentId: second.id }, () => [{ type: 'attempt_started' }]);
    expect(await run).toEqual({ action: 'none' });
    expect(h.runtime.live.get(first.appName)).toBe(liveBefore);
    expect(h.runtime.calls.filter((call) => call.startsWith('rollback'))).toEqual([]);
  });
});

describe("an app's live deployment only moves forward", () => {
  let h: WorkerHarness;
  afterEach(async () => {
    await h.close();
  });

  it("an older deployment's retry that comes after a newer deployment went live ends superseded; the newer revision keeps the traffic", async () => {
    h = await createWorkerHarness();
    h.runtime.behaviour = { fail: new DeployError('DEPENDENCY_UNAVAILABLE', 'Container Apps throttled', { retryable: true }) };
    h.consumer().start();
    const older = await h.submit({ files: { 'index.html': '<h1>older</h1>' } });
    await eventually(() => h.get(older), (current) => current.steps.deploy.status === 'pending' && current.steps.deploy.error !== null);
    // While the older one waits for its back-off, the project's session is free: a newer one runs.
    h.runtime.behaviour = 'ok';
    const newer = await h.submit({ files: { 'index.html': '<h1>newer</h1>' } });
    const newerDone = await eventually(() => h.get(newer), (current) => current.status === 'completed');
    const olderDone = await eventually(() => h.get(older), (current) => !['queued', 'in_progress'].includes(current.status));
    expect(olderDone).toMatchObject({ status: 'superseded', error: { code: 'SUPERSEDED' } });
    expect(olderDone.error?.message).toContain(newer.id);
    expect(h.runtime.live.get(newer.appName)).toBe(newerDone.result.revision);
    // Its retry never reached the runtime, and what it built is gone (it never goes live).
    expect(h.runtime.calls.filter((call) => call === `deploy ${older.id}`)).toHaveLength(1);
    expect(h.builder.images.has(older.id)).toBe(false);
    expect(h.builder.sandboxes.has(older.id)).toBe(false);
  });

  it('a queued deployment whose newer sibling already completed is superseded without building', async () => {
    h = await createWorkerHarness();
    const { workflow } = workflowWithLog(h);
    const older = await h.submit({ files: { 'index.html': '<h1>older</h1>' } });
    const newer = await h.submit({ files: { 'index.html': '<h1>newer</h1>' } });
    expect((await workflow.run(jobFor(newer, null), delivery(new AbortController().signal))).action).toBe('complete');
    expect((await workflow.run(jobFor(older, null), delivery(new AbortController().signal))).action).toBe('complete');
    const done = await h.get(older);
    expect(done).toMatchObject({ status: 'superseded', error: { code: 'SUPERSEDED' } });
    expect(h.builder.calls.filter((call) => call.endsWith(older.id))).toEqual([]);
    expect(h.runtime.calls.filter((call) => call.endsWith(older.id))).toEqual([]);
  });

  it('the deploy step itself refuses to move traffic to a deployment older than the live one', async () => {
    h = await createWorkerHarness();
    const { workflow } = workflowWithLog(h);
    const older = await h.submit({ files: { 'index.html': '<h1>older</h1>' } });
    const newer = await h.submit({ files: { 'index.html': '<h1>newer</h1>' } });
    expect((await workflow.run(jobFor(newer, null), delivery(new AbortController().signal))).action).toBe('complete');
    const stored = await h.get(older);
    // As validate and build would have left it: without the check, the runtime would be asked to deploy it.
    const plan = JSON.stringify({ kind: 'static', install: null, build: null, start: null, port: 8080 });
    const record: DeploymentRecord = {
      ...stored,
      steps: {
        ...stored.steps,
        validate: { ...stored.steps.validate, status: 'completed', output: { kind: 'static', plan } },
        build: { ...stored.steps.build, status: 'completed', output: { image: `img-${older.id}`, digest: null } },
      },
    };
    const invoked = deployStep.invoke({ record, adapters: h.adapters, signal: new AbortController().signal, log: () => undefined, settings: { deploymentTimeoutMs: 60_000 }, fence: () => Promise.resolve(true) });
    await expect(invoked).rejects.toMatchObject({ code: 'SUPERSEDED' });
    expect(h.runtime.calls.filter((call) => call.endsWith(older.id))).toEqual([]);
  });
});
