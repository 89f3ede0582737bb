import { afterEach, describe, expect, it } from 'vitest';
import type { DeploymentRecord } from '@zepid/core';
import { parseLogLines } from '@zepid/core';
import type { WorkerHarness } from './harness.ts';
import { createWorkerHarness, eventually } from './harness.ts';

const terminal = (record: DeploymentRecord) => ['completed', 'failed', 'cancelled', 'superseded'].includes(record.status);

describe('rollback and config deployments (issue 12): no build', () => {
  let h: WorkerHarness;
  afterEach(async () => {
    await h.close();
  });

  const runToEnd = (record: DeploymentRecord) => eventually(() => h.get(record), terminal);
  const deploy = async (options?: Parameters<WorkerHarness['submit']>[0]) => runToEnd(await h.submit(options));
  const logOf = async (record: DeploymentRecord) =>
    parseLogLines(await h.adapters.artifacts.readLog(record.id)).map((line) => `${line.step ?? '-'}: ${line.message}`);
  const builderWork = () => h.builder.calls.filter((call) => call.startsWith('build ') || call.startsWith('createSandbox ') || call.startsWith('deleteImage '));

  it('a rollback of v1 after v2 went live puts v1\'s image back live: sync, sandbox and build skipped, nothing built', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const v1 = await deploy({ files: { 'index.html': 'v1' } });
    const v2 = await deploy({ files: { 'index.html': 'v2' } });
    expect([v1.status, v2.status]).toEqual(['completed', 'completed']);
    const before = builderWork();

    const rollback = await deploy({ kind: { kind: 'rollback', of: v1 } });
    expect(rollback.status).toBe('completed');
    expect(builderWork()).toEqual(before);
    expect(rollback.result.image).toBe(`img-${v1.id}@sha256:abc`);
    expect(h.runtime.live.get(v1.appName)).toBe(rollback.result.revision);
    expect(h.runtime.specs.at(-1)).toMatchObject({ deploymentId: rollback.id, image: `img-${v1.id}`, imageDigest: 'sha256:abc', reactivateRevision: v1.result.revision });
    expect(Object.fromEntries(Object.entries(rollback.steps).map(([step, state]) => [step, state.status]))).toEqual({
      validate: 'completed',
      sync: 'skipped',
      sandbox: 'skipped',
      build: 'skipped',
      deploy: 'completed',
      cleanup: 'completed',
    });
    expect(rollback.progress).toBe(100);
    expect(rollback.steps.build.output).toEqual({ image: `img-${v1.id}`, digest: 'sha256:abc', reusedFrom: v1.id });
    expect(rollback.steps.validate.output).toMatchObject({ reusedFrom: v1.id, reusedImage: `img-${v1.id}`, plan: v1.steps.validate.output.plan });
    // The webhook events of the completing write: deployment.succeeded and app.rolled_back, same data.
    expect((rollback.outbox ?? []).map((event) => event.type)).toEqual(expect.arrayContaining(['deployment.succeeded', 'app.rolled_back']));
    const log = (await logOf(rollback)).join('\n');
    expect(log).toContain(`validate: rollback to ${v1.id}: runs the image built by ${v1.id}`);
    expect(log).toContain('build: rollback deployment: runs the image built by');

    // A rollback of a rollback names the deployment that built the image, not the rollback.
    const again = await deploy({ kind: { kind: 'rollback', of: v2 } });
    const back = await deploy({ kind: { kind: 'rollback', of: rollback } });
    expect([again.status, back.status]).toEqual(['completed', 'completed']);
    expect(back.imageOf).toBe(v1.id);
    expect(back.result.image).toBe(`img-${v1.id}@sha256:abc`);
    expect(builderWork()).toEqual(before);
  });

  it('a config deployment restarts the live image with the new env values: a new revision, never the kept one, nothing built', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const live = await deploy({ env: { GREETING: 'hello' } });
    const before = builderWork();
    const config = await deploy({ kind: { kind: 'config', of: live }, env: { GREETING: 'bonjour' } });
    expect(config.status).toBe('completed');
    expect(builderWork()).toEqual(before);
    expect(config.steps.deploy.output.kept).toBe(false);
    expect(config.result.revision).not.toBe(live.result.revision);
    expect(h.runtime.live.get(live.appName)).toBe(config.result.revision);
    expect(h.runtime.specs.at(-1)).toMatchObject({ deploymentId: config.id, image: `img-${live.id}`, envVariableNames: ['GREETING'], reactivateRevision: null });
    expect((config.outbox ?? []).map((event) => event.type)).toContain('app.env_changed');
    expect(JSON.stringify(config)).not.toContain('bonjour');
    expect((await logOf(config)).join('\n')).not.toContain('bonjour');
  });

  it('a rollback whose image is gone fails clearly in validate, and touches nothing live', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const v1 = await deploy({ files: { 'index.html': 'v1' } });
    const v2 = await deploy({ files: { 'index.html': 'v2' } });
    h.builder.images.delete(v1.id);
    const rollback = await deploy({ kind: { kind: 'rollback', of: v1 } });
    expect(rollback.status).toBe('failed');
    expect(rollback.error).toMatchObject({ code: 'SOURCE_INVALID', step: 'validate' });
    expect(rollback.error?.message).toContain(`The image of ${v1.id} is no longer kept`);
    expect(h.runtime.live.get(v1.appName)).toBe(v2.result.revision);
    expect(h.builder.calls.filter((call) => call.startsWith('build '))).toHaveLength(2);
  });

  it('a rollback whose image retention marked removed fails without asking the builder', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const v1 = await deploy({ files: { 'index.html': 'v1' } });
    await deploy({ files: { 'index.html': 'v2' } });
    const stored = await h.get(v1);
    await h.adapters.store.replace({ ...stored, steps: { ...stored.steps, build: { ...stored.steps.build, output: { ...stored.steps.build.output, imageRemovedAt: '2026-01-01T00:00:00.000Z' } } } });
    const rollback = await deploy({ kind: { kind: 'rollback', of: v1 } });
    expect(rollback.status).toBe('failed');
    expect(rollback.error?.message).toContain('retention removed it at 2026-01-01T00:00:00.000Z');
  });

  it('a failed rollback compensates its revision but never removes the image it reused', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const v1 = await deploy({ files: { 'index.html': 'v1' } });
    const v2 = await deploy({ files: { 'index.html': 'v2' } });
    h.runtime.behaviour = { fail: new (await import('@zepid/core')).DeployError('DEPLOY_UNHEALTHY', 'unhealthy') };
    const rollback = await deploy({ kind: { kind: 'rollback', of: v1 } });
    expect(rollback.status).toBe('failed');
    expect(h.builder.calls).not.toContain(`deleteImage ${v1.id}`);
    expect(h.builder.images.has(v1.id)).toBe(true);
    expect(h.runtime.live.get(v1.appName)).toBe(v2.result.revision);
  });
});
