import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FsArtifactStore, SqliteDatabase } from '../src/index.ts';

describe('local build contexts', () => {
  let dir = '';
  let artifacts: FsArtifactStore;
  afterEach(async () => {
    await artifacts.close();
    await rm(dir, { recursive: true, force: true });
  });
  const id = 'dep_aaaaaaaaaaaaaaaaaaaaaaaaaa';

  it('are plain tar files read back from this disk, and a gzipped one written before the change is still found and removed', async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-contexts-'));
    artifacts = new FsArtifactStore(dir, new SqliteDatabase(join(dir, 'test.db')));
    await artifacts.start();
    expect(artifacts.contextFormat).toBe('tar');
    const { uri } = await artifacts.putContext(id, Buffer.from('tar bytes'));
    expect(uri).toBe(join(dir, 'contexts', `${id}.tar`));
    await artifacts.deleteContext(id);
    expect(await artifacts.getContext(id)).toBeNull();

    // A deployment in flight across the upgrade: its context was written as <id>.tar.gz.
    const legacy = join(dir, 'contexts', `${id}.tar.gz`);
    await writeFile(legacy, 'gzipped bytes');
    expect((await artifacts.getContext(id))?.toString()).toBe('gzipped bytes');
    await artifacts.deleteContext(id);
    expect(existsSync(legacy)).toBe(false);
    await writeFile(legacy, 'gzipped bytes');
    expect(await artifacts.deleteAll({ orgId: 'org_a', deploymentId: id })).toBe(1);
    expect(existsSync(legacy)).toBe(false);
  });
});
