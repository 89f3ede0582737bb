import { afterEach, describe, expect, it } from 'vitest';
import type { DeploymentRecord } from '@zepid/core';
import { apply, DeployError, jobFor, parseLogLines } from '@zepid/core';
import type { WorkerHarness } from './harness.ts';
import { createWorkerHarness, eventually } from './harness.ts';

const terminal = (record: DeploymentRecord) => ['completed', 'failed', 'cancelled'].includes(record.status);

describe('build reuse', () => {
  let h: WorkerHarness;
  afterEach(async () => {
    await h.close();
  });

  const runToEnd = (record: DeploymentRecord) => eventually(() => h.get(record), terminal);
  const deploy = async (options?: Parameters<WorkerHarness['submit']>[0]) => runToEnd(await h.submit(options));
  const logOf = async (record: DeploymentRecord) =>
    parseLogLines(await h.adapters.artifacts.readLog(record.id)).map((line) => `${line.step ?? '-'}: ${line.message}`);
  const builds = () => h.builder.calls.filter((call) => call.startsWith('build ') || call.startsWith('createSandbox '));

  it('deploys the earlier image for the same source and settings: no context, no sandbox, no build', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const first = await deploy({ env: { GREETING: 'hello' } });
    expect(first.status).toBe('completed');
    const second = await deploy({ env: { GREETING: 'hello' } });

    expect(second.status).toBe('completed');
    expect(builds()).toEqual([`createSandbox ${first.id}`, `build ${first.id}`]);
    expect(second.result.image).toBe(`img-${first.id}@sha256:abc`);
    expect(second.steps.validate.output).toMatchObject({ buildKey: first.steps.validate.output.buildKey, reusedFrom: first.id, reusedImage: `img-${first.id}` });
    expect(second.steps.build.output).toEqual({ image: `img-${first.id}`, digest: 'sha256:abc', reusedFrom: first.id });
    expect(await h.adapters.artifacts.getContext(second.id)).toBeNull();
    const log = await logOf(second);
    expect(log).toContain(`validate: reusing the image built by ${first.id} (same source ${second.source.digest} and build settings); not building`);
    expect(log).toContain(`sync: reusing the image built by ${first.id}: no build context needed`);
    expect(log).toContain(`sandbox: reusing the image built by ${first.id}: no sandbox needed`);
    expect(log.some((line) => line.startsWith('build: building'))).toBe(false);

    // A deployment that reused is a candidate too, and names the deployment that built the image.
    const third = await deploy({ env: { GREETING: 'hello' } });
    expect(third.steps.build.output.reusedFrom).toBe(first.id);
    expect(third.result.image).toBe(`img-${first.id}@sha256:abc`);
    expect(builds()).toHaveLength(2);
  });

  it('builds when an env variable has another value, naming the variable but never the value', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    await deploy({ env: { GREETING: 'hello' } });
    const second = await deploy({ env: { GREETING: 'bonjour' } });
    expect(second.status).toBe('completed');
    expect(second.result.image).toBe(`img-${second.id}@sha256:abc`);
    expect(second.steps.validate.output.reusedFrom).toBeNull();
    const log = (await logOf(second)).join('\n');
    expect(log).toContain('env variable GREETING has another value; building');
    expect(log).not.toContain('hello');
    expect(JSON.stringify(second)).not.toContain('hello');
  });

  it('builds when the secret values of the earlier deployment are gone', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const first = await deploy({ env: { GREETING: 'hello' } });
    await h.adapters.secrets.delete(first.id);
    const second = await deploy({ env: { GREETING: 'hello' } });
    expect(second.result.image).toBe(`img-${second.id}@sha256:abc`);
    expect((await logOf(second)).join('\n')).toContain(`the env variable values of ${first.id} are no longer stored; building`);
  });

  it('builds when the build command, the env variable names or the builder changed', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const files = { 'package.json': JSON.stringify({ scripts: { build: 'vite build' } }), 'dist/index.html': '<h1>hi</h1>' };
    const first = await deploy({ files });
    const command = await deploy({ files, spec: { buildCommand: 'npm run build -- --mode staging' } });
    const names = await deploy({ files, env: { EXTRA: 'x' } });
    h.builder.identity = 'fake-builder 2';
    const builder = await deploy({ files });
    for (const record of [command, names, builder]) {
      expect(record.status).toBe('completed');
      expect(record.steps.validate.output.reusedFrom).toBeNull();
      expect(record.result.image).toBe(`img-${record.id}@sha256:abc`);
    }
    const keys = new Set([first, command, names, builder].map((record) => record.steps.validate.output.buildKey));
    expect(keys.size).toBe(4);
    // and the same again now reuses the newest matching build
    const again = await deploy({ files });
    expect(again.steps.validate.output.reusedFrom).toBe(builder.id);
  });

  it('builds when the earlier image is gone, and says why', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const first = await deploy();
    h.builder.images.delete(first.id);
    const second = await deploy();
    expect(second.status).toBe('completed');
    expect(second.result.image).toBe(`img-${second.id}@sha256:abc`);
    expect((await logOf(second)).join('\n')).toContain(`not reusing the image built by ${first.id}: its image img-${first.id}@sha256:abc is gone; building`);
  });

  it('leaves the reused image in place when the deployment that reused it fails and is compensated', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const first = await deploy();
    h.runtime.behaviour = { fail: new DeployError('DEPLOY_UNHEALTHY', 'The app never answered') };
    const second = await deploy();
    expect(second).toMatchObject({ status: 'failed', error: { code: 'DEPLOY_UNHEALTHY' } });
    expect(second.steps.build.status).toBe('pending');
    expect(h.builder.calls.filter((call) => call.startsWith('deleteImage'))).toEqual([]);
    expect([...h.builder.images]).toEqual([first.id]);
    expect(await logOf(second)).toContain(`build: image kept: it was built by ${first.id}`);

    // A retry after that image vanished builds after all: the choice validate made is checked again.
    h.runtime.behaviour = 'ok';
    h.builder.images.delete(first.id);
    const retried = apply(second, { type: 'retried' }, new Date());
    await h.adapters.intake.resubmit(retried, jobFor(retried, null), { maxActivePerOrg: 1000 });
    const done = await eventually(() => h.get(second), (current) => current.attempt === 2 && terminal(current));
    expect(done.status).toBe('completed');
    expect(done.result.image).toBe(`img-${second.id}@sha256:abc`);
    expect(done.steps.build.output.reusedFrom).toBeNull();
    expect(await logOf(second)).toContain(`build: the image built by ${first.id} (img-${first.id} (sha256:abc)) is gone since validate chose it; building after all`);
    expect(h.builder.sandboxes.size).toBe(0);
    expect(await h.adapters.artifacts.getContext(second.id)).toBeNull();
  });
});
