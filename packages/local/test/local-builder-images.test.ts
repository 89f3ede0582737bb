import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '@zepid/core';
import { FileSecretStore, FsArtifactStore, LocalBuilder, ProcessRegistry, resolveIsolation, SqliteDatabase } from '../src/index.ts';

describe('LocalBuilder, for build reuse', () => {
  let dir: string;
  let builder: LocalBuilder;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-builder-'));
    builder = new LocalBuilder({
      workDir: join(dir, 'work'),
      imagesDir: join(dir, 'images'),
      npmCache: join(dir, 'npm-cache'),
      artifacts: new FsArtifactStore(join(dir, 'artifacts'), new SqliteDatabase(join(dir, 'zepid.db'))),
      secrets: new FileSecretStore(join(dir, 'secrets')),
      registry: new ProcessRegistry(join(dir, 'processes.json')),
      logger: silentLogger,
      buildTimeoutMs: 10_000,
      isolation: resolveIsolation('none', { ids: null, limits: { memoryMb: 4096, processes: 512, openFiles: 4096 } }),
      toolchainDir: join(dir, 'toolchain'),
      toolsDir: join(dir, 'tools'),
      passthrough: {},
    });
    await builder.start();
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('names its version and Node in its identity', () => {
    expect(builder.identity).toBe(`local-builder/2 node/${process.version}`);
  });

  it('finds an image directory it built, and nothing outside its images dir', async () => {
    const image = builder.imageDir('dep_aaaaaaaaaaaaaaaaaaaaaaaaaa');
    expect(await builder.imageExists({ image, digest: null })).toBe(false);
    await mkdir(image, { recursive: true });
    expect(await builder.imageExists({ image, digest: null })).toBe(true);
    await mkdir(join(dir, 'elsewhere'));
    expect(await builder.imageExists({ image: join(dir, 'elsewhere'), digest: null })).toBe(false);
    expect(await builder.imageExists({ image: join(dir, 'images'), digest: null })).toBe(false);
    await builder.deleteImage('dep_aaaaaaaaaaaaaaaaaaaaaaaaaa');
    expect(await builder.imageExists({ image, digest: null })).toBe(false);
  });
});
