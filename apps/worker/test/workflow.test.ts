import { afterEach, describe, expect, it } from 'vitest';
import type { DeploymentRecord, StepName } from '@zepid/core';
import { apply, DeployError, messageIdFor, parseLogLines, projectKey, STEPS, updateDeployment } from '@zepid/core';
import type { WorkerHarness } from './harness.ts';
import { createWorkerHarness, eventually } from './harness.ts';

const terminal = (record: DeploymentRecord) => ['completed', 'failed', 'cancelled'].includes(record.status);

describe('worker workflow', () => {
  let h: WorkerHarness;
  afterEach(async () => {
    await h.close();
  });

  async function runToEnd(record: DeploymentRecord): Promise<DeploymentRecord> {
    return eventually(() => h.get(record), terminal);
  }

  async function requestCancel(record: DeploymentRecord): Promise<void> {
    await updateDeployment(h.adapters.store, { orgId: record.orgId, deploymentId: record.id }, () => [{ type: 'cancel_requested' }]);
  }

  it('runs the six steps in order and completes with the revision and url', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const record = await h.submit();
    const done = await runToEnd(record);
    expect(done.status).toBe('completed');
    expect(STEPS.map((step) => done.steps[step].status)).toEqual(STEPS.map(() => 'completed'));
    expect(done.result).toMatchObject({ url: `https://${record.appName}.example`, image: `img-${record.id}@sha256:abc` });
    expect(done.progress).toBe(100);
    expect(h.builder.sandboxes.has(record.id)).toBe(false);
    expect(await h.adapters.artifacts.getContext(record.id)).toBeNull();
    // the job is completed right after the record: wait for it
    await eventually(() => h.adapters.queue.counts(), (counts) => counts.active === 0);
    const log = parseLogLines(await h.adapters.artifacts.readLog(record.id)).map((line) => `${line.step ?? '-'}: ${line.message}`);
    expect(log[0]).toBe('-: attempt 1 started');
    expect(log.at(-1)).toContain('deployment completed');
    expect(log.some((line) => line.startsWith('build: building'))).toBe(true);
  });

  it('writes the record 7 times for an uninterrupted deployment: each step start carries the previous step\'s completion', async () => {
    h = await createWorkerHarness();
    const replaced: string[] = [];
    const replace = h.adapters.store.replace.bind(h.adapters.store);
    h.adapters.store.replace = (next) => {
      replaced.push(`${next.status}:${next.currentStep ?? '-'}`);
      return replace(next);
    };
    h.consumer().start();
    const record = await h.submit();
    const done = await runToEnd(record);
    expect(done.status).toBe('completed');
    // attempt + validate start; five "previous done, next started"; cleanup done + completed.
    expect(replaced).toEqual([...STEPS.map((step) => `in_progress:${step}`), `completed:${done.currentStep ?? '-'}`]);
    // The merged writes lose nothing: every step has its own start, finish and output.
    for (const step of STEPS) {
      expect(done.steps[step].startedAt).not.toBeNull();
      expect(done.steps[step].finishedAt).not.toBeNull();
    }
    expect(done.steps.build.output.image).toBe(`img-${record.id}`);
  });

  it('has every step\'s lines in the log when the record turns completed, failed or cancelled', async () => {
    h = await createWorkerHarness();
    // What a client reading the log finds at the moment the record says it ended.
    const atEnd = new Map<string, string[]>();
    const replace = h.adapters.store.replace.bind(h.adapters.store);
    h.adapters.store.replace = async (next) => {
      if (terminal(next)) atEnd.set(next.id, parseLogLines(await h.adapters.artifacts.readLog(next.id)).map((line) => `${line.step ?? '-'}: ${line.message}`));
      return replace(next);
    };
    h.consumer().start();
    const completed = await runToEnd(await h.submit());
    expect(completed.status).toBe('completed');
    expect(atEnd.get(completed.id)?.some((line) => line.startsWith('build: building'))).toBe(true);

    h.builder.behaviour.build = { fail: new DeployError('BUILD_FAILED', 'npm run build exited with code 1') };
    const failed = await runToEnd(await h.submit({ projectId: 'broken' }));
    expect(failed.status).toBe('failed');
    expect(atEnd.get(failed.id)).toContain('build: BUILD_FAILED: npm run build exited with code 1');

    h.builder.behaviour.build = 'hang';
    const running = await h.submit({ projectId: 'slow' });
    await eventually(() => h.get(running), (current) => current.steps.build.status === 'in_progress');
    await requestCancel(running);
    expect((await runToEnd(running)).status).toBe('cancelled');
    expect(atEnd.get(running.id)).toContain('build: cancel requested: removing what this deployment created');
  });

  for (const step of ['sandbox', 'build', 'deploy'] as const) {
    it(`cancels during ${step}, undoing what was created in reverse order`, async () => {
      h = await createWorkerHarness();
      if (step === 'deploy') h.runtime.behaviour = 'hang';
      else h.builder.behaviour[step] = 'hang';
      h.consumer().start();
      const record = await h.submit();
      await eventually(() => h.get(record), (current) => current.steps[step].status === 'in_progress');
      await requestCancel(record);
      const done = await runToEnd(record);
      expect(done.status).toBe('cancelled');
      expect(done.steps[step].status).toBe('cancelled');
      expect(STEPS.slice(STEPS.indexOf(step) + 1).map((later) => done.steps[later].status)).toEqual(
        STEPS.slice(STEPS.indexOf(step) + 1).map(() => 'pending'),
      );
      expect(h.builder.sandboxes.size).toBe(0);
      expect(h.builder.images.size).toBe(0);
      expect(h.runtime.live.size).toBe(0);
      await eventually(() => h.adapters.queue.counts(), (counts) => counts.active === 0);
      const undo = h.builder.calls.filter((call) => call.startsWith('delete'));
      expect(undo).toEqual(step === 'sandbox' ? [`deleteSandbox ${record.id}`] : [`deleteImage ${record.id}`, `deleteSandbox ${record.id}`].slice(step === 'build' ? 1 : 0));
    });
  }

  for (const step of STEPS) {
    it(`cancel while ${step} runs: cancelled, everything created so far removed, the live app untouched`, async () => {
      h = await createWorkerHarness({ stepDelayMs: 300 });
      h.consumer().start();
      const first = await runToEnd(await h.submit());
      const live = [...h.runtime.live.values()];
      // Another source: a new build and a new revision to undo (reuse.test.ts cancels a kept one).
      const record = await h.submit({ files: { 'index.html': '<h1>v2</h1>' } });
      await eventually(() => h.get(record), (current) => current.steps[step].status === 'in_progress');
      await requestCancel(record);
      const done = await runToEnd(record);
      // Even past deploy (during cleanup) a cancel wins: the new revision is rolled back.
      expect(done.status).toBe('cancelled');
      expect(done.steps[step].status).toBe('cancelled');
      expect(h.builder.sandboxes.size).toBe(0);
      expect([...h.builder.images]).toEqual([first.id]);
      expect([...h.runtime.live.values()]).toEqual(live);
      expect(await h.adapters.artifacts.getContext(record.id)).toBeNull();
    });
  }

  it('cancels a queued deployment before any step runs; its job is dropped', async () => {
    h = await createWorkerHarness();
    const record = await h.submit();
    await requestCancel(record);
    h.consumer().start();
    await eventually(() => h.adapters.queue.counts(), (counts) => counts.active === 0);
    expect((await h.get(record)).status).toBe('cancelled');
    expect(h.builder.calls).toEqual([]);
  });

  it('rolls traffic back to the previous revision when cancelled after deploying', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const first = await runToEnd(await h.submit());
    const live = first.result.revision;
    // cancel lands while the second deployment's cleanup… is emulated by a hanging build of a third step
    h.builder.behaviour.build = { delayMs: 50 };
    h.runtime.behaviour = { delayMs: 400 };
    const second = await h.submit({ files: { 'index.html': '<h1>v2</h1>' } });
    await eventually(() => h.get(second), (current) => current.steps.deploy.status === 'in_progress');
    await requestCancel(second);
    expect((await runToEnd(second)).status).toBe('cancelled');
    expect([...h.runtime.live.values()]).toEqual([live]);
  });

  it('fails a hung build with TIMEOUT within the deployment timeout, and cleans up', async () => {
    h = await createWorkerHarness({ deploymentTimeoutMs: 700 });
    h.builder.behaviour.build = 'hang';
    h.consumer().start();
    const record = await h.submit();
    const done = await runToEnd(record);
    expect(done).toMatchObject({ status: 'failed', error: { code: 'TIMEOUT', step: 'build' } });
    expect(done.steps.build.status).toBe('failed');
    expect(Date.parse(done.finishedAt ?? '') - Date.parse(done.attemptStartedAt ?? '')).toBeLessThan(700 + 5000);
    expect(h.builder.sandboxes.size).toBe(0);
  });

  it('fails a revision that never gets healthy with TIMEOUT and rolls back', async () => {
    h = await createWorkerHarness({ deploymentTimeoutMs: 700 });
    h.runtime.behaviour = 'hang';
    h.consumer().start();
    const done = await runToEnd(await h.submit());
    expect(done).toMatchObject({ status: 'failed', error: { code: 'TIMEOUT', step: 'deploy' } });
    expect(h.builder.images.size).toBe(0);
  });

  it('gives the runtime the attempt and a deadline inside the attempt\'s timeout, so waits end before the step is stopped', async () => {
    h = await createWorkerHarness({ deploymentTimeoutMs: 60_000 });
    h.consumer().start();
    const done = await runToEnd(await h.submit());
    expect(done.status).toBe('completed');
    const spec = h.runtime.specs.at(-1);
    expect(spec?.attempt).toBe(1);
    // The attempt's timeout less a reserve (a tenth, at most 15 s) to record the output.
    expect(spec?.deadline).toBe(Date.parse(done.attemptStartedAt ?? '') + 60_000 - 6_000);
  });

  it('fails at once on a permanent error, with its code, and undoes the earlier steps', async () => {
    h = await createWorkerHarness();
    h.builder.behaviour.build = { fail: new DeployError('BUILD_FAILED', 'npm run build exited with code 1') };
    h.consumer().start();
    const record = await h.submit();
    const done = await runToEnd(record);
    expect(done).toMatchObject({ status: 'failed', currentStep: 'build', error: { code: 'BUILD_FAILED', step: 'build', message: 'npm run build exited with code 1' } });
    expect(done.steps.sandbox.status).toBe('pending');
    expect(done.steps.validate.status).toBe('completed');
    expect(await h.adapters.artifacts.getContext(record.id)).toBeNull();
    expect(h.builder.calls.filter((call) => call.startsWith('build'))).toHaveLength(1);
    expect(h.runtime.calls).toEqual([]);
  });

  it('retries a transient error after a back-off, then completes', async () => {
    h = await createWorkerHarness();
    h.builder.behaviour.build = { fail: new DeployError('DEPENDENCY_UNAVAILABLE', 'registry throttled', { retryable: true }) };
    h.consumer().start();
    const record = await h.submit();
    const deferred = await eventually(() => h.get(record), (current) => current.steps.build.status === 'pending' && current.steps.build.error !== null);
    expect(deferred.steps.build.error).toContain('registry throttled');
    expect(deferred.status).toBe('in_progress');
    // The record's write comes a moment before the job is abandoned with its delay.
    await eventually(() => h.adapters.queue.counts(), (counts) => counts.scheduled === 1);
    h.builder.behaviour.build = 'ok';
    const done = await runToEnd(record);
    expect(done.status).toBe('completed');
    expect(h.builder.calls.filter((call) => call.startsWith('build'))).toHaveLength(2);
  });

  it('gives up on a transient error after the max delivery count', async () => {
    h = await createWorkerHarness({ maxDeliveryCount: 2 });
    h.builder.behaviour.build = { fail: new DeployError('DEPENDENCY_UNAVAILABLE', 'registry down', { retryable: true }) };
    h.consumer().start();
    const done = await runToEnd(await h.submit());
    expect(done).toMatchObject({ status: 'failed', error: { code: 'RETRIES_EXHAUSTED' } });
    // The job is settled just after the record's last write: wait for it, then check nothing is left.
    const counts = await eventually(() => h.adapters.queue.counts(), (current) => current.active === 0);
    expect(counts).toEqual({ active: 0, scheduled: 0, deadLettered: 0 });
  });

  it('fails a source it cannot run at validate, with SOURCE_INVALID', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const done = await runToEnd(await h.submit({ files: { 'README.md': '# hi' } }));
    expect(done).toMatchObject({ status: 'failed', error: { code: 'SOURCE_INVALID', step: 'validate' } });
    expect(h.builder.calls).toEqual([]);
  });

  it('on shutdown, releases a running deployment; the next worker resumes it at the same step', async () => {
    h = await createWorkerHarness();
    h.builder.behaviour.build = 'hang';
    const first = h.consumer();
    first.start();
    const record = await h.submit();
    await eventually(() => h.get(record), (current) => current.steps.build.status === 'in_progress');
    await first.stop();
    const released = await h.get(record);
    expect(released.status).toBe('in_progress');
    expect(released.steps.build).toMatchObject({ status: 'pending', error: expect.stringContaining('worker stopped') });
    expect(await h.adapters.queue.counts()).toMatchObject({ active: 1 });
    h.builder.behaviour.build = 'ok';
    h.consumer().start();
    const done = await runToEnd(record);
    expect(done.status).toBe('completed');
    // validate and sync did not run again: only the unfinished steps did
    const log = parseLogLines(await h.adapters.artifacts.readLog(record.id)).map((line) => line.message);
    expect(log.filter((line) => line.startsWith('validating'))).toHaveLength(1);
    expect(log).toContain('attempt 1 resumes at build');
  });

  it('resumes a deployment a crashed worker left in progress at its first unfinished step', async () => {
    h = await createWorkerHarness({ lockDurationMs: 300 });
    const record = await h.submit();
    // What a worker killed during the sandbox step leaves behind: a locked job and a record mid-step.
    const crashed = await h.adapters.queue.receive({ waitMs: 1000 });
    expect(crashed).not.toBeNull();
    let current = apply(await h.get(record), { type: 'attempt_started' }, new Date());
    for (const step of ['validate', 'sync'] as StepName[]) {
      current = apply(current, { type: 'step_started', step }, new Date());
      current = apply(current, { type: 'step_completed', step, output: step === 'validate' ? { kind: 'static', plan: JSON.stringify({ kind: 'static', install: null, build: null, start: null, port: 8080 }) } : { contextUri: 'x' } }, new Date());
    }
    current = apply(current, { type: 'step_started', step: 'sandbox' }, new Date());
    await h.adapters.store.replace(current);
    h.consumer().start();
    const done = await runToEnd(record);
    expect(done.status).toBe('completed');
    expect(h.builder.calls.filter((call) => call.startsWith('createSandbox'))).toHaveLength(1);
    expect(h.builder.sandboxes.size).toBe(0);
  });

  it('masks env variable values in everything it logs', async () => {
    h = await createWorkerHarness();
    const secret = 'sk_live_9f8e7d6c5b4a';
    h.builder.output = [`token is ${secret}`, `base64: ${Buffer.from(secret).toString('base64')}`];
    h.consumer().start();
    const record = await h.submit({ env: { STRIPE_KEY: secret } });
    expect((await runToEnd(record)).status).toBe('completed');
    const log = await h.adapters.artifacts.readLog(record.id);
    expect(log).toContain('token is ***');
    expect(log).not.toContain(secret);
    expect(log).not.toContain(Buffer.from(secret).toString('base64'));
  });
});

describe('worker consumer', () => {
  let h: WorkerHarness;
  afterEach(async () => {
    await h.close();
  });

  it('dead-letters malformed messages and jobs of unknown deployments, with a reason', async () => {
    h = await createWorkerHarness();
    await h.adapters.queue.publish({ hello: 'world' } as never, { messageId: 'poison-1', sessionId: 's1' });
    await h.adapters.queue.publish(
      { deploymentId: 'dep_aaaaaaaaaaaaaaaaaaaaaaaaaa', orgId: 'org_w', attempt: 1, traceparent: null },
      { messageId: messageIdFor('dep_aaaaaaaaaaaaaaaaaaaaaaaaaa', 1), sessionId: 's2' },
    );
    h.consumer().start();
    await eventually(() => h.adapters.queue.counts(), (counts) => counts.deadLettered === 2);
    const reasons = (await h.adapters.queue.listDeadLettered(10)).map((job) => job.reason).sort();
    expect(reasons).toEqual(['MALFORMED_MESSAGE', 'UNKNOWN_DEPLOYMENT']);
  });

  it('never runs two deployments of one project at once, and respects the concurrency limit', async () => {
    h = await createWorkerHarness();
    h.builder.behaviour.build = { delayMs: 150 };
    const perProject = new Map<string, number>();
    let overlap = false;
    const original = h.builder.build.bind(h.builder);
    h.builder.build = async (job) => {
      const running = (perProject.get(job.projectId) ?? 0) + 1;
      perProject.set(job.projectId, running);
      if (running > 1) overlap = true;
      try {
        return await original(job);
      } finally {
        perProject.set(job.projectId, (perProject.get(job.projectId) ?? 1) - 1);
      }
    };
    h.consumer(2).start();
    const records: DeploymentRecord[] = [];
    // A project's jobs back to back: a queue that let a second one through would run them together.
    // Each source differs, so every deployment builds (an identical one would reuse the first build).
    for (const projectId of ['a', 'b', 'c']) {
      for (let i = 0; i < 3; i += 1) records.push(await h.submit({ projectId, files: { 'index.html': `<h1>${projectId} ${i}</h1>` } }));
    }
    const done = await Promise.all(records.map((record) => eventually(() => h.get(record), terminal, 30_000)));
    expect(done.map((record) => record.status)).toEqual(records.map(() => 'completed'));
    expect(overlap).toBe(false);
    expect(h.builder.maxActive).toBeLessThanOrEqual(2);
    expect(h.builder.maxActive).toBe(2);
    // within a project, deployments ran in the order they were queued
    const order = h.builder.calls.filter((call) => call.startsWith('build')).map((call) => call.slice(6));
    for (const projectId of ['a', 'b', 'c']) {
      const mine = records.filter((record) => record.projectId === projectId).map((record) => record.id);
      expect(order.filter((id) => mine.includes(id))).toEqual(mine);
    }
    expect(projectKey('org_w', 'a')).not.toBe(projectKey('org_w', 'b'));
  });
});
