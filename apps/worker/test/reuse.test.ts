import { afterEach, describe, expect, it } from 'vitest';
import type { DeploymentRecord } from '@zepid/core';
import { alwaysHeld, apply, DeployError, jobFor, parseLogLines, updateDeployment } from '@zepid/core';
import { deployStep } from '../src/steps/deploy.ts';
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

  it('a redeploy (POST /deploy/:id/redeploy) builds even when the same source and settings were built before; later deploys reuse its image', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const first = await deploy({ env: { GREETING: 'hello' } });
    const redeploy = await deploy({ env: { GREETING: 'hello' }, redeployOf: first.id });
    expect(redeploy.status).toBe('completed');
    expect(builds()).toEqual([`createSandbox ${first.id}`, `build ${first.id}`, `createSandbox ${redeploy.id}`, `build ${redeploy.id}`]);
    expect(redeploy.steps.validate.output).toMatchObject({ buildKey: first.steps.validate.output.buildKey, reusedFrom: null });
    expect(redeploy.result.image).toBe(`img-${redeploy.id}@sha256:abc`);
    expect((await logOf(redeploy)).join('\n')).toContain(`validate: redeploy of ${first.id}: building its source again`);
    // Its build is the newest with that key: an ordinary deploy of the same source reuses it.
    const after = await deploy({ env: { GREETING: 'hello' } });
    expect(after.steps.build.output.reusedFrom).toBe(redeploy.id);
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
    // The live revision crashed, so the identical redeploy starts a new one, which never gets healthy.
    h.runtime.crashed.add(first.result.revision ?? '');
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

  describe('an identical redeploy keeps the serving revision', () => {
    const deploys = () => h.runtime.calls.filter((call) => call.startsWith('deploy '));
    const kept = (revision: string | null) =>
      `deploy: revision ${revision ?? ''} already serves this image with the same settings and env values: traffic stays on it; nothing restarted`;

    it('starts nothing: the record completes with the live revision and url, and the log says so', async () => {
      h = await createWorkerHarness();
      h.consumer().start();
      const first = await deploy({ env: { GREETING: 'hello' } });
      const second = await deploy({ env: { GREETING: 'hello' } });

      expect(second.status).toBe('completed');
      expect(deploys()).toEqual([`deploy ${first.id}`]);
      expect(second.result).toEqual(first.result);
      expect(second.steps.deploy.output).toEqual({ revision: first.result.revision, url: first.result.url, previousRevision: null, kept: true, dnsRecords: null });
      expect([...h.runtime.live.values()]).toEqual([first.result.revision]);
      const log = await logOf(second);
      expect(log).toContain(kept(first.result.revision));
      expect(log.join('\n')).not.toContain('hello');
      // The first deployment built, so it never asked the runtime.
      expect(h.runtime.calls).toEqual([`deploy ${first.id}`, `isServing ${first.result.revision ?? ''}`]);

      // and again: the kept deployment is now the live one, with the same revision
      const third = await deploy({ env: { GREETING: 'hello' } });
      expect(third.result.revision).toBe(first.result.revision);
      expect(deploys()).toHaveLength(1);
    });

    it('builds and starts a new revision when an env variable has another value', async () => {
      h = await createWorkerHarness();
      h.consumer().start();
      const first = await deploy({ env: { GREETING: 'hello' } });
      const second = await deploy({ env: { GREETING: 'bonjour' } });
      expect(second.status).toBe('completed');
      expect(second.steps.validate.output.reusedFrom).toBeNull();
      expect(deploys()).toEqual([`deploy ${first.id}`, `deploy ${second.id}`]);
      expect(second.result.revision).not.toBe(first.result.revision);
      expect(second.steps.deploy.output).toMatchObject({ kept: false, previousRevision: first.result.revision });
    });

    it('starts a new revision when the live one is not serving (a redeploy restarts a crashed app)', async () => {
      h = await createWorkerHarness();
      h.consumer().start();
      const first = await deploy();
      h.runtime.crashed.add(first.result.revision ?? '');
      const second = await deploy();
      expect(second.status).toBe('completed');
      expect(second.steps.validate.output.reusedFrom).toBe(first.id);
      expect(deploys()).toEqual([`deploy ${first.id}`, `deploy ${second.id}`]);
      expect(second.result.revision).not.toBe(first.result.revision);
      expect([...h.runtime.live.values()]).toEqual([second.result.revision]);
      expect(await logOf(second)).toContain(
        `deploy: cannot keep the live revision ${first.result.revision ?? ''}: it does not serve right now (stopped, unhealthy or without the traffic); starting a new revision`,
      );
    });

    it('starts a new revision when going back to an earlier source: its image is not the one live', async () => {
      h = await createWorkerHarness();
      h.consumer().start();
      const first = await deploy();
      const changed = await deploy({ files: { 'index.html': '<h1>v2</h1>' } });
      const back = await deploy();
      expect(back.steps.validate.output.reusedFrom).toBe(first.id);
      expect(deploys()).toEqual([`deploy ${first.id}`, `deploy ${changed.id}`, `deploy ${back.id}`]);
      expect([...h.runtime.live.values()]).toEqual([back.result.revision]);
      expect(back.result.image).toBe(first.result.image);
      expect(await logOf(back)).toContain(
        `deploy: cannot keep the live revision ${changed.result.revision ?? ''}: it runs another image (${changed.result.image ?? ''}); starting a new revision`,
      );
    });

    it('starts a new revision for the same image when a revision setting changed (container size)', async () => {
      h = await createWorkerHarness();
      h.consumer().start();
      const first = await deploy();
      const second = await deploy({ spec: { containerSize: { cpu: 1, memory: '2Gi' } } });
      expect(second.steps.validate.output.reusedFrom).toBe(first.id);
      expect(deploys()).toEqual([`deploy ${first.id}`, `deploy ${second.id}`]);
      expect(await logOf(second)).toContain(
        `deploy: cannot keep the live revision ${first.result.revision ?? ''}: it was started with another container size; starting a new revision`,
      );
      // No runtime check for a revision that could not be kept anyway.
      expect(h.runtime.calls.filter((call) => call.startsWith('isServing'))).toEqual([]);
    });

    it('compares env values with the live deployment through the secret store, naming the variable only', async () => {
      h = await createWorkerHarness();
      h.consumer().start();
      const first = await deploy({ env: { GREETING: 'hello' } });
      // Build reuse decided on an image the live revision runs, but this deployment's value differs:
      // the deploy step checks on its own rather than trusting validate's candidate to be the live one.
      const other = await h.submit({ env: { GREETING: 'bonjour' } });
      const record: DeploymentRecord = {
        ...other,
        steps: {
          ...other.steps,
          validate: { ...first.steps.validate, output: { ...first.steps.validate.output, reusedFrom: first.id, reusedImage: `img-${first.id}`, reusedDigest: 'sha256:abc' } },
          build: { ...first.steps.build, output: { image: `img-${first.id}`, digest: 'sha256:abc', reusedFrom: first.id } },
        },
      };
      const lines: string[] = [];
      const output = await deployStep.invoke({
        record,
        adapters: h.adapters,
        signal: new AbortController().signal,
        log: (message) => lines.push(message),
        settings: { deploymentTimeoutMs: 60_000 },
        fence: alwaysHeld,
      });
      expect(output).toMatchObject({ kept: false, previousRevision: first.result.revision });
      expect(deploys()).toContain(`deploy ${other.id}`);
      expect(lines).toContain(`cannot keep the live revision ${first.result.revision ?? ''}: env variable GREETING has another value; starting a new revision`);
      expect(lines.join('\n')).not.toMatch(/hello|bonjour/);
    });

    it('leaves the kept revision live when the deployment is cancelled during cleanup', async () => {
      h = await createWorkerHarness({ stepDelayMs: 300 });
      h.consumer().start();
      const first = await deploy();
      const second = await h.submit();
      await eventually(() => h.get(second), (current) => current.steps.cleanup.status === 'in_progress');
      await updateDeployment(h.adapters.store, { orgId: second.orgId, deploymentId: second.id }, () => [{ type: 'cancel_requested' }]);
      const done = await runToEnd(second);
      expect(done.status).toBe('cancelled');
      expect(done.steps.cleanup.status).toBe('cancelled');
      expect(h.runtime.calls.filter((call) => call.startsWith('rollback'))).toEqual([]);
      expect([...h.runtime.live.values()]).toEqual([first.result.revision]);
      expect([...h.builder.images]).toEqual([first.id]);
      expect(await logOf(second)).toContain(`deploy: revision ${first.result.revision ?? ''} stays live: it served before this deployment, which started nothing`);
    });
  });
});
