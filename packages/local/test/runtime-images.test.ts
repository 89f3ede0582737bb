import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BuildPlan } from '@zepid/core';
import { newDeploymentId, silentLogger } from '@zepid/core';
import { FileSecretStore, LocalRouter, LocalRuntime, ProcessRegistry, resolveIsolation } from '../src/index.ts';

const STATIC_PLAN: BuildPlan = { kind: 'static', install: null, build: null, start: null, port: 8080 };

/**
 * Build reuse lets deployments share one image directory, also across an org's environments: the
 * runtime may remove the image of a revision it drops only when no live or previous revision of any
 * app still runs from it.
 */
describe('LocalRuntime image directories', () => {
  let dir: string;
  let runtime: LocalRuntime;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-runtime-'));
    const secrets = new FileSecretStore(join(dir, 'secrets'));
    await secrets.start();
    runtime = new LocalRuntime({
      statePath: join(dir, 'runtime.json'),
      revisionsDir: join(dir, 'revisions'),
      npmCache: join(dir, 'npm-cache'),
      router: new LocalRouter({ host: '127.0.0.1', port: 0 }),
      secrets,
      registry: new ProcessRegistry(join(dir, 'processes.json')),
      logger: silentLogger,
      readyTimeoutMs: 15_000,
      isolation: resolveIsolation('none', { uid: 65534, gid: 65534 }),
    });
    await runtime.start();
  });

  afterEach(async () => {
    await runtime.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function image(name: string): Promise<string> {
    const path = join(dir, 'images', name);
    await mkdir(path, { recursive: true });
    await writeFile(join(path, 'index.html'), `<h1>${name}</h1>`);
    return path;
  }

  async function deploy(appName: string, imagePath: string): Promise<void> {
    await runtime.deploy({
      deploymentId: newDeploymentId(),
      orgId: 'org_r',
      projectId: 'site',
      appName,
      environment: appName.endsWith('production') ? 'production' : 'development',
      image: imagePath,
      imageDigest: null,
      plan: STATIC_PLAN,
      containerSize: null,
      customDomain: null,
      envVariableNames: [],
      signal: AbortSignal.timeout(30_000),
      log: () => undefined,
    });
  }

  it('keeps an image a live or previous revision of any app still runs from, and removes it once none does', async () => {
    const [first, second, third] = [await image('first'), await image('second'), await image('third')];
    await deploy('site-production', second);
    await deploy('site-development', first);
    await deploy('site-development', first); // a reused build: same image, new revision
    await deploy('site-development', second);
    // The first revision was dropped, but the previous one (the reuse) runs from its image.
    expect(existsSync(first)).toBe(true);
    await deploy('site-development', third);
    // Now no revision of any app uses it.
    expect(existsSync(first)).toBe(false);
    await deploy('site-development', third);
    // The dropped development revision ran from an image production still serves.
    expect(existsSync(second)).toBe(true);
    expect(existsSync(third)).toBe(true);
  }, 60_000);
});
