import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { appName } from '@zepid/core';
import { parseIdRange, resolveIsolation, SqliteDatabase, TenantIds } from '../src/index.ts';

describe('tenant ids (uid isolation)', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-ids-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('gives each key its own id from the range, the same one after a restart, and reuses a released one', () => {
    const path = join(dir, 'zepid.db');
    const ids = new TenantIds(new SqliteDatabase(path), { first: 5000, last: 5002 });
    const a = ids.idOf('app\0orgA\0web-1a2b3c-production');
    const b = ids.idOf('app\0orgB\0web-4d5e6f-production');
    const project = ids.idOf('project\0orgA\0web');
    expect(new Set([a, b, project]).size).toBe(3);
    expect([a, b, project].every((id) => id >= 5000 && id <= 5002)).toBe(true);
    expect(ids.idOf('app\0orgA\0web-1a2b3c-production')).toBe(a);
    expect(() => ids.idOf('app\0orgC\0api-000000-production')).toThrow(/LOCAL_UID_RANGE \(5000-5002\)/);
    ids.close();

    const again = new TenantIds(new SqliteDatabase(path), { first: 5000, last: 5002 });
    expect(again.idOf('app\0orgB\0web-4d5e6f-production')).toBe(b);
    again.release('app\0orgB\0web-4d5e6f-production');
    expect(again.idOf('app\0orgC\0api-000000-production')).toBe(b);
    again.close();
  });

  it('isolation.release (app deletion) removes the app\'s private dirs and frees its uid, allocating nothing for an unknown app', async () => {
    const ids = new TenantIds(new SqliteDatabase(join(dir, 'zepid.db')), { first: 7000, last: 7009 });
    const isolation = resolveIsolation('uid', { ids, limits: { memoryMb: 4096, processes: 512, openFiles: 4096 } });
    if (isolation.mode !== 'uid') {
      isolation.close();
      return; // not root: uid isolation (and its release) cannot run here
    }
    const ref = { orgId: 'orgA', projectId: 'web', appName: appName('orgA', 'web', 'production') };
    const staging = { ...ref, appName: appName('orgA', 'web', 'staging') };
    const tenant = await isolation.tenant(ref);
    const other = await isolation.tenant(staging);
    expect(other.gid).toBe(tenant.gid);
    const cache = await tenant.privateDir(join(dir, 'npm'));
    await writeFile(join(cache, 'leftover'), 'x');
    await isolation.release(ref, [join(dir, 'npm')]);
    expect(existsSync(cache)).toBe(false);
    expect(ids.existing(`app\0orgA\0${ref.appName}`)).toBeNull();
    // Staging still holds a uid (and may hold files of the group): the project's gid stays.
    expect(ids.existing('project\0orgA\0web')).toBe(tenant.gid);
    await isolation.release({ ...ref, appName: 'never-000000-production' }, [join(dir, 'npm')]);
    expect(ids.existing('app\0orgA\0never-000000-production')).toBeNull();
    expect(ids.existing('project\0orgA\0web')).toBe(tenant.gid);
    // The project's last app: its gid goes with its uid.
    await isolation.release(staging, [join(dir, 'npm')]);
    expect(ids.existing(`app\0orgA\0${staging.appName}`)).toBeNull();
    expect(ids.existing('project\0orgA\0web')).toBeNull();
    // The freed ids are the lowest free ones again.
    expect(ids.idsOf(['app\0orgB\0other-000000-production', 'project\0orgB\0other', 'app\0orgB\0third-000000-production']).sort()).toEqual(
      [tenant.uid, tenant.gid, other.uid].sort(),
    );
    isolation.close();
  });

  it('releaseApp frees an app\'s id, and its project\'s only once no sibling app holds one, whichever connection allocated them', () => {
    const path = join(dir, 'zepid.db');
    // Two connections to one database, as the worker's delete job and a deployment of another environment.
    const deleting = new TenantIds(new SqliteDatabase(path), { first: 100, last: 199 });
    const deploying = new TenantIds(new SqliteDatabase(path), { first: 100, last: 199 });
    const keys = (environment: string) => `app\0org\0web-${environment}`;
    const siblingsOf = (environment: string) => ['development', 'staging', 'production'].filter((other) => other !== environment).map(keys);
    const [devUid, gid] = deploying.idsOf([keys('development'), 'project\0org\0web']);
    expect(deleting.releaseApp(keys('development'), 'project\0org\0web', siblingsOf('development'))).toEqual({ app: devUid, project: gid });
    // A new deploy of another environment after the release: a gid anew (the lowest free id).
    const [prodUid, newGid] = deploying.idsOf([keys('production'), 'project\0org\0web']);
    expect([prodUid, newGid].sort()).toEqual([100, 101]);
    // Its sibling allocated before the release: the gid stays with it.
    expect(deleting.releaseApp(keys('staging'), 'project\0org\0web', siblingsOf('staging'))).toEqual({ app: null, project: null });
    expect(deploying.existing('project\0org\0web')).toBe(newGid);
    expect(deleting.releaseApp(keys('production'), 'project\0org\0web', siblingsOf('production'))).toEqual({ app: prodUid, project: newGid });
    expect(deploying.existing('project\0org\0web')).toBeNull();
    deleting.close();
    deploying.close();
  });

  it('refuses ranges that would hand out root or (uid_t)-1', () => {
    expect(parseIdRange('1000000000-1000099999')).toEqual({ first: 1_000_000_000, last: 1_000_099_999 });
    expect(() => parseIdRange('0-10')).toThrow(/invalid id range/);
    expect(() => parseIdRange('10-4294967295')).toThrow(/invalid id range/);
    expect(() => parseIdRange('20-10')).toThrow(/invalid id range/);
  });
});
